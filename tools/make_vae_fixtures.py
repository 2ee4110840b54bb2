"""Write the VAE parity fixtures (tests/fixtures/vae/) with stable-audio-tools 0.0.19.

Runs in the reference venv, not in CI:

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_vae_fixtures.py            # write
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_vae_fixtures.py --check 12 # compare

Writing: for each tiny config below, builds the reference pretransform, perturbs every
parameter, and saves `<case>.safetensors` with the state dict (`state.<key>`, weight_g/weight_v
form as the reference saves it), the input `audio`, the posterior `mean` (divided by the
pretransform scale), `decoded` (the reference pretransform's decode of that mean), `kl`, and
`sampled` (a posterior draw after torch.manual_seed(SEED)). `cases.json` holds the configs;
`sao_1_0_vae_keys.json` the key -> shape list of the full Stable Audio Open 1.0 VAE, and
`paper_dac_vae_keys.json` that of the full Stable Audio 1.0 (paper) DAC-type VAE as configured in
stable_audio_core/configs/stable_audio_paper_unet.json. The `dac_shape` case is a tiny DAC-type VAE.

--check N: additionally builds N random tiny configs, loads the same weights into
stable_audio_core (imported from this checkout) and prints the max abs differences.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_tools.models.bottleneck import vae_sample
from stable_audio_tools.models.factory import create_pretransform_from_config

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "fixtures" / "vae"
PAPER_CONFIG = REPO / "stable_audio_core" / "configs" / "stable_audio_paper_unet.json"
SEED = 1234
SAMPLE_RATE = 44100

# The model.pretransform section of Stable Audio Open 1.0's model_config.json.
SAO_1_0_PRETRANSFORM = {
    "type": "autoencoder",
    "iterate_batch": True,
    "config": {
        "encoder": {
            "type": "oobleck",
            "requires_grad": False,
            "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                       "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True},
        },
        "decoder": {
            "type": "oobleck",
            "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                       "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                       "final_tanh": False},
        },
        "bottleneck": {"type": "vae"},
        "latent_dim": 64,
        "downsampling_ratio": 2048,
        "io_channels": 2,
    },
}  # fmt: skip


def pretransform_config(*, io_channels, channels, c_mults, strides, latent_dim, use_snake,
                        final_tanh=None, nearest=None, soft_clip=None, scale=None,
                        iterate_batch=None, bottleneck=True):  # fmt: skip
    """A model.pretransform dict in the reference's format for a tiny Oobleck VAE."""
    shared = {"channels": channels, "c_mults": c_mults, "strides": strides, "use_snake": use_snake}
    decoder_config = {"out_channels": io_channels, "latent_dim": latent_dim, **shared}
    if final_tanh is not None:
        decoder_config["final_tanh"] = final_tanh
    if nearest is not None:
        decoder_config["use_nearest_upsample"] = nearest
    decoder = {"type": "oobleck", "config": decoder_config}
    if soft_clip is not None:
        decoder["soft_clip"] = soft_clip
    encoder_width = 2 * latent_dim if bottleneck else latent_dim
    config = {
        "encoder": {"type": "oobleck",
                    "config": {"in_channels": io_channels, "latent_dim": encoder_width, **shared}},
        "decoder": decoder,
        "latent_dim": latent_dim,
        "downsampling_ratio": int(torch.tensor(strides).prod()),
        "io_channels": io_channels,
    }  # fmt: skip
    if bottleneck:
        config["bottleneck"] = {"type": "vae"}
    result = {"type": "autoencoder", "config": config}
    if scale is not None:
        result["scale"] = scale
    if iterate_batch is not None:
        result["iterate_batch"] = iterate_batch
    return result


def dac_pretransform_config(*, d_model, strides, channels, rates, latent_dim, io_channels=None,
                            encoder_latent_dim="vae", scale=None, iterate_batch=None,
                            bottleneck=True):  # fmt: skip
    """A model.pretransform dict for a tiny DAC-type VAE (Stable Audio 1.0's encoder/decoder type).

    io_channels None leaves the parts' in/out channels at the reference's mono default;
    encoder_latent_dim "vae" gives the encoder a 1x1 projection to 2 * latent_dim (latent_dim
    without a bottleneck), None leaves it out (the encoder's own width must then fit)."""
    encoder_config = {"d_model": d_model, "strides": strides}
    decoder_config = {"latent_dim": latent_dim, "channels": channels, "rates": rates}
    if io_channels is not None:
        encoder_config["in_channels"] = io_channels
        decoder_config["out_channels"] = io_channels
    if encoder_latent_dim == "vae":
        encoder_latent_dim = 2 * latent_dim if bottleneck else latent_dim
    if encoder_latent_dim is not None:
        encoder_config["latent_dim"] = encoder_latent_dim
    config = {
        "encoder": {"type": "dac", "config": encoder_config},
        "decoder": {"type": "dac", "config": decoder_config},
        "latent_dim": latent_dim,
        "downsampling_ratio": int(torch.tensor(strides).prod()),
        "io_channels": 1 if io_channels is None else io_channels,
    }
    if bottleneck:
        config["bottleneck"] = {"type": "vae"}
    result = {"type": "autoencoder", "config": config}
    if scale is not None:
        result["scale"] = scale
    if iterate_batch is not None:
        result["iterate_batch"] = iterate_batch
    return result


# name -> (pretransform config, batch size, audio length in samples)
CASES = {
    # Stable Audio Open 1.0's shape (5 blocks, ratio 2048, snake, no final tanh), width 1.
    "sao_shape": (pretransform_config(io_channels=2, channels=1, c_mults=[1, 2, 4, 8, 16],
                                      strides=[2, 4, 4, 8, 8], latent_dim=4, use_snake=True,
                                      final_tanh=False, iterate_batch=True), 1, 3 * 2048),
    # ELU, final tanh, mono, a pretransform scale, a length that is not a multiple of the ratio.
    "elu_tanh_mono": (pretransform_config(io_channels=1, channels=4, c_mults=[1, 2],
                                          strides=[2, 4], latent_dim=3, use_snake=False,
                                          scale=0.5), 2, 8 * 12 + 5),
    # Nearest-neighbour upsampling, an odd stride, soft clipping.
    "nearest_odd_stride": (pretransform_config(io_channels=2, channels=3, c_mults=[1, 2],
                                               strides=[2, 3], latent_dim=2, use_snake=True,
                                               nearest=True, soft_clip=True, final_tanh=False),
                           1, 6 * 10),
    # Stable Audio 1.0's VAE shape (type "dac": strides 4-4-8-8, rates 8-8-4-4, ratio 1024,
    # stereo, VAE bottleneck), widths cut to d_model 1 / decoder channels 16.
    "dac_shape": (dac_pretransform_config(io_channels=2, d_model=1, strides=[4, 4, 8, 8],
                                          channels=16, rates=[8, 8, 4, 4], latent_dim=3,
                                          iterate_batch=True), 1, 3 * 1024 + 100),
}  # fmt: skip


def build_reference(config: dict):
    # The reference factory edits the dicts it is given: hand it a copy.
    pretransform = create_pretransform_from_config(copy.deepcopy(config), SAMPLE_RATE)
    with torch.no_grad():
        for parameter in pretransform.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return pretransform


def reference_outputs(pretransform, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    model = pretransform.model
    with torch.no_grad():
        encoded = model.encode(audio, skip_bottleneck=True)
        result = {"audio": audio}
        if model.bottleneck is not None:
            mean, scale = encoded.chunk(2, dim=1)
            _, kl = vae_sample(mean, scale)
            result["kl"] = kl.reshape(1)
        else:
            mean = encoded
        result["mean"] = mean / pretransform.scale
        result["decoded"] = pretransform.decode(result["mean"])
        torch.manual_seed(SEED)
        result["sampled"] = pretransform.encode(audio)
    return result


def write_fixtures() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for index, (name, (config, batch, length)) in enumerate(CASES.items()):
        torch.manual_seed(index)
        pretransform = build_reference(config)
        io_channels = config["config"]["io_channels"]
        audio = 0.5 * torch.randn(batch, io_channels, length)
        tensors = {f"state.{k}": v.contiguous() for k, v in pretransform.model.state_dict().items()}
        tensors.update(reference_outputs(pretransform, audio))
        path = OUT_DIR / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        manifest[name] = {"pretransform": config, "sample_rate": SAMPLE_RATE, "seed": SEED}
        size = path.stat().st_size
        print(f"{name}: {len(tensors)} tensors, {size / 1024:.1f} KiB")
    (OUT_DIR / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")

    with torch.device("meta"):
        sao = create_pretransform_from_config(copy.deepcopy(SAO_1_0_PRETRANSFORM), SAMPLE_RATE)
    keys = {
        "pretransform": SAO_1_0_PRETRANSFORM,
        "parameter_count": sum(p.numel() for p in sao.parameters()),
        "state_dict": [[k, list(v.shape)] for k, v in sao.model.state_dict().items()],
    }
    (OUT_DIR / "sao_1_0_vae_keys.json").write_text(json.dumps(keys, separators=(",", ":")) + "\n")
    print(f"SAO 1.0 VAE: {keys['parameter_count']:,} parameters, {len(keys['state_dict'])} keys")

    paper = json.loads(PAPER_CONFIG.read_text())["model"]["pretransform"]
    with torch.device("meta"):
        vae = create_pretransform_from_config(copy.deepcopy(paper), SAMPLE_RATE)
    keys = {
        "pretransform": paper,
        "parameter_count": sum(p.numel() for p in vae.parameters()),
        "state_dict": [[k, list(v.shape)] for k, v in vae.model.state_dict().items()],
    }
    (OUT_DIR / "paper_dac_vae_keys.json").write_text(json.dumps(keys, separators=(",", ":")) + "\n")
    print(f"paper (SA 1.0) DAC VAE: {keys['parameter_count']:,} parameters, "
          f"{len(keys['state_dict'])} keys")


def random_case(rng: random.Random):
    depth = rng.randint(1, 3)
    nearest = rng.random() < 0.3
    strides = [rng.choice([2, 4, 3] if nearest else [2, 4]) for _ in range(depth)]
    c_mults = sorted(rng.randint(1, 4) for _ in range(depth))
    config = pretransform_config(
        io_channels=rng.randint(1, 2), channels=rng.randint(1, 4), c_mults=c_mults,
        strides=strides, latent_dim=rng.randint(1, 4), use_snake=rng.random() < 0.6,
        final_tanh=rng.random() < 0.5, nearest=nearest, soft_clip=rng.random() < 0.2,
        scale=rng.choice([None, 0.7, 1.3]), iterate_batch=rng.random() < 0.3,
        bottleneck=rng.random() < 0.85,
    )  # fmt: skip
    ratio = config["config"]["downsampling_ratio"]
    length = ratio * rng.randint(2, 40) + rng.randint(0, ratio - 1)
    return config, rng.randint(1, 2), length


def random_dac_case(rng: random.Random):
    depth = rng.randint(1, 3)
    strides = [rng.choice([2, 4, 3]) for _ in range(depth)]
    d_model = rng.randint(1, 3)
    latent_dim = rng.randint(1, 4)
    bottleneck = rng.random() < 0.85
    # Without a projection the encoder's own width d_model * 2^depth is the latent width.
    project = bottleneck or rng.random() < 0.7
    if not project:
        latent_dim = d_model * 2**depth
    config = dac_pretransform_config(
        d_model=d_model, strides=strides, channels=2**depth * rng.randint(1, 3),
        rates=list(reversed(strides)), latent_dim=latent_dim,
        io_channels=rng.choice([None, 1, 2]), encoder_latent_dim="vae" if project else None,
        scale=rng.choice([None, 0.7]), iterate_batch=rng.random() < 0.3, bottleneck=bottleneck,
    )  # fmt: skip
    ratio = config["config"]["downsampling_ratio"]
    length = ratio * rng.randint(2, 20) + rng.randint(0, ratio - 1)
    return config, rng.randint(1, 2), length


def check_against_core(count: int) -> None:
    sys.path.insert(0, str(REPO))
    from stable_audio_core.models.autoencoder import build_autoencoder

    rng = random.Random(7)
    cases = [(name, *spec) for name, spec in CASES.items()]
    cases += [(f"random{i}", *random_case(rng)) for i in range(count)]
    cases += [(f"random_dac{i}", *random_dac_case(rng)) for i in range(count)]
    print(f"{'case':>20} {'keys':>5} {'mean':>9} {'decoded':>9} {'sampled':>9} {'kl':>9} "
          f"{'|decoded|':>9}")  # fmt: skip
    worst = 0.0
    for index, (name, config, batch, length) in enumerate(cases):
        torch.manual_seed(100 + index)
        reference = build_reference(config)
        audio = 0.5 * torch.randn(batch, config["config"]["io_channels"], length)
        expected = reference_outputs(reference, audio)
        ours = build_autoencoder(config, SAMPLE_RATE)
        state = reference.model.state_dict()
        same_keys = list(ours.state_dict()) == list(state) and all(
            ours.state_dict()[k].shape == v.shape for k, v in state.items())  # fmt: skip
        ours.load_state_dict(state)
        with torch.no_grad():
            mean = ours.encode(audio, chunked=False)
            decoded = ours.decode(expected["mean"], chunked=False)
            sampled = ours.encode(audio, sample=True, generator=torch.Generator().manual_seed(SEED))
            _, kl = ours.encode_with_kl(audio)
        errors = [
            (mean - expected["mean"]).abs().max().item(),
            (decoded - expected["decoded"]).abs().max().item(),
            (sampled - expected["sampled"]).abs().max().item(),
            (kl - expected["kl"][0]).abs().item() / max(1.0, abs(kl.item())) if "kl" in expected
            else 0.0,
        ]  # fmt: skip
        worst = max(worst, *errors[:3])
        print(f"{name:>20} {str(same_keys):>5} " + " ".join(f"{e:9.2e}" for e in errors)
              + f" {expected['decoded'].abs().max().item():9.2e}")  # fmt: skip
        if not same_keys:
            raise SystemExit(f"{name}: state-dict keys differ")
    print(f"worst max abs error (mean, decoded, sampled): {worst:.3e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", type=int, default=None, metavar="N",
                        help="also compare stable_audio_core on the fixed and N random configs")
    parser.add_argument("--no-write", action="store_true", help="do not write fixtures")
    args = parser.parse_args()
    if not args.no_write:
        write_fixtures()
    if args.check is not None:
        check_against_core(args.check)


if __name__ == "__main__":
    main()
