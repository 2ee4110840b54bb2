"""Accuracy and time of each CPU precision path (load_model(precision=...)) against float32.

    python benchmarks/precision.py [--families sao,unet,bundled] [--paths bf16,int8]
                                   [--seconds 10] [--steps 20] [--threads 2] [--out FILE.md]

Families: the benchmark harness's reduced-size random-weight SAO 1.0 and paper U-Net models
(benchmarks/harness/workloads.py, written by run.py or here) and the bundled model. For each,
one process loads the model once per path and generates the same request (deterministic
dpmpp-2m, CFG 7, fixed seed) after a 2-step warm-up; every path is compared with the fp32 run:
max abs and relative (max abs / fp32 peak) error of the latents and of the decoded audio, and
the multi-resolution STFT distance of the audio (training/losses.multiresolution_stft_distance).
Times are one run each (wall and process CPU): on a shared machine read them as rough ratios.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "harness"), str(HERE), str(HERE.parent)]

import workloads as W  # noqa: E402

PATHS = ("fp32", "bf16", "int8")
# Each family's backbone type (what `auto` decides on): the SAO DiT, the paper's U-Net, and the
# bundled model, a small U-Net.
BACKBONES = {"sao": "dit", "unet": "adp_cfg_1d", "bundled": "adp_cfg_1d"}


def harness_files(workdir: Path) -> dict:
    """The reduced-size SAO / U-Net checkpoints and T5 folder of benchmarks/run.py."""
    from run import prepare_files

    from stable_audio_core.models.autoencoder import DECODER_TYPES
    return prepare_files(workdir / "reduced", "reduced", "dac" if "dac" in DECODER_TYPES else "oobleck", [])


def loader(family: str, files: dict):
    """family -> load(precision) -> model."""
    from stable_audio_core.factory import load_model

    if family == "bundled":
        from stable_audio_core.default_model import load_default_model
        return lambda precision: load_default_model(precision=precision)
    entry = files[family]
    return lambda precision: load_model(entry["config"], entry["checkpoint"], text_encoder=files["t5"],
                                        precision=precision)


def measure(family: str, files: dict, paths: list[str], seconds: float, steps: int) -> list[dict]:
    from stable_audio_core.pipeline import generate
    from stable_audio_core.training.losses import multiresolution_stft_distance

    load = loader(family, files)
    request = dict(seconds_start=0, seconds_total=seconds, cfg_scale=W.CFG_SCALE, sampler=W.AGREEMENT_SAMPLER,
                   seed=W.SEED, trim=False)
    rows, reference = [], None
    for path in ["fp32"] + [p for p in paths if p != "fp32"]:
        model = load(path)
        if family == "bundled":
            window = model.config.sample_size
        else:
            window = W.window_samples(model.config.raw, seconds)
        generate(model, W.PROMPT, steps=2, sample_size=window, **request)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        result = generate(model, W.PROMPT, steps=steps, sample_size=window, **request)
        row = {"family": family, "path": path, "chosen": model.precision,
               "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        if reference is None:
            reference = result
        else:
            for name in ("latents", "audio"):
                ours, want = getattr(result, name), getattr(reference, name)
                row[name] = float((ours - want).abs().max())
                row[name + "_rel"] = row[name] / float(want.abs().max())
            row["stft"] = multiresolution_stft_distance(result.audio[0], reference.audio[0])
        rows.append(row)
        print(format_row(row, rows[0]), flush=True)
        del model, result
    return rows


def format_row(row: dict, fp32: dict) -> str:
    errors = ("(reference)", "", "", "", "") if "audio" not in row else (
        f"{row['latents']:.2e}", f"{row['latents_rel']:.2%}", f"{row['audio']:.2e}", f"{row['audio_rel']:.2%}",
        f"{row['stft']:.4f}")
    cells = [row["family"], row["path"], *errors, f"{row['wall']:.1f}", f"{row['cpu']:.1f}",
             f"{fp32['cpu'] / row['cpu']:.2f}x"]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| family | path | latents max abs | latents rel | audio max abs | audio rel | STFT distance "
          "| wall s | CPU s | fp32 / path CPU |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="sao,unet,bundled")
    parser.add_argument("--paths", default="bf16,int8", help="compared with fp32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sa-bench"))
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()

    import torch

    from run import cpu_model, matmul_roofline
    from stable_audio_core.acceleration import auto_precision, cpu_capability

    torch.set_num_threads(args.threads)
    families = args.families.split(",")
    paths = args.paths.split(",")
    files = harness_files(args.workdir) if {"sao", "unet"} & set(families) else {}
    capability = cpu_capability()
    picks = ", ".join(f"{family} {auto_precision(capability, BACKBONES[family])}" for family in families)
    lines = [f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_model()} ({os.cpu_count()} cores "
             f"visible, {args.threads} threads); features: {capability.describe()}; auto picks: {picks}",
             f"- fp32 matmul roofline: {matmul_roofline(args.threads):.0f} GFLOP/s (torch.mm 4096^3); load "
             f"average at start {os.getloadavg()[0]:.1f}",
             f"- Request: {args.seconds:g} s, {args.steps} steps {W.AGREEMENT_SAMPLER}, CFG {W.CFG_SCALE:g}, "
             f"seed {W.SEED}; one timed run per path after a 2-step warm-up", "", HEADER]
    print("\n".join(lines), flush=True)
    rows = []
    for family in families:
        rows += measure(family, files, paths, args.seconds, args.steps)
    fp32 = {row["family"]: row for row in rows if row["path"] == "fp32"}
    lines += [format_row(row, fp32[row["family"]]) for row in rows]
    lines.append(f"- Load average at end {os.getloadavg()[0]:.1f}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
