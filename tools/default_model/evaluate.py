"""Measure the bundled default model for its model card (issue 6's must-show list).

    python tools/default_model/evaluate.py --data /work/data/synth-v1 --out /tmp/eval

Parts (``--parts``, comma-separated; all by default):
  vae        reconstruction of the held-out clips through the VAE: multi-resolution STFT distance
             (lower is better) and SI-SDR in dB (higher is better), whole clips, mean over clips.
  timing     the paper's timing experiment (section 6.3): one generation per held-out prompt, the
             requested seconds_total spread evenly over [1 s, window], the end of the audio found by
             the energy-based silence detector (--threshold-db, -45 dBFS) against the request:
             table, PNG, MAE. Calibration: the same detector on the real held-out clips (padded
             to the window) and on their VAE reconstructions, against their true durations.
  clap       prompt adherence on those same generations (trimmed to the request): CLAP score of each
             clip with its own prompt against the shuffled (all other) prompts, and retrieval
             accuracy; the same numbers for the real held-out clips, as the ceiling.
  instrument for each melody instrument, "<genre> music with <instrument> melody ..., sparse"
             generated with several seeds; the CLAP zero-shot label among the instrument set
             (text "<instrument> melody") must be the prompted one; chance = 1 / instruments.
             The same classifier on the real single-instrument clips of the dataset calibrates it,
             and on their VAE reconstructions (the best audio this decoder can give); --probe-data
             adds the solo clips of more datasets (e.g. one made with --solo-fraction 1). Then the
             question in the decoder's domain: nearest-centroid classifiers (band energies; CLAP
             audio embeddings) fitted on those reconstructions, leave-one-out accuracy there as
             the ceiling, applied to the generations. And before the decoder: a linear classifier
             on latent statistics fitted on the training split's solo clips' latents, its accuracy
             on the held-out split's as the ceiling, applied to the generations' own latents.
  latent     where the timbre is lost, the encoder or the decoder: a small MLP fitted on the solo
             clips of the training split (--probe-data, else --data) predicts each frame's log
             spectrum (2048-point STFT, hop = one latent, up to 8 kHz) from five latent frames; its
             R^2 on the held-out solo clips is what the latents hold, against the R^2 of the same
             spectrum of the decoder's reconstruction (1 = exact, 0 = the mean spectrum).

Writes results.json, timing.png, timing.md, latent_probe.png, a report.md with every table, and generations/*.wav
(--keep-audio). Deterministic from --seed. The measurements themselves are the core's
(`stable_audio_core.evaluation`: timing, clap_score, classifiers, instruments, latent_probe);
this script runs them on the bundled model and writes the report.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stable_audio_core.audio.io import prepare_audio, read_audio, write_audio  # noqa: E402
from stable_audio_core.default_model import default_model_files  # noqa: E402
from stable_audio_core.evaluation.clap_score import ClapScorer, retrieval_accuracy, score_gap  # noqa: E402
from stable_audio_core.evaluation.classifiers import (band_features, label_accuracy,  # noqa: E402
                                                      latent_statistics, linear_classifier, most_taken_for,
                                                      nearest_centroid)
from stable_audio_core.evaluation.instruments import (MELODY_INSTRUMENTS, dataset_rows,  # noqa: E402
                                                      instrument_prompt, solo_clips, zero_shot)
from stable_audio_core.evaluation.latent_probe import encode_clip, latent_probe, reconstruct  # noqa: E402
from stable_audio_core.evaluation.timing import (markdown_table, measure_timing, plot_timing,  # noqa: E402
                                                 spread_durations, summarise)
from stable_audio_core.factory import load_model  # noqa: E402
from stable_audio_core.pipeline import generate  # noqa: E402
from stable_audio_core.audio.postprocess import detect_content_end  # noqa: E402
from stable_audio_core.training.losses import multiresolution_stft_distance, si_sdr  # noqa: E402

# The silence detector's level. The small VAE decodes the latents of digital silence to a floor of
# about -60 dBFS, so the detector sits above it (see the calibration rows of the report).
THRESHOLD_DB = -45.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluate_vae(model, rows: list[dict], data: Path) -> dict:
    """Whole held-out clips through the VAE (`reconstruct`) against the originals."""
    distances, ratios = [], []
    for row in rows:
        audio, rate = read_audio(data / row["path"])
        audio = prepare_audio(audio, rate, model.sample_rate, model.audio_channels)[0]
        decoded = reconstruct(model.autoencoder, audio)
        distances.append(multiresolution_stft_distance(decoded, audio))
        ratios.append(si_sdr(decoded, audio))
    return {"clips": len(rows), "seconds": sum(r["duration"] for r in rows),
            "stft_distance_mean": sum(distances) / len(distances),
            "si_sdr_db_mean": sum(ratios) / len(ratios),
            "si_sdr_db_median": float(torch.tensor(ratios).median()),
            "per_clip": [{"id": r["id"], "kind": r["kind"], "stft_distance": d, "si_sdr_db": s}
                         for r, d, s in zip(rows, distances, ratios)]}


def make_generator(model, steps: int, cfg_scale: float | None, window: int):
    """run(prompt, seconds_total, seed) -> (the whole window's audio Tensor[C, T], its latents Tensor[D, L])."""
    def run(prompt: str, seconds_total: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            result = generate(model, prompt, seconds_total=seconds_total, steps=steps, cfg_scale=cfg_scale,
                              seed=seed, sample_size=window, trim=False)
        return result.audio[0], result.latents[0]
    return run


def detector_calibration(model, rows: list[dict], data: Path, window: int, threshold_db: float) -> dict:
    """The detector on real clips zero-padded to the window, and on their VAE reconstructions: its
    own error when the true end is known."""
    errors = {"real clips": [], "VAE reconstructions": []}
    for row in rows:
        audio = prepare_audio(*read_audio(data / row["path"]), model.sample_rate, model.audio_channels)[0]
        padded = torch.nn.functional.pad(audio, (0, window - audio.shape[-1]))
        with torch.inference_mode():
            decoded = model.autoencoder.decode(model.autoencoder.encode(padded[None]))[0]
        for name, clip in (("real clips", padded), ("VAE reconstructions", decoded)):
            errors[name].append(detect_content_end(clip, model.sample_rate, threshold_db=threshold_db) - row["duration"])
    return {name: {"count": len(e), "mae_s": sum(abs(x) for x in e) / len(e), "mean_error_s": sum(e) / len(e)}
            for name, e in errors.items()}


def evaluate_timing(run, rows: list[dict], sample_rate: int, window_seconds: float, seed: int,
                    out: Path, keep_audio: bool, threshold_db: float) -> tuple[dict, list[tuple[str, torch.Tensor]]]:
    """The timing experiment (`measure_timing`) on the held-out prompts, each with its own requested
    length; also returns each (prompt, generation trimmed to the request) for the CLAP part."""
    prompts = [row["description"] for row in rows]
    durations = spread_durations(len(prompts), 1.0, round(window_seconds - 0.05, 1))
    random.Random(seed).shuffle(durations)   # no link between a prompt and its requested length
    windows = []
    started = time.time()

    def generate_window(prompt: str, seconds_total: float, item_seed: int) -> tuple[torch.Tensor, int]:
        audio, _ = run(prompt, seconds_total, item_seed)
        if keep_audio:
            write_audio(out / "generations" / f"timing-{len(windows):03d}.wav", audio, sample_rate)
        windows.append(audio)
        return audio, sample_rate

    def progress(done: int, total: int) -> None:
        log(f"timing {done}/{total}: asked {durations[done - 1]:.1f} s ({time.time() - started:.0f} s)")

    timing_rows = measure_timing(generate_window, prompts, durations, seed=seed, threshold_db=threshold_db,
                                 progress=progress)
    trimmed = [(row.prompt, audio[:, : int(round(row.requested * sample_rate))])
               for row, audio in zip(timing_rows, windows)]
    summary = summarise(timing_rows)
    plot_timing(timing_rows, out / "timing.png",
                title=f"Timing accuracy, default model (MAE {summary.mean_absolute_error:.2f} s, n={summary.count})")
    table = markdown_table(summary)
    by_threshold = {}
    for level in (-55.0, -50.0, -45.0, -40.0, -35.0):
        ends = [detect_content_end(a, sample_rate, threshold_db=level) for a in windows]
        by_threshold[str(level)] = sum(abs(e - r.requested) for e, r in zip(ends, timing_rows)) / len(ends)
    (out / "timing.md").write_text(table + "\n")
    return ({"count": summary.count, "mae_s": summary.mean_absolute_error,
             "median_abs_error_s": summary.median_absolute_error, "mean_error_s": summary.mean_error,
             "bins": summary.bins, "table": table, "threshold_db": threshold_db, "mae_s_by_threshold_db": by_threshold,
             "rows": [r.as_dict() for r in timing_rows]}, trimmed)


def adherence(scorer: ClapScorer, prompts: list[str], clips: list[torch.Tensor], sample_rate: int) -> dict:
    text = scorer.text_embeddings(prompts)
    audio = scorer.audio_embeddings(clips, sample_rate)
    return {"count": len(prompts), **score_gap(text, audio),
            **{f"retrieval_top1_{k}": v for k, v in retrieval_accuracy(text, audio, k=1).items()},
            **{f"retrieval_top5_{k}": v for k, v in retrieval_accuracy(text, audio, k=5).items()},
            "chance_top1": 1 / len(prompts), "chance_top5": min(5, len(prompts)) / len(prompts)}


def evaluate_instruments(run, model, scorer: ClapScorer, sample_rate: int, seeds_per: int, seed: int,
                         data: Path, out: Path, keep_audio: bool, probe_data: list[Path] = (),
                         probe_limit: int | None = None) -> dict:
    clips, latents, labels, prompts = [], [], [], []
    frames = 6 * sample_rate // model.autoencoder.downsampling_ratio
    started = time.time()
    for i, name in enumerate(MELODY_INSTRUMENTS):
        for j in range(seeds_per):
            prompt = instrument_prompt(name, j)
            audio, window_latents = run(prompt, 6.0, seed + 1000 + i * seeds_per + j)
            audio = audio[:, : 6 * sample_rate]
            clips.append(audio)
            latents.append(window_latents[:, :frames])
            labels.append(name)
            prompts.append(prompt)
            if keep_audio:
                write_audio(out / "generations" / f"instrument-{name.replace(' ', '_')}-{j}.wav", audio, sample_rate)
        log(f"instruments {i + 1}/{len(MELODY_INSTRUMENTS)} ({time.time() - started:.0f} s)")
    generated_embeddings = scorer.audio_embeddings(clips, sample_rate)
    generated = zero_shot(scorer, generated_embeddings, labels, MELODY_INSTRUMENTS)
    generated["prompts"] = prompts
    # Calibration: the same classifier on real single-instrument clips with a melody part, and on
    # their VAE reconstructions (the best any generation through this decoder can sound).
    real_clips, real_labels = solo_clips([data, *probe_data], sample_rate, probe_limit)
    reconstructions = []
    for index, audio in enumerate(real_clips):
        reconstructions.append(reconstruct(model.autoencoder, audio))
        if (index + 1) % 100 == 0:
            log(f"reconstructions {index + 1}/{len(real_clips)}")
    reconstructed_embeddings = scorer.audio_embeddings(reconstructions, sample_rate)
    real = zero_shot(scorer, scorer.audio_embeddings(real_clips, sample_rate), real_labels, MELODY_INSTRUMENTS)
    reconstructed = zero_shot(scorer, reconstructed_embeddings, real_labels, MELODY_INSTRUMENTS)
    # A check in the decoder's own domain: nearest-centroid classifiers fitted on the
    # reconstructions (leave-one-out accuracy there is the ceiling), applied to the generations.
    probes = {}
    for name, fitted_on, applied_to in (
            ("band energies", band_features(reconstructions, sample_rate), band_features(clips, sample_rate)),
            ("CLAP audio embeddings", reconstructed_embeddings, generated_embeddings)):
        ceiling, predicted = nearest_centroid(fitted_on, real_labels, applied_to, MELODY_INSTRUMENTS)
        scored = label_accuracy(predicted, labels, MELODY_INSTRUMENTS)
        probes[name] = {"reconstructions_leave_one_out": ceiling, "generated": scored["accuracy"],
                        "per_instrument": scored["per_instrument"], "predicted": predicted}
    strip = ("predicted", "labels")
    return {"generated": generated, "real_clips": {k: v for k, v in real.items() if k not in strip},
            "vae_reconstructions": {k: v for k, v in reconstructed.items() if k not in strip},
            "decoder_domain_probe": probes,
            "latent_domain_probe": latent_instrument_probe(model.autoencoder, [data, *probe_data], probe_limit,
                                                           latents, labels, sample_rate, seed)}


def latent_instrument_probe(autoencoder, datasets: list[Path], probe_limit: int | None,
                            generated: list[torch.Tensor], labels: list[str], sample_rate: int, seed: int) -> dict:
    """The question before the decoder: a linear classifier on latent statistics, fitted on the
    latents of the real single-instrument clips of the training split, scored on the held-out
    split's (the ceiling) and applied to the generations' own latents."""
    def features(split: str, limit: int | None) -> tuple[torch.Tensor, list[str]]:
        clips, names = solo_clips(datasets, sample_rate, limit, splits=(split,))
        return torch.stack([latent_statistics(encode_clip(autoencoder, clip)) for clip in clips]), names

    train, train_labels = features("train", probe_limit)
    test, test_labels = features("held_out", None)
    predict = linear_classifier(train, train_labels, MELODY_INSTRUMENTS, seed)
    held_out = label_accuracy(predict(test), test_labels, MELODY_INSTRUMENTS)
    predicted = predict(torch.stack([latent_statistics(z) for z in generated]))
    scored = label_accuracy(predicted, labels, MELODY_INSTRUMENTS)
    return {"predicted": predicted,
            "train_clips": len(train_labels), "held_out_clips": len(test_labels),
            "held_out_accuracy": held_out["accuracy"], "generated": scored["accuracy"],
            "per_instrument": scored["per_instrument"], "held_out_per_instrument": held_out["per_instrument"]}


def report(results: dict) -> str:
    lines = ["# Default model evaluation", ""]
    if "vae" in results:
        v = results["vae"]
        lines += ["## VAE reconstruction (held-out clips)", "",
                  f"{v['clips']} clips, {v['seconds']:.0f} s: multi-resolution STFT distance "
                  f"**{v['stft_distance_mean']:.3f}**, SI-SDR **{v['si_sdr_db_mean']:.2f} dB** "
                  f"(median {v['si_sdr_db_median']:.2f} dB).", ""]
    if "timing" in results:
        t = results["timing"]
        lines += ["## Timing accuracy", "", f"{t['count']} generations, silence threshold {t['threshold_db']:.0f} dB: "
                  f"mean absolute error **{t['mae_s']:.2f} s** (median {t['median_abs_error_s']:.2f} s, "
                  f"mean signed error {t['mean_error_s']:+.2f} s).", "", t["table"], "", "![timing](timing.png)", ""]
        lines += ["Mean absolute error at other detector levels (same generations): " + ", ".join(
            f"{float(k):.0f} dB: {v:.2f} s" for k, v in t["mae_s_by_threshold_db"].items()) + ".", ""]
        if "calibration" in t:
            lines += ["The detector itself, on audio whose end is known (held-out clips, zero-padded to the window):", "",
                      "| audio | clips | mean abs error (s) | mean error (s) |", "|---|---|---|---|"]
            for name, c in t["calibration"].items():
                lines.append(f"| {name} | {c['count']} | {c['mae_s']:.2f} | {c['mean_error_s']:+.2f} |")
            lines.append("")
    if "clap" in results:
        lines += ["## Prompt adherence (CLAP)", "",
                  "| audio | n | matched | shuffled | gap | top-1 text→audio | top-1 audio→text | top-5 text→audio | chance top-1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, c in results["clap"].items():
            lines.append(f"| {name} | {c['count']} | {c['matched']:.3f} | {c['mismatched']:.3f} | "
                         f"**{c['gap']:+.3f}** | {c['retrieval_top1_text_to_audio']:.2f} | "
                         f"{c['retrieval_top1_audio_to_text']:.2f} | {c['retrieval_top5_text_to_audio']:.2f} | "
                         f"{c['chance_top1']:.3f} |")
        lines.append("")
    if "instrument" in results:
        i = results["instrument"]
        g, r = i["generated"], i["real_clips"]
        v = i.get("vae_reconstructions")
        lines += ["## Instrument named in the prompt (CLAP zero-shot)", "",
                  f"Generated: **{g['accuracy']:.2f}** accuracy over {g['count']} clips "
                  f"(chance {g['chance']:.3f}); real single-instrument clips: {r['accuracy']:.2f} over {r['count']}"
                  + (f"; their VAE reconstructions: {v['accuracy']:.2f}" if v else "") + ".", "",
                  "| instrument | generated | real clips |" + (" VAE reconstructions |" if v else ""),
                  "|---|---|---|" + ("---|" if v else "")]
        fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        for name in MELODY_INSTRUMENTS:
            row = f"| {name} | {fmt(g['per_instrument'][name])} | {fmt(r['per_instrument'][name])} |"
            lines.append(row + (f" {fmt(v['per_instrument'][name])} |" if v else ""))
        lines.append("")
        if "decoder_domain_probe" in i:
            lines += ["### The same question in the decoder's domain", "",
                      "Nearest-centroid classifiers fitted on the VAE reconstructions of the real single-instrument "
                      "clips (leave-one-out accuracy there is the ceiling for audio from this decoder), applied to "
                      f"the {g['count']} generations (chance {g['chance']:.3f}):", "",
                      "| features | reconstructions (leave-one-out) | generated |", "|---|---|---|"]
            for name, probe in i["decoder_domain_probe"].items():
                lines.append(f"| {name} | {probe['reconstructions_leave_one_out']:.2f} | **{probe['generated']:.2f}** |")
            lines.append("")
        if "latent_domain_probe" in i:
            p = i["latent_domain_probe"]
            lines += ["### The same question before the decoder", "",
                      "A linear classifier on each clip's latent statistics (per-channel mean and spread over time), "
                      f"fitted on the latents of {p['train_clips']} real single-instrument training clips, scored on "
                      f"the {p['held_out_clips']} held-out ones (the ceiling) and applied to the latents the "
                      f"diffusion model generated for the {g['count']} prompts (chance {g['chance']:.3f}): held-out "
                      f"real clips **{p['held_out_accuracy']:.2f}**, generated **{p['generated']:.2f}**.", "",
                      "| instrument | generated latents | most often classed as | held-out real latents |",
                      "|---|---|---|---|"]
            for name in MELODY_INSTRUMENTS:
                taken = most_taken_for(p["predicted"], g["labels"], name) if "predicted" in p else "-"
                lines.append(f"| {name} | {fmt(p['per_instrument'][name])} | {taken} | "
                             f"{fmt(p['held_out_per_instrument'][name])} |")
            lines.append("")
    if "latent" in results:
        p = results["latent"]
        lines += ["## Where the timbre is lost: latents against decoder", "",
                  f"Log spectrum (2048-point STFT, one frame per latent, up to 8 kHz) of {p['test_clips']} held-out "
                  f"solo clips ({p['test_frames']} frames), R^2 against the real one (1 = exact, 0 = the mean "
                  f"spectrum):", "", "| from | R^2 |", "|---|---|",
                  f"| an MLP probe on five latent frames (fitted on {p['train_clips']} training clips) | "
                  f"**{p['latents_r2']:.2f}** |",
                  f"| the decoder's reconstruction | **{p['decoder_r2']:.2f}** |", "",
                  "![latent probe](latent_probe.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the rendered dataset (tools/make_dataset.py)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the bundled default model")
    parser.add_argument("--parts", default="vae,timing,clap,instrument,latent")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's sampling_defaults")
    parser.add_argument("--cfg-scale", type=float, default=None)
    parser.add_argument("--threshold-db", type=float, default=THRESHOLD_DB, help="silence detector level (dBFS)")
    parser.add_argument("--seeds-per-instrument", type=int, default=5)
    parser.add_argument("--probe-data", type=Path, action="append", default=[],
                        help="more datasets whose single-instrument melody clips calibrate the instrument "
                             "check and fit the decoder-domain probe (repeatable; --data always counts)")
    parser.add_argument("--probe-limit", type=int, default=None,
                        help="at most this many calibration clips per instrument (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep-audio", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="only the first N held-out clips (quick checks)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generations").mkdir(exist_ok=True)
    files = default_model_files(args.model_dir)
    model = load_model(files.config, files.checkpoint, text_encoder=files.text_encoder)
    scorer = ClapScorer.from_folder(files.text_encoder)
    held_out = dataset_rows(args.data, "held_out")[: args.limit]
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["settings"] = {"steps": args.steps, "cfg_scale": args.cfg_scale, "seed": args.seed,
                           "held_out_clips": len(held_out), "threads": torch.get_num_threads()}
    sr = model.sample_rate
    window = model.config.sample_size
    run = make_generator(model, args.steps, args.cfg_scale, window)
    if "vae" in parts:
        log("VAE reconstruction ...")
        results["vae"] = evaluate_vae(model, held_out, args.data)
    if "timing" in parts or "clap" in parts:
        results["timing"], trimmed = evaluate_timing(run, held_out, sr, window / sr, args.seed, args.out,
                                                     args.keep_audio, args.threshold_db)
        results["timing"]["calibration"] = detector_calibration(model, held_out, args.data, window, args.threshold_db)
        prompts = [p for p, _ in trimmed]
        real = [prepare_audio(*read_audio(args.data / row["path"]), sr, 2)[0] for row in held_out]
        results["clap"] = {"generated (held-out prompts)": adherence(scorer, prompts, [a for _, a in trimmed], sr),
                           "real held-out clips": adherence(scorer, prompts, real, sr)}
    if "latent" in parts:
        log("latent probe ...")
        solo = [*args.probe_data] or [args.data]
        train, _ = solo_clips(solo, sr, args.probe_limit, splits=("train",))
        test, _ = solo_clips(solo, sr, None, splits=("held_out",))
        results["latent"] = latent_probe(model.autoencoder, train, test, args.seed, plot_to=args.out / "latent_probe.png")
    if "instrument" in parts:
        results["instrument"] = evaluate_instruments(run, model, scorer, sr, args.seeds_per_instrument, args.seed,
                                                     args.data, args.out, args.keep_audio, args.probe_data,
                                                     args.probe_limit)
    results_path.write_text(json.dumps(results, indent=1))
    (args.out / "report.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
