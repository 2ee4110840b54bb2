"""Write the Stable Audio 3 benchmark files (run with the SA3 reference's python, /tmp/sa3-ref).

    /tmp/sa3-ref/bin/python benchmarks/harness/sa3_files.py WORKDIR --scale reduced|full --seed N

Writes, nothing downloaded:
  sa3-<scale>.model_config.json  Stable Audio 3 Small (music) as configs/stable-audio-3-small-music.json,
                                 the DiT's depth cut to SA3_DEPTH[scale] (width, heads, SAME-S unchanged),
                                 its T5Gemma read from the folder below
  sa3-<scale>.safetensors        the reference model's whole state dict, every parameter drawn from
                                 a seeded generator (tools/make_sa3_parity_fixtures.randomize_)
  t5gemma-<scale>/               a T5Gemma encoder shaped like t5gemma-b-b-ul2 (hidden 768, 12 heads
                                 of 64, feed-forward 2048) with T5GEMMA_LAYERS[scale] layers, stored
                                 in bfloat16, and the small BPE tokenizer of the T5Gemma fixtures
  sa3-<scale>.params             the parameter count of the DiT

The reference env has transformers, which writes the T5Gemma folder; the project never imports this.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from make_sa3_parity_fixtures import randomize_, reference_model, write_t5gemma  # noqa: E402

# Small has 20 DiT blocks and a 12-layer T5Gemma; on a 2-core CPU the reduced scale keeps the
# widths and cuts the depths.
SA3_DEPTH = {"reduced": 4, "full": 20}
T5GEMMA_LAYERS = {"reduced": 2, "full": 12}


def sa3_config(scale: str, t5gemma: Path) -> dict:
    config = json.loads((REPO / "stable_audio_core" / "configs" / "stable-audio-3-small-music.json").read_text())
    config = copy.deepcopy(config)
    config["model"]["diffusion"]["config"]["depth"] = SA3_DEPTH[scale]
    prompt = config["model"]["conditioning"]["configs"][0]["config"]
    for key in ("repo_id", "subfolder"):
        prompt.pop(key, None)
    prompt["model_path"] = str(t5gemma)
    config.pop("_source", None)
    return config


def write_t5gemma_folder(folder: Path, layers: int, seed: int) -> None:
    """t5gemma-b-b-ul2's encoder widths with `layers` layers (sliding and full alternating)."""
    kinds = ["sliding_attention", "full_attention"] * ((layers + 1) // 2)
    shutil.rmtree(folder, ignore_errors=True)
    write_t5gemma(folder, seed, intermediate_size=2048, num_hidden_layers=layers, num_attention_heads=12,
                  num_key_value_heads=12, head_dim=64, query_pre_attn_scalar=64,
                  layer_types=kinds[:layers], sliding_window=4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--scale", choices=sorted(SA3_DEPTH), default="reduced")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = args.workdir / f"t5gemma-{args.scale}"
    write_t5gemma_folder(folder, T5GEMMA_LAYERS[args.scale], args.seed + 1)
    config = sa3_config(args.scale, folder)
    model, _ = reference_model(config)
    randomize_(model, args.seed + 2)
    stem = args.workdir / f"sa3-{args.scale}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{stem}.safetensors")
    Path(f"{stem}.params").write_text(str(sum(p.numel() for p in model.model.parameters())))
    Path(f"{stem}.model_config.json").write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
