"""Write the VAE-training fixtures (tests/fixtures/vae_training/) with stable-audio-tools 0.0.19.

Runs in the reference venv, not in CI:

    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_vae_training_fixtures.py            # write
    HF_HUB_OFFLINE=1 /tmp/sat-ref/bin/python tools/make_vae_training_fixtures.py --check 20  # compare

Writing:
- `stft.safetensors`: two stereo signals `x`, `y` [2, 2, 2048]; the reference's A-weighting FIR
  taps at 44.1 and 48 kHz (`a_weighting_44100`, `a_weighting_48000`); and its losses on (x, y):
  `stereo_weighted` (the generator's STFT term: SumAndDifferenceSTFTLoss + 0.5 * left + 0.5 *
  right, windows 2048..32, hop 1/4, A-weighting at 44.1 kHz) and `plain` (MultiResolutionSTFTLoss,
  same windows, no weighting).
- `discriminator.safetensors`: a tiny perturbed EncodecDiscriminator (`state.<key>`, the outer
  `discriminators.` prefix removed), inputs `reals`, `fakes` [2, 2, 512], the logits of `reals` per
  scale (`logits.<i>`), and its `loss()` on them (`loss_dis`, `loss_adv`, `feature_matching`).
- `training_step.safetensors`: stable-audio-tools' `AutoencoderTrainingWrapper.training_step` run
  for `STEP_COUNT` steps (generator on even, discriminator on odd steps) with plain SGD on a tiny
  perturbed Oobleck VAE and discriminator: the initial weights (`ae.<key>`, `disc.<key>`), the
  batch `reals` and `seeds`, the step-0 generator loss and autoencoder gradients
  (`gen_loss`, `gen_grad.<key>`), the step-1 discriminator loss and gradients (`disc_loss`,
  `disc_grad.<key>`) and the final weights (`ae_final.<key>`, `disc_final.<key>`). The latent
  noise is our per-item draw (training.task.item_generators, salt "latent"), fed to the
  reference's sampler in place of torch.randn_like. pytorch_lightning, wandb, ema_pytorch and the
  plotting module are stubbed: the wrapper's step needs none of them.
- `cases.json`: the discriminator config and the training-step case (model config with its
  "training.loss_configs", learning rate, step count).

--check N: additionally compares stable_audio_core (imported from this checkout) with the
reference on N random signal pairs and prints the max abs differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from stable_audio_tools.models.discriminators import EncodecDiscriminator
from stable_audio_tools.training.losses.auraloss import (
    FIRFilter,
    MultiResolutionSTFTLoss,
    SumAndDifferenceSTFTLoss,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT_DIR = REPO / "tests" / "fixtures" / "vae_training"
SEED = 4321
SCALES = [2048, 1024, 512, 256, 128, 64, 32]
HOPS = [s // 4 for s in SCALES]
DISCRIMINATOR = {"filters": 4, "n_ffts": [256, 128, 64], "hop_lengths": [64, 32, 16],
                 "win_lengths": [256, 128, 64]}  # fmt: skip


STEP_COUNT = 4
STEP_LR = 0.002
STEP_LAYERS = {"channels": 4, "c_mults": [1, 2], "strides": [2, 2], "use_snake": True}
STEP_CONFIG = {
    "model_type": "autoencoder", "sample_rate": 16000, "sample_size": 512, "audio_channels": 2,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 8, **STEP_LAYERS}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 4,
                                                  "final_tanh": False, **STEP_LAYERS}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 4, "io_channels": 2,
    },
    "training": {"loss_configs": {
        "discriminator": {"type": "encodec", "config": {"filters": 4, "n_ffts": [128, 64], "hop_lengths": [32, 16],
                                                        "win_lengths": [128, 64]},
                          "weights": {"adversarial": 0.1, "feature_matching": 5.0}},
        "spectral": {"type": "mrstft", "config": {"fft_sizes": [256, 128, 64, 32], "hop_sizes": [64, 32, 16, 8],
                                                  "win_lengths": [256, 128, 64, 32], "perceptual_weighting": True},
                     "weights": {"mrstft": 1.0}},
        "time": {"type": "l1", "weights": {"l1": 0.0}},
        "bottleneck": {"type": "kl", "weights": {"kl": 1e-4}},
    }},
}  # fmt: skip


def _stub_modules() -> None:
    """Stand-ins for the training wrapper's logging and Lightning imports (unused by its step)."""
    import types

    def stub(name: str, **attributes) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules.setdefault(name, module)

    class LightningModule(torch.nn.Module):
        pass

    stub("pytorch_lightning", LightningModule=LightningModule, Callback=object)
    stub("pytorch_lightning.loggers", WandbLogger=object, CometLogger=object)
    stub("pytorch_lightning.utilities")
    stub("pytorch_lightning.utilities.rank_zero", rank_zero_only=lambda function: function)
    stub("wandb", Image=object)
    stub("ema_pytorch", EMA=object)
    stub("stable_audio_tools.interface.aeiou", audio_spectrogram_image=None,
         tokens_spectrogram_image=None, pca_point_cloud=None)  # fmt: skip


def write_training_step(generator: torch.Generator) -> dict[str, torch.Tensor]:
    _stub_modules()
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.training.autoencoders import AutoencoderTrainingWrapper

    from stable_audio_core.training.task import item_generators

    torch.manual_seed(SEED)
    autoencoder = create_model_from_config(STEP_CONFIG)
    wrapper = AutoencoderTrainingWrapper(autoencoder, sample_rate=STEP_CONFIG["sample_rate"],
                                         loss_config=STEP_CONFIG["training"]["loss_configs"], use_ema=False)
    discriminator = wrapper.discriminator
    with torch.no_grad():
        for p in list(autoencoder.parameters()) + list(discriminator.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    t = torch.arange(512) / STEP_CONFIG["sample_rate"]
    reals = 0.4 * torch.sin(2 * torch.pi * torch.tensor([[[330.0], [440.0]], [[550.0], [660.0]]]) * t)
    reals = reals + 0.02 * torch.randn(reals.shape, generator=generator)
    seeds = torch.tensor([11, 12])

    def disc_state(module):  # EncodecDiscriminator keys without the outer "discriminators."
        return {k[len("discriminators."):]: v.detach().clone() for k, v in module.state_dict().items()}

    tensors = {f"ae.{k}": v.detach().clone() for k, v in autoencoder.state_dict().items()}
    tensors.update({f"disc.{k}": v for k, v in disc_state(discriminator).items()})
    tensors.update({"reals": reals, "seeds": seeds})

    latent_shape = (1, STEP_CONFIG["model"]["latent_dim"], 512 // STEP_CONFIG["model"]["downsampling_ratio"])
    noise = torch.cat([torch.randn(latent_shape, generator=g) for g in item_generators(seeds, "latent")])
    opt_gen = torch.optim.SGD(autoencoder.parameters(), lr=STEP_LR)
    opt_disc = torch.optim.SGD(discriminator.parameters(), lr=STEP_LR)
    wrapper.optimizers = lambda: (opt_gen, opt_disc)
    wrapper.lr_schedulers = lambda: None
    wrapper.manual_backward = lambda loss: loss.backward()
    wrapper.log_dict = lambda *args, **kwargs: None
    randn_like = torch.randn_like
    try:
        torch.randn_like = lambda like, **kwargs: noise.clone().to(like)
        for step in range(STEP_COUNT):
            wrapper.global_step = step
            loss = wrapper.training_step((reals, None), step)
            if step == 0:
                tensors["gen_loss"] = loss.detach().reshape(1)
                tensors.update({f"gen_grad.{n}": p.grad.clone() for n, p in autoencoder.named_parameters()})
            if step == 1:
                tensors["disc_loss"] = loss.detach().reshape(1)
                tensors.update({f"disc_grad.{n[len('discriminators.'):]}": p.grad.clone()
                                for n, p in discriminator.named_parameters()})  # fmt: skip
    finally:
        torch.randn_like = randn_like
    tensors.update({f"ae_final.{k}": v.detach().clone() for k, v in autoencoder.state_dict().items()})
    tensors.update({f"disc_final.{k}": v for k, v in disc_state(discriminator).items()})
    return tensors


def reference_stereo_loss(x: torch.Tensor, y: torch.Tensor, sample_rate: int = 44100) -> torch.Tensor:
    """The generator's STFT term as stable-audio-tools' AutoencoderTrainingWrapper builds it."""
    config = dict(fft_sizes=SCALES, hop_sizes=HOPS, win_lengths=SCALES, perceptual_weighting=True)
    sum_diff = SumAndDifferenceSTFTLoss(sample_rate=sample_rate, **config)
    per_channel = MultiResolutionSTFTLoss(sample_rate=sample_rate, **config)
    return (sum_diff(x, y) + 0.5 * per_channel(x[:, :1], y[:, :1])
            + 0.5 * per_channel(x[:, 1:], y[:, 1:]))  # fmt: skip


def reference_plain_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return MultiResolutionSTFTLoss(fft_sizes=SCALES, hop_sizes=HOPS, win_lengths=SCALES)(x, y)


def signal_pair(generator: torch.Generator, length: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    x = 0.3 * torch.randn(2, 2, length, generator=generator)
    y = x + 0.1 * torch.randn(2, 2, length, generator=generator)
    return x, y


def write() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED)
    x, y = signal_pair(generator)
    stft = {
        "x": x, "y": y,
        "a_weighting_44100": FIRFilter("aw", fs=44100).fir.weight.data.reshape(-1).clone(),
        "a_weighting_48000": FIRFilter("aw", fs=48000).fir.weight.data.reshape(-1).clone(),
        "stereo_weighted": reference_stereo_loss(x, y).reshape(1),
        "plain": reference_plain_loss(x, y).reshape(1),
    }  # fmt: skip
    save_file({k: v.contiguous() for k, v in stft.items()}, str(OUT_DIR / "stft.safetensors"))

    torch.manual_seed(SEED)
    discriminator = EncodecDiscriminator(in_channels=2, **DISCRIMINATOR)
    with torch.no_grad():
        for p in discriminator.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    reals = 0.3 * torch.randn(2, 2, 512, generator=generator)
    fakes = reals + 0.2 * torch.randn(2, 2, 512, generator=generator)
    with torch.no_grad():
        logits, _ = discriminator(reals)
        loss_dis, loss_adv, matching = discriminator.loss(reals, fakes)
    tensors = {f"state.{k[len('discriminators.'):]}": v for k, v in discriminator.state_dict().items()}
    tensors.update({"reals": reals, "fakes": fakes, "loss_dis": loss_dis.reshape(1),
                    "loss_adv": loss_adv.reshape(1), "feature_matching": matching.reshape(1)})  # fmt: skip
    tensors.update({f"logits.{i}": logit for i, logit in enumerate(logits)})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT_DIR / "discriminator.safetensors"))
    step = write_training_step(generator)
    save_file({k: v.contiguous() for k, v in step.items()}, str(OUT_DIR / "training_step.safetensors"))
    cases = {"discriminator": DISCRIMINATOR,
             "training_step": {"config": STEP_CONFIG, "learning_rate": STEP_LR, "steps": STEP_COUNT}}
    (OUT_DIR / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"wrote {OUT_DIR} ({total / 1024:.0f} KB)")


def check(count: int) -> None:
    sys.path.insert(0, str(REPO))
    from stable_audio_core.training.losses import (
        MultiResolutionSTFTLoss as OurLoss,
        StereoSTFTLoss,
        a_weighting_fir,
    )

    worst = {"fir": 0.0, "stereo_weighted": 0.0, "plain": 0.0, "stereo_weighted_rel": 0.0}
    for rate in (16000, 22050, 44100, 48000):
        reference_taps = FIRFilter("aw", fs=rate).fir.weight.data.reshape(-1)
        worst["fir"] = max(worst["fir"], (a_weighting_fir(rate) - reference_taps).abs().max().item())
    stereo = StereoSTFTLoss(OurLoss(SCALES, sample_rate=44100, perceptual_weighting=True))
    plain = OurLoss(SCALES)
    generator = torch.Generator().manual_seed(SEED + 1)
    for i in range(count):
        x, y = signal_pair(generator, length=2048 + 997 * (i % 5))
        reference = reference_stereo_loss(x, y).item()
        value = stereo(x, y)[0].item()
        worst["stereo_weighted"] = max(worst["stereo_weighted"], abs(value - reference))
        worst["stereo_weighted_rel"] = max(worst["stereo_weighted_rel"], abs(value - reference) / reference)
        worst["plain"] = max(worst["plain"], abs(plain(x, y).item() - reference_plain_loss(x, y).item()))
    print(json.dumps({"pairs": count, "max_abs_diff": worst}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", type=int, default=0, metavar="N")
    args = parser.parse_args()
    torch.set_num_threads(1)
    write()
    if args.check:
        check(args.check)


if __name__ == "__main__":
    main()
