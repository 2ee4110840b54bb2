"""Write the SAME autoencoder parity fixtures (tests/fixtures/same/) with the stable-audio-3 reference.

Runs in the reference venv (see ../shared/reference-env/sa3/README.md), not in CI:

    /tmp/sa3-ref/bin/python tools/make_same_fixtures.py [OUT_DIR]

For two tiny autoencoders that keep every structural switch of the released ones (4096x
downsampling: patch 256 x stride 16; chunk 32) -- `same_s` (SAME-S style: chunked attention with
the midpoint shift, decoder mapping k=3, 3 blocks so the shift splits them 1 + 2) and `same_l`
(SAME-L style: sliding window [1, 1], the last decoder block with the sin gate, k=1) -- it builds
the reference model from the config, fills every parameter from a seeded generator (rounded to
float16, so the weights are stored in half the space and load exactly), and saves
`<case>.safetensors`:

    state.<key>            the state dict (parameters in float16, buffers in float32)
    encode.out             latents of inputs' `audio` (unchunked; T not a multiple of 256)
    decode.in / .out       decode with the noise off (bottleneck noise_regularize=False, mask_noise=0)
    noise.in / .out        decode with the noise on, after torch.manual_seed(NOISE_SEED)
    chunked_encode.out     encode_audio(long_audio, chunked=True, chunk_size=4, overlap=2)
    chunked_decode.in/.out decode_audio(chunked=True, chunk_size=4, overlap=2), noise off (L = 5:
                           the last window is anchored at an odd start)

`inputs.safetensors` holds `audio` [2, 2, 9192] and `long_audio` [1, 2, 25810] (float16 values).
`cases.json` holds each case's AE-only model_config.json and the call arguments, and the
reconstructed full-size SAME-S and SAME-L autoencoder dicts (SPEC.md g.3); `full_keys.json` their
key -> shape lists as the reference builds them (on the meta device).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_3.factory import create_autoencoder_from_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
WEIGHT_SEED = {"same_s": 11, "same_l": 12}
INPUT_SEED = 1234
NOISE_SEED = 77
CHUNKED = {"chunk_size": 4, "overlap": 2}


def same_config(channels: int, c_mult: int, depth: int, dim_heads: int, latent_dim: int, *, small: bool,
                sinusoidal_blocks: int = 0) -> dict:
    """The reference's autoencoder dict (SAME-S style when small, SAME-L style otherwise)."""
    common = {"channels": channels, "c_mults": [c_mult], "strides": [16], "latent_dim": latent_dim,
              "transformer_depths": [depth], "checkpointing": False, "differential": True, "dyt": True,
              "dim_heads": dim_heads, "variable_stride": True}
    if small:
        common.update({"chunk_size": 32, "chunk_midpoint_shift": True})
    else:
        common.update({"sliding_window": [1, 1], "chunk_midpoint_shift": False})
    return {
        "type": "same",
        "pretransform": {"type": "patched", "config": {"patch_size": 256, "channels": 2}},
        "encoder": {"type": "same", "config": dict(common, in_channels=512, mask_noise=0.0)},
        "decoder": {"type": "same", "config": dict(common, out_channels=512, sinusoidal_blocks=[sinusoidal_blocks],
                                                   conv_mapping=small, mask_noise=0.01)},
        "bottleneck": {"type": "softnorm", "config": {"dim": latent_dim, "noise_augment_dim": 0,
                                                      "noise_regularize": True, "auto_scale": True}},
        "latent_dim": latent_dim, "downsampling_ratio": 4096, "io_channels": 2,
    }


CASES = {
    "same_s": same_config(16, 2, 3, 16, 16, small=True),
    "same_l": same_config(16, 2, 2, 16, 16, small=False, sinusoidal_blocks=2),
}
# Reconstructed full-size configs (SPEC.md g.3).
FULL = {
    "same_s": same_config(128, 6, 6, 64, 256, small=True, sinusoidal_blocks=0),
    "same_l": same_config(256, 6, 12, 64, 256, small=False, sinusoidal_blocks=8),
}


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter from a seeded generator (norm gains and scales near 1), rounded to float16."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters(), key=lambda item: item[0]):
            leaf = name.split(".")[-1]
            noise = torch.randn(parameter.shape, generator=generator)
            if leaf in ("gamma", "scaling_factor", "weight_g", "running_std", "alpha"):
                value = 1.0 + 0.1 * noise
            elif parameter.dim() >= 2:
                value = noise / math.sqrt(max(1, parameter[0].numel()))
            else:
                value = 0.1 * noise
            parameter.copy_(value.half().float())


def set_noise(autoencoder: torch.nn.Module, on: bool, mask_noise: float = 0.01) -> None:
    """The reference's switches for its eval-time decode noise."""
    autoencoder.bottleneck.noise_regularize = on
    for module in autoencoder.modules():
        if hasattr(module, "mask_noise") and module.__class__.__name__ == "TransformerResamplingBlock":
            module.mask_noise = (mask_noise if module.type == "decoder" else 0.0) if on else 0.0


def make_case(name: str, config: dict, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    autoencoder = create_autoencoder_from_config(copy.deepcopy(config), SAMPLE_RATE).eval()
    randomize_(autoencoder, WEIGHT_SEED[name])
    generator = torch.Generator().manual_seed(INPUT_SEED + WEIGHT_SEED[name])
    decode_in = torch.randn(2, config["latent_dim"], 3, generator=generator)
    noise_in = torch.randn(2, config["latent_dim"], 2, generator=generator)
    chunked_in = torch.randn(1, config["latent_dim"], 5, generator=generator)
    buffers = {k for k, _ in autoencoder.named_buffers()}  # rope.inv_freq: exact float32, not random
    out = {f"state.{k}": (v if k in buffers else v.half()).contiguous()
           for k, v in autoencoder.state_dict().items()}
    with torch.no_grad():
        out["encode.out"] = autoencoder.encode_audio(inputs["audio"])
        out["chunked_encode.out"] = autoencoder.encode_audio(inputs["long_audio"], chunked=True, **CHUNKED)
        set_noise(autoencoder, False)
        out["decode.in"], out["decode.out"] = decode_in, autoencoder.decode_audio(decode_in)
        out["chunked_decode.in"] = chunked_in
        out["chunked_decode.out"] = autoencoder.decode_audio(chunked_in, chunked=True, **CHUNKED)
        set_noise(autoencoder, True)
        torch.manual_seed(NOISE_SEED)
        out["noise.in"], out["noise.out"] = noise_in, autoencoder.decode_audio(noise_in)
        # The noise is really on: a second seed gives another decode.
        torch.manual_seed(NOISE_SEED + 1)
        assert not torch.equal(autoencoder.decode_audio(noise_in), out["noise.out"])
    for key, value in out.items():
        if not key.startswith("state."):
            print(f"  {name} {key}: {tuple(value.shape)} max|x|={float(value.abs().max()):.3g}")
    return {k: v.contiguous() for k, v in out.items()}


def full_keys() -> dict[str, dict[str, list[int]]]:
    keys = {}
    for name, config in FULL.items():
        with torch.device("meta"):
            autoencoder = create_autoencoder_from_config(copy.deepcopy(config), SAMPLE_RATE)
        keys[name] = {k: list(v.shape) for k, v in autoencoder.state_dict().items()}
        count = sum(p.numel() for p in autoencoder.parameters())
        print(f"  full {name}: {len(keys[name])} tensors, {count:,} parameters")
    return keys


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(INPUT_SEED)
    inputs = {
        "audio": (0.3 * torch.randn(2, 2, 2 * 4096 + 1000, generator=generator)).half().float(),
        "long_audio": (0.3 * torch.randn(1, 2, 6 * 4096 + 1234, generator=generator)).half().float(),
    }
    save_file({k: v.half() for k, v in inputs.items()}, str(out_dir / "inputs.safetensors"))
    cases = {}
    for name, config in CASES.items():
        save_file(make_case(name, config, inputs), str(out_dir / f"{name}.safetensors"))
        cases[name] = {
            "model_config": {"model_type": "autoencoder", "sample_rate": SAMPLE_RATE, "audio_channels": 2,
                             "model": config},
            "chunked": CHUNKED, "noise_seed": NOISE_SEED,
        }
    meta = {"reference": "stable-audio-3 636f906", "torch": torch.__version__, "cases": cases,
            "full_configs": FULL}
    (out_dir / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out_dir / "full_keys.json").write_text(json.dumps(full_keys()) + "\n")
    total = sum(path.stat().st_size for path in out_dir.iterdir())
    print(f"wrote {out_dir} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "fixtures" / "same")
