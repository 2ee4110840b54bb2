"""Chunked VAE decode: peak memory, time and exactness against the unchunked decode.

For each length (seconds of 44.1 kHz stereo; L = ceil(seconds * 44100 / 2048) latents) a fresh
child process builds the Stable Audio Open 1.0 VAE (random weights, fixed seed, weight norm
folded), decodes the same random latents and reports its RSS high-water mark
(getrusage ru_maxrss) and the RSS just before the decode. The parent then compares the chunked
output with the unchunked one.

    python3 benchmarks/vae_chunked_decode.py                      # 10, 47, 95 s, full width
    python3 benchmarks/vae_chunked_decode.py --seconds 10 --channels 32
    python3 benchmarks/vae_chunked_decode.py --reference-python /tmp/sat-ref/bin/python

--reference-python also times stable-audio-tools' own chunked decode_audio (same weights, as it
runs by default: weight norm unfolded) as a peer. Times are CPU times on this machine; quote
absolute times only from a GPU. The default run takes about 8 minutes on 2 cores (the
unchunked 95 s decode needs about 10 GB); the peer adds about 7 more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100
RATIO = 2048
LATENT_DIM = 64


def sao_pretransform_config(channels: int) -> dict:
    """Stable Audio Open 1.0's model.pretransform, with the base width as a parameter."""
    shared = {"channels": channels, "c_mults": [1, 2, 4, 8, 16], "strides": [2, 4, 4, 8, 8],
              "use_snake": True}  # fmt: skip
    return {
        "type": "autoencoder",
        "iterate_batch": True,
        "config": {
            "encoder": {"type": "oobleck", "requires_grad": False,
                        "config": {"in_channels": 2, "latent_dim": 2 * LATENT_DIM, **shared}},
            "decoder": {"type": "oobleck",
                        "config": {"out_channels": 2, "latent_dim": LATENT_DIM,
                                   "final_tanh": False, **shared}},
            "bottleneck": {"type": "vae"},
            "latent_dim": LATENT_DIM,
            "downsampling_ratio": RATIO,
            "io_channels": 2,
        },
    }  # fmt: skip


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def latents_for(seconds: float) -> torch.Tensor:
    length = math.ceil(seconds * SAMPLE_RATE / RATIO)
    return torch.randn(1, LATENT_DIM, length, generator=torch.Generator().manual_seed(1))


# -- child processes -----------------------------------------------------------------------


def build_ours(args):
    sys.path.insert(0, str(REPO))
    from stable_audio_core.models.autoencoder import build_autoencoder
    from stable_audio_core.models.layers import fold_weight_norm

    model = build_autoencoder(sao_pretransform_config(args.channels), SAMPLE_RATE)
    model.load_state_dict(_load_weights(args.weights))
    fold_weight_norm(model)

    def decode(latents, chunked):
        return model.decode(latents, chunked=chunked, chunk_size=args.chunk_size,
                            overlap=args.overlap)  # fmt: skip

    return decode


def build_reference(args):
    from stable_audio_tools.models.factory import create_pretransform_from_config

    pretransform = create_pretransform_from_config(sao_pretransform_config(args.channels),
                                                   SAMPLE_RATE)  # fmt: skip
    pretransform.model.load_state_dict(_load_weights(args.weights))

    def decode(latents, chunked):
        return pretransform.model.decode_audio(latents, chunked=chunked,
                                               chunk_size=args.chunk_size, overlap=args.overlap)

    return decode


def _load_weights(path):
    from safetensors.torch import load_file

    return load_file(path)


def run_child(args) -> None:
    torch.set_num_threads(args.threads)
    decode = (build_reference if args.impl == "reference" else build_ours)(args)
    latents = latents_for(args.seconds[0])
    chunked = args.mode == "chunked"
    with torch.inference_mode():
        decode(latents[..., :8], chunked=False)  # warm-up: first-call setup is not decode time
        before = current_rss_mb()
        wall, cpu = [], []
        for _ in range(args.repeat):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            audio = decode(latents, chunked=chunked)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    np.save(args.out, audio.numpy())
    print(json.dumps({"wall_s": min(wall), "cpu_s": min(cpu), "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": before}))  # fmt: skip


# -- parent ------------------------------------------------------------------------------


def write_weights(channels: int, path: str) -> int:
    sys.path.insert(0, str(REPO))
    from safetensors.torch import save_file

    from stable_audio_core.models.autoencoder import build_autoencoder

    torch.manual_seed(0)
    model = build_autoencoder(sao_pretransform_config(channels), SAMPLE_RATE)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return sum(p.numel() for p in model.parameters())


def run_case(python, impl, mode, seconds, args, weights, workdir):
    out = os.path.join(workdir, f"{impl}-{mode}-{seconds}.npy")
    command = [python, __file__, "--child", "--impl", impl, "--mode", mode,
               "--seconds", str(seconds), "--channels", str(args.channels),
               "--chunk-size", str(args.chunk_size), "--overlap", str(args.overlap),
               "--threads", str(args.threads), "--repeat", str(args.repeat),
               "--weights", weights, "--out", out]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}, None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result, out


HEADER = (f"{'audio':>6} {'latents':>7} {'impl':>9} {'mode':>9} {'wall s':>7} {'CPU s':>7} "
          f"{'peak RSS MB':>11} {'RSS before':>10} {'decode +MB':>10} {'max|diff|':>10} "
          f"{'max|audio|':>10}")  # fmt: skip


def decode_mb(result: dict) -> float:
    return result["peak_rss_mb"] - result["rss_before_mb"]


def format_row(seconds, latents, impl, mode, result, diff, peak) -> str:
    diff_text = "n/a" if diff is None else f"{diff:.2e}"
    return (f"{seconds:>5g}s {latents:>7} {impl:>9} {mode:>9} {result['wall_s']:>7.1f} "
            f"{result['cpu_s']:>7.1f} {result['peak_rss_mb']:>11.0f} "
            f"{result['rss_before_mb']:>10.0f} "
            f"{decode_mb(result):>10.0f} {diff_text:>10} {peak:>10.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 47, 95])
    parser.add_argument("--channels", type=int, default=128, help="base width (SAO 1.0: 128)")
    parser.add_argument("--chunk-size", type=int, default=128, help="latents per window")
    parser.add_argument("--overlap", type=int, default=32, help="latents; half discarded per edge")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="decodes per case; min time kept")
    parser.add_argument("--max-unchunked-seconds", type=float, default=95,
                        help="skip the unchunked decode above this length (time/memory)")
    parser.add_argument("--reference-python", default=None,
                        help="python of a stable-audio-tools venv: also time its chunked decode")
    # child-process options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="chunked", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, python {platform.python_version()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        weights = os.path.join(workdir, "vae.safetensors")
        count = write_weights(args.channels, weights)
        print(f"Oobleck VAE, SAO 1.0 shape, width {args.channels}: {count:,} parameters; "
              f"chunk_size={args.chunk_size}, overlap={args.overlap} latents; float32 CPU\n")
        runs = [("ours", "chunked", sys.executable), ("ours", "unchunked", sys.executable)]
        if args.reference_python:
            runs.append(("reference", "chunked", args.reference_python))
        print(HEADER)
        print("-" * len(HEADER))
        for seconds in args.seconds:
            latents = math.ceil(seconds * SAMPLE_RATE / RATIO)
            results, paths = {}, {}
            for impl, mode, python in runs:
                if mode == "unchunked" and seconds > args.max_unchunked_seconds:
                    print(f"{seconds:>5g}s {latents:>7} {impl:>9} {mode:>9}  skipped "
                          "(--max-unchunked-seconds)")  # fmt: skip
                    continue
                result, path = run_case(python, impl, mode, seconds, args, weights, workdir)
                if path is None:
                    print(f"{seconds:>5g}s {latents:>7} {impl:>9} {mode:>9}  failed: "
                          f"{result['error']}")
                    continue
                results[impl, mode], paths[impl, mode] = result, path
            full = np.load(paths["ours", "unchunked"]) if ("ours", "unchunked") in paths else None
            for (impl, mode), result in results.items():
                audio = np.load(paths[impl, mode])
                diff = np.abs(audio - full).max() if full is not None else None
                print(format_row(seconds, latents, impl, mode, result, diff, np.abs(audio).max()))
            for path in paths.values():
                os.remove(path)
            ours, peer = results.get(("ours", "chunked")), results.get(("reference", "chunked"))
            if ours and peer:
                print(f"{'':>6} chunked, reference / ours: CPU time "
                      f"{peer['cpu_s'] / ours['cpu_s']:.2f}x, decode memory "
                      f"{decode_mb(peer) / decode_mb(ours):.2f}x")  # fmt: skip
    print("\nmax|diff|: against our unchunked decode of the same latents. decode +MB: peak RSS "
          "minus RSS just before the decode (the decode's own working memory, incl. output).")


if __name__ == "__main__":
    main()
