"""What each of our speed-ups buys: the same work with one acceleration switched off at a time.

    python benchmarks/ablation.py [--quick] [--threads 2] [--out FILE.md]

Every acceleration is a module swap of `acceleration.prepare_for_inference`; a variant is the
same checkpoint loaded with some swaps left out (`load_model(accelerations=...)`), so nothing is
patched. See benchmarks/README.md for the method and the switches, RESULTS.md for measurements.
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

import workloads as W  # noqa: E402

# prepare_for_inference's switches: everything the plain model runs without.
NO_SWAPS = {"onednn_linear": False, "onednn_conv": False, "cached_snake": False, "fused_residual": False}


def _files(workdir: Path) -> dict:
    from run import prepare_files  # noqa: E402  (the orchestrator's cached files)

    return prepare_files(workdir / "reduced", "reduced", "dac", [10.0])


@contextmanager
def nothing():
    yield


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

    from stable_audio_core.acceleration import request_huge_pages
    from stable_audio_core.factory import load_model

    request_huge_pages()  # as the CLI does: before the first large tensor
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

            def load(text_encoder=None, **options):
                return load_model(files[family]["config"], files[family]["checkpoint"], text_encoder=text_encoder,
                                  **options)

            model = load(files["t5"])
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
                plain = load(files["t5"], accelerations=NO_SWAPS)
                run_plain = lambda: generate(plain, W.PROMPT, steps=steps, sample_size=samples, seed=1, trim=False,
                                             sigma_min=W.SIGMA_MIN, sigma_max=W.SIGMA_MAX).audio
                results = timed({"optimised (float32)": (run, nothing),
                                 "no swaps (plain model)": (run_plain, nothing)}, 1)
                del plain
                report(f"{family} end to end, {seconds:g} s, {steps} steps {W.SAMPLER}", results, lines)
            if ("dit" if family == "sao" else "unet") in parts:
                n = -(-frames // W.latent_multiple(config)) * W.latent_multiple(config)
                inputs = model.condition([{"prompt": W.PROMPT, "seconds_start": 0, "seconds_total": seconds}])
                x = torch.randn(1, 64, n, generator=torch.Generator().manual_seed(0))
                t = torch.tensor([W.DIFFUSION_TIME])
                variants = {"optimised (oneDNN linears, im2col convs, float32)": model,
                            "default BLAS linears": load(accelerations={"onednn_linear": False}),
                            "direct convolutions": load(accelerations={"onednn_conv": False}),
                            "matmul_dtype=bfloat16 (opt-in)": load(matmul_dtype="bfloat16")}
                calls = {name: (lambda m=m: m.model_fn(inputs, W.CFG_SCALE)(x, t), nothing)
                         for name, m in variants.items()}
                bf16 = load(dtype="bfloat16")
                inputs16 = inputs.to(torch.bfloat16)
                calls["dtype=bfloat16 (whole model)"] = (lambda: bf16.model_fn(inputs16, W.CFG_SCALE)(x, t), nothing)
                results = timed(calls, args.repeats)
                report(f"{family} backbone call, batch 2 (CFG), {n} frames", results, lines)
                del bf16, variants, calls
            if "t5" in parts and family == "sao":
                metadata = [{"prompt": W.PROMPT, "seconds_start": 0, "seconds_total": seconds}]
                blas = load(files["t5"], accelerations={"onednn_linear": False})
                results = timed({
                    "optimised": (lambda: model.condition(metadata).cross_attn_cond, nothing),
                    "default BLAS linears": (lambda: blas.condition(metadata).cross_attn_cond, nothing),
                }, args.repeats)
                del blas
                report("text + timing conditioning (T5, 128 tokens)", results, lines)
            if "vae" in parts:
                vae = model.autoencoder
                latents = torch.randn(1, 64, W.latent_frames(config, seconds), generator=torch.Generator().manual_seed(0))
                decoders = {
                    "optimised (cached Snake, fused residual tail, im2col convs)": vae,
                    "plain Snake": load(accelerations={"cached_snake": False}).autoencoder,
                    "unfused residual tail": load(accelerations={"fused_residual": False}).autoencoder,
                    "direct convolutions": load(accelerations={"onednn_conv": False}).autoencoder,
                    "no swaps (plain model)": load(accelerations=NO_SWAPS).autoencoder,
                    "weight norm folded": load(accelerations={"fold_weight_norm": True}).autoencoder,
                    "matmul_dtype=bfloat16 (opt-in)": load(matmul_dtype="bfloat16").autoencoder,
                }
                calls = {name: (lambda d=d: d.decode(latents), nothing) for name, d in decoders.items()}
                calls["chunk 128"] = (lambda: vae.decode(latents, chunk_size=128), nothing)
                calls["unchunked"] = (lambda: vae.decode(latents, chunked=False), nothing)
                vae16 = load(dtype="bfloat16").autoencoder
                calls["dtype=bfloat16 (whole model)"] = (lambda: vae16.decode(latents.bfloat16()), nothing)
                results = timed(calls, max(2, args.repeats // 2))
                report(f"{family} VAE decode, {latents.shape[-1]} latents ({seconds:g} s)", results, lines)
                del decoders, calls, vae16
            del model
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
