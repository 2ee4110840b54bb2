"""Widen an Oobleck decoder's channels without changing what it outputs.

The default model's decoder runs its last two stages (11 kHz and 44.1 kHz) on 16 channels; the
stage before them runs at 2.76 kHz, so everything above about 1.4 kHz is drawn by those 16
channels. This writes the same autoencoder with a wider decoder (a config whose decoder differs
only in `channels` / `c_mults`), function-preserving: every old weight is kept, weights from new
channels into old ones are zero, and new channels start from the new model's own random
initialisation, so the wider decoder decodes exactly as the old one did and training starts from
there. The encoder is copied unchanged (a phase-2 run keeps it frozen).

    python tools/default_model/widen_decoder.py --checkpoint stable_audio_core/default_model/model.safetensors \
        --config tools/default_model/vae_crops8k_wide.json --out wide-init.safetensors

Prints the largest difference between the two decoders' outputs on random latents (it must be
at float rounding level) and the parameter counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stable_audio_core.checkpoint import config_beside  # noqa: E402
from stable_audio_core.models.layers import (  # noqa: E402
    WNConvTranspose1d,
    fold_weight_norm_state,
    unfold_weight_norm_state,
)
from stable_audio_core.factory import load_autoencoder  # noqa: E402


def widen_weight(old: torch.Tensor, new: torch.Tensor, in_dim: int, out_dim: int) -> torch.Tensor:
    """`new` (an effective conv weight) with `old` in its leading corner and zeros where a new
    input channel would feed an old output channel."""
    result = new.clone()
    result[tuple(slice(0, n) for n in old.shape)] = old
    block = [slice(None)] * new.dim()
    block[in_dim] = slice(old.shape[in_dim], None)
    block[out_dim] = slice(0, old.shape[out_dim])
    result[tuple(block)] = 0.0
    return result


def widen_state(old_state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The wide `model`'s state with `old_state` (same keys, narrower decoder) embedded. Tensors
    of unchanged shape are copied as they are (the encoder stays bitwise equal)."""
    new_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    missing = set(new_state) ^ set(old_state)
    if missing:
        raise SystemExit(f"the checkpoint's autoencoder keys differ from the config's: {sorted(missing)[:5]}")
    reshaped = [k for k, v in old_state.items() if v.shape != new_state[k].shape]
    if any(k.startswith("encoder.") for k in reshaped):
        raise SystemExit(f"the config's encoder differs from the checkpoint's ({reshaped[0]})")
    # A widened conv: its effective weight (w = g v / ||v||) is widened, then stored back as
    # g = ||w||, v = w (both change even where g's shape does not).
    widened = sorted({k.rsplit(".weight_", 1)[0] + ".weight" for k in reshaped if ".weight_" in k})
    unchanged = {k: v.clone() for k, v in old_state.items()
                 if k not in reshaped and k.rsplit(".weight_", 1)[0] + ".weight" not in widened}
    old = fold_weight_norm_state(old_state, widened)
    wide = fold_weight_norm_state(new_state, widened)
    transposed = {name for name, module in model.named_modules() if isinstance(module, WNConvTranspose1d)}
    for key in widened:
        # Conv1d weights are [out, in, k]; ConvTranspose1d weights are [in, out, k].
        in_dim, out_dim = (0, 1) if key[: -len(".weight")] in transposed else (1, 0)
        wide[key] = widen_weight(old[key], wide[key], in_dim, out_dim)
    for key, value in old_state.items():
        if key not in unchanged and ".weight_" not in key:
            if value.dim() != 1:
                raise SystemExit(f"{key}: cannot widen {tuple(value.shape)} to {tuple(new_state[key].shape)}")
            wide[key][: value.shape[0]] = value  # biases, Snake alpha/beta
    result = unfold_weight_norm_state(wide, new_state)
    result.update(unchanged)
    return result


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint holding the narrow autoencoder")
    parser.add_argument("--config", type=Path, required=True, help="autoencoder training config with the wide decoder")
    parser.add_argument("--narrow-config", type=Path, default=None,
                        help="the config the checkpoint's autoencoder was built with (default: the "
                             "model_config.json beside the checkpoint)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the new channels' initialisation")
    args = parser.parse_args()

    narrow_config_path = args.narrow_config or config_beside(args.checkpoint)
    narrow = load_autoencoder(json.loads(narrow_config_path.read_text()), args.checkpoint)
    torch.manual_seed(args.seed)
    wide = load_autoencoder(json.loads(args.config.read_text()))
    state = widen_state(narrow.state_dict(), wide)
    wide.load_state_dict(state)

    latents = torch.randn(2, narrow.latent_dim, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (narrow.decoder(latents) - wide.decoder(latents)).abs().max().item()
    print(f"decoder parameters {parameter_count(narrow.decoder):,} -> {parameter_count(wide.decoder):,}; "
          f"largest output difference on random latents {difference:.2e}")
    if difference > 1e-4:
        raise SystemExit("the widened decoder does not reproduce the narrow one")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
