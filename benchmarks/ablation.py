"""What each of our speed-ups buys: the same work with one optimisation switched off at a time.

    python benchmarks/ablation.py [--quick] [--threads 2] [--out FILE.md]

In one process (ours only), on the benchmark's reduced-scale checkpoints (written by run.py or
here), variants are timed interleaved, --repeats times each, and the minimum is kept (the least
disturbed run on a shared machine). With one thread (the default) the clock is the process CPU
time, which other jobs on the machine barely disturb; with more threads it is wall time. Each row states the variant, its time, the ratio to the
optimised default, and the max abs difference of its output from the default's.

Switches: oneDNN linears (acceleration.use_onednn_linear) vs torch's default BLAS; the fused
Snake vs the earlier inference formulation; the fused residual tail (Snake + 1x1 conv + add a
time slice at a time) vs three full-length steps; balanced decode windows vs full-size ones; the
decode chunk size; weight norm folded; bfloat16. Huge pages are a process-wide switch read once:
compare `STABLE_AUDIO_HUGE_PAGES=0 python benchmarks/ablation.py ...` with a default run.
Profile first: `--profile` prints where an end-to-end generation spends its time (text
conditioning, backbone calls, sampler arithmetic, VAE decode).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "harness"), str(HERE), str(HERE.parent)]

import torch  # noqa: E402
from torch import nn  # noqa: E402

import workloads as W  # noqa: E402


def _files(workdir: Path) -> dict:
    from run import prepare_files  # noqa: E402  (the orchestrator's cached files)

    return prepare_files(workdir / "reduced", "reduced", "dac", [10.0])


@contextmanager
def default_blas_linears(module: nn.Module):
    """Temporarily run every OneDNNLinear as plain nn.Linear."""
    from stable_audio_core.acceleration import OneDNNLinear

    switched = [m for m in module.modules() if type(m) is OneDNNLinear]
    for m in switched:
        m.__class__ = nn.Linear
    try:
        yield
    finally:
        for m in switched:
            m.__class__ = OneDNNLinear


@contextmanager
def direct_convolutions():
    """Temporarily run every convolution as torch's direct one (no im2col path)."""
    from stable_audio_core import acceleration

    limit = acceleration.IM2COL_MAX_ROWS
    acceleration.IM2COL_MAX_ROWS = 0
    try:
        yield
    finally:
        acceleration.IM2COL_MAX_ROWS = limit


@contextmanager
def unoptimised(module: nn.Module):
    """Default BLAS linears and direct convolutions together (the state before this work)."""
    with default_blas_linears(module), direct_convolutions():
        yield


def _previous_snake_forward(self, x):
    """The Snake inference path before this work: five passes, coefficients recomputed."""
    alpha, inverse_beta = self._coefficients()
    out = x * alpha
    out.sin_().pow_(2).mul_(inverse_beta)
    return out.add_(x)


@contextmanager
def previous_snake():
    from stable_audio_core.models.layers import Snake

    current = Snake.forward
    Snake.forward = _previous_snake_forward
    try:
        yield
    finally:
        Snake.forward = current


def _plain_residual_tail(x, h, activation, conv):
    return x + conv(activation(h))


@contextmanager
def unfused_residual_tail():
    """The VAE residual units' tail as three full-length steps (Snake, 1x1 conv, add)."""
    from stable_audio_core.models import autoencoder, dac_vae

    fused = autoencoder.snake_pointwise_residual
    autoencoder.snake_pointwise_residual = dac_vae.snake_pointwise_residual = _plain_residual_tail
    try:
        yield
    finally:
        autoencoder.snake_pointwise_residual = dac_vae.snake_pointwise_residual = fused


@contextmanager
def full_size_windows():
    from functools import partial

    from stable_audio_core.models import autoencoder

    balanced = autoencoder.chunk_windows
    autoencoder.chunk_windows = partial(balanced, balanced=False)
    try:
        yield
    finally:
        autoencoder.chunk_windows = balanced


@contextmanager
def nothing():
    yield


@contextmanager
def before_this_work(model):
    """Every switch off at once: default BLAS linears (model and text encoders), direct
    convolutions, the previous Snake, the unfused residual tail, full-size decode windows of 128
    latents."""
    encoders = [getattr(c, "text_encoder", None) for c in model.conditioner.conditioners.values()]
    modules = [model] + [e.model for e in encoders if e is not None]
    autoencoder = model.autoencoder
    decode = autoencoder.decode
    autoencoder.decode = lambda latents, **kw: decode(latents, **{"chunk_size": 128, **kw})
    try:
        with previous_snake(), direct_convolutions(), unfused_residual_tail(), full_size_windows():
            with default_blas_linears(modules[0]):
                if len(modules) > 1:
                    with default_blas_linears(modules[1]):
                        yield
                else:
                    yield
    finally:
        del autoencoder.decode


CLOCK = time.perf_counter


def timed(variants: dict, repeats: int) -> dict:
    """{name: (fn, context factory)} -> {name: (min seconds, output)}; interleaved."""
    outputs, times = {}, {name: [] for name in variants}
    for name, (fn, context) in variants.items():  # warm-up, and the output to compare
        with context():
            outputs[name] = fn()
    for _ in range(repeats):
        for name, (fn, context) in variants.items():
            with context():
                start = CLOCK()
                fn()
                times[name].append(CLOCK() - start)
    return {name: (min(values), outputs[name]) for name, values in times.items()}


def report(title: str, results: dict, lines: list[str]) -> None:
    base_time, base_out = next(iter(results.values()))
    lines.append(f"\n{title}\n")
    lines.append("| variant | min s | time / optimised | max abs diff vs optimised |")
    lines.append("|---|---|---|---|")
    for name, (seconds, out) in results.items():
        diff = float((out.float() - base_out.float()).abs().max())
        lines.append(f"| {name} | {seconds:.3f} | {seconds / base_time:.2f}x | {diff:.2e} |")
    print("\n".join(lines[-len(results) - 3:]), flush=True)


def profile_generation(model, spec: dict) -> str:
    """Wall-time split of one generation: conditioning, backbone calls, VAE, the rest (sampler)."""
    from stable_audio_core.pipeline import generate

    spent = {"conditioning": 0.0, "backbone": 0.0, "vae decode": 0.0}

    def wrap(owner, name, bucket):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = CLOCK()
            try:
                return original(*args, **kwargs)
            finally:
                spent[bucket] += CLOCK() - start
        setattr(owner, name, wrapper)

    wrap(model, "condition", "conditioning")
    wrap(model.backbone, "forward", "backbone")
    wrap(model.autoencoder, "decode", "vae decode")
    generate(model, spec["prompt"], steps=2, sample_size=spec["sample_size"], seed=1, trim=False)
    spent.update({k: 0.0 for k in spent})
    start = CLOCK()
    generate(model, spec["prompt"], steps=spec["steps"], sample_size=spec["sample_size"], seed=1, trim=False,
             sigma_min=W.SIGMA_MIN, sigma_max=W.SIGMA_MAX)
    total = CLOCK() - start
    spent["sampler and the rest"] = total - sum(spent.values())
    rows = " | ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in spent.items())
    for name in ("condition",):
        del model.__dict__[name]
    del model.backbone.__dict__["forward"]
    del model.autoencoder.__dict__["decode"]
    return f"total {total:.2f} s: {rows}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sa-bench"))
    parser.add_argument("--parts", default="profile,e2e,dit,unet,t5,vae", help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.threads == 1 else time.perf_counter
    parts = args.parts.split(",")

    from stable_audio_core.factory import load_model
    from stable_audio_core.models.layers import fold_weight_norm

    files = _files(args.workdir)
    clock = "process CPU time" if args.threads == 1 else "wall time"
    lines = [f"torch {torch.__version__}, {args.threads} thread(s), {clock}, min of {args.repeats} interleaved runs"]
    frames = 64 if args.quick else 256
    seconds = 3.0 if args.quick else 10.0
    steps = 4 if args.quick else 20
    with torch.inference_mode():
        for family in ("sao", "unet"):
            if not {"profile", "e2e", "dit" if family == "sao" else "unet", "t5", "vae"} & set(parts):
                continue
            model = load_model(files[family]["config"], files[family]["checkpoint"], text_encoder=files["t5"])
            config = model.config.raw
            if "profile" in parts:
                spec = {"prompt": W.PROMPT, "steps": steps, "sample_size": W.window_samples(config, seconds)}
                text = profile_generation(model, spec)
                lines.append(f"\nprofile, {family}: {seconds:g} s, {steps} steps {W.SAMPLER}: {text}")
                print(lines[-1], flush=True)
            if "e2e" in parts:
                from stable_audio_core.pipeline import generate

                samples = W.window_samples(config, seconds)
                run = lambda: generate(model, W.PROMPT, steps=steps, sample_size=samples, seed=1, trim=False,
                                       sigma_min=W.SIGMA_MIN, sigma_max=W.SIGMA_MAX).audio
                results = timed({"optimised (float32)": (run, nothing),
                                 "before this work": (run, lambda: before_this_work(model))}, 1)
                report(f"{family} end to end, {seconds:g} s, {steps} steps {W.SAMPLER}", results, lines)
            if ("dit" if family == "sao" else "unet") in parts:
                n = -(-frames // W.latent_multiple(config)) * W.latent_multiple(config)
                inputs = model.condition([{"prompt": W.PROMPT, "seconds_start": 0, "seconds_total": seconds}])
                x = torch.randn(1, 64, n, generator=torch.Generator().manual_seed(0))
                t = torch.tensor([W.DIFFUSION_TIME])
                fn = model.model_fn(inputs, W.CFG_SCALE)
                mixed = load_model(files[family]["config"], files[family]["checkpoint"], matmul_dtype="bfloat16")
                bf16 = load_model(files[family]["config"], files[family]["checkpoint"], dtype="bfloat16")
                inputs16 = inputs.to(torch.bfloat16)
                results = timed({
                    "optimised (oneDNN linears, im2col convs, float32)": (lambda: fn(x, t), nothing),
                    "default BLAS linears": (lambda: fn(x, t), lambda: default_blas_linears(model)),
                    "direct convolutions": (lambda: fn(x, t), direct_convolutions),
                    "neither (before this work)": (lambda: fn(x, t), lambda: unoptimised(model)),
                    "matmul_dtype=bfloat16 (opt-in)": (lambda: mixed.model_fn(inputs, W.CFG_SCALE)(x, t), nothing),
                    "dtype=bfloat16 (whole model)": (lambda: bf16.model_fn(inputs16, W.CFG_SCALE)(x, t), nothing),
                }, args.repeats)
                report(f"{family} backbone call, batch 2 (CFG), {n} frames", results, lines)
                del bf16, mixed
            if "t5" in parts and family == "sao":
                metadata = [{"prompt": W.PROMPT, "seconds_start": 0, "seconds_total": seconds}]
                results = timed({
                    "optimised": (lambda: model.condition(metadata).cross_attn_cond, nothing),
                    "default BLAS linears": (lambda: model.condition(metadata).cross_attn_cond,
                                             lambda: default_blas_linears(model.conditioner.conditioners["prompt"].text_encoder.model)),
                }, args.repeats)
                report("text + timing conditioning (T5, 128 tokens)", results, lines)
            if "vae" in parts:
                vae = model.autoencoder
                latents = torch.randn(1, 64, W.latent_frames(config, seconds), generator=torch.Generator().manual_seed(0))
                folded = load_model(files[family]["config"], files[family]["checkpoint"]).autoencoder
                fold_weight_norm(folded)
                vae16 = load_model(files[family]["config"], files[family]["checkpoint"], dtype="bfloat16").autoencoder
                mixed = load_model(files[family]["config"], files[family]["checkpoint"], matmul_dtype="bfloat16").autoencoder
                results = timed({
                    "optimised (fused Snake, fused residual tail, balanced windows of <= 256, im2col first conv)":
                        (lambda: vae.decode(latents), nothing),
                    "previous Snake": (lambda: vae.decode(latents), previous_snake),
                    "unfused residual tail": (lambda: vae.decode(latents), unfused_residual_tail),
                    "full-size windows of 256 (previous layout)": (lambda: vae.decode(latents), full_size_windows),
                    "direct convolutions": (lambda: vae.decode(latents), direct_convolutions),
                    "chunk 128 (previous default)": (lambda: vae.decode(latents, chunk_size=128), nothing),
                    "unchunked": (lambda: vae.decode(latents, chunked=False), nothing),
                    "weight norm folded": (lambda: folded.decode(latents), nothing),
                    "matmul_dtype=bfloat16 (opt-in)": (lambda: mixed.decode(latents), nothing),
                    "dtype=bfloat16 (whole model)": (lambda: vae16.decode(latents.bfloat16()), nothing),
                }, max(2, args.repeats // 2))
                report(f"{family} VAE decode, {latents.shape[-1]} latents ({seconds:g} s)", results, lines)
                del folded, vae16, mixed
            del model
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
