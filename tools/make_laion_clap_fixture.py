"""Write tests/fixtures/clap/laion_fused.pt: the tiny fused CLAP of tests/fixtures/clap/model/ in
laion_clap's checkpoint layout, to test ClapModel.from_laion_checkpoint.

Runs in a reference environment with transformers (never in CI, never the project's venv):

    /tmp/metrics-ref/bin/python tools/make_laion_clap_fixture.py

transformers' ClapModel loads the Hugging Face folder; its state dict is renamed into the names
laion_clap's `CLAP` module gives the same tensors (src/laion_clap/clap_module/model.py, htsat.py,
feature_fusion.py) and saved as laion_clap's training script saves it: {"state_dict": {"module.<key>":
tensor}} through torch.save. The renaming below is written from the module definitions and
independently of stable_audio_core/models/clap_laion.py, which the test checks against it.
Left out to stay small (the loader drops or recomputes them, and the test adds stand-ins):
the STFT/mel filters, the AudioSet head, the window masks and the relative position indices.
Also written: laion's training-only `text_transform` / `audio_transform` MLPs (random), which
real checkpoints carry and the loader must ignore.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ClapModel

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "tests" / "fixtures" / "clap" / "model"
OUT = ROOT / "tests" / "fixtures" / "clap" / "laion_fused.pt"
SEED = 20240612

# transformers' name inside an HTSAT block -> laion_clap's (SwinTransformerBlock / WindowAttention / Mlp).
BLOCK_NAMES = {
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj", "attention.self.relative_position_bias_table":
        "attn.relative_position_bias_table",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
}


def laion_name(hf_key: str) -> str | None:
    """transformers' key -> laion_clap's; None for a q/k/v part (merged separately) or a derived buffer."""
    if hf_key.endswith(("position_ids", "token_type_ids", "relative_position_index")):
        return None
    if hf_key.startswith("text_model."):
        return "text_branch." + hf_key[len("text_model."):]
    for tower in ("text", "audio"):
        for index, linear in (("0", "linear1"), ("2", "linear2")):
            prefix = f"{tower}_projection.{linear}."
            if hf_key.startswith(prefix):
                return f"{tower}_projection.{index}." + hf_key[len(prefix):]
    encoder = "audio_model.audio_encoder."
    if not hf_key.startswith(encoder):
        return hf_key
    rest = hf_key[len(encoder):]
    if rest.startswith("batch_norm."):
        return "audio_branch.bn0." + rest[len("batch_norm."):]
    parts = rest.split(".")
    if parts[0] == "layers" and parts[2] == "blocks":
        head, inner = ".".join(parts[:4]), ".".join(parts[4:])
        if inner.startswith("attention.self.") and inner.split(".")[2] in ("query", "key", "value"):
            return None
        for hf_name, laion in BLOCK_NAMES.items():
            if inner == hf_name or inner.startswith(hf_name + "."):
                return f"audio_branch.{head}.{laion}" + inner[len(hf_name):]
        raise KeyError(hf_key)
    return "audio_branch." + rest


def to_laion(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = laion_name(key)
        if name is not None:
            out[name] = value.clone()
    # WindowAttention's single qkv Linear: rows are [query; key; value].
    for key in state:
        if key.startswith("audio_model.audio_encoder.") and key.endswith((".self.query.weight", ".self.query.bias")):
            kind = key.rsplit(".", 1)[1]
            stem = key[len("audio_model.audio_encoder."):].rsplit(".attention.self.query.", 1)[0]
            parts = [state[key.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
            out[f"audio_branch.{stem}.attn.qkv.{kind}"] = torch.cat(parts, dim=0).clone()
    return out


def main() -> None:
    model = ClapModel.from_pretrained(FOLDER).eval()
    state = to_laion(model.state_dict())
    generator = torch.Generator().manual_seed(SEED)
    width = model.config.projection_dim
    for tower in ("text", "audio"):  # laion's MLPLayers: Linear, ReLU, Dropout, Linear
        for index in ("0", "3"):
            state[f"{tower}_transform.sequential.{index}.weight"] = torch.randn(width, width, generator=generator)
            state[f"{tower}_transform.sequential.{index}.bias"] = torch.randn(width, generator=generator)
    torch.save({"state_dict": {f"module.{k}": v.contiguous() for k, v in sorted(state.items())}}, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(state)} tensors)")


if __name__ == "__main__":
    main()
