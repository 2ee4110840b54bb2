"""`stable-audio eval`: FD_openl3, KL_passt, CLAP score and timing of a folder of generations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="FD_openl3, KL_passt, CLAP score and timing (stable-audio-metrics' settings)")
    e.add_argument("--generated", required=True, help="folder of generated audio (file names are the ids)")
    e.add_argument("--reference", default=None,
                   help="folder of reference audio (same names for KL_passt), or a reference .npz saved earlier")
    e.add_argument("--prompts", default=None,
                   help="JSON: {file name without extension: prompt} or {name: {prompt, seconds_total}}")
    e.add_argument("--metrics", default="fd_openl3,kl_passt,clap,timing", help="comma-separated")
    e.add_argument("--openl3-weights", default=None,
                   help="openl3_audio_mel256_music.h5 (or _env.h5, from the openl3 package) or torchopenl3's .pth.tar")
    e.add_argument("--passt-weights", default=None, help="passt-s-f128-p16-s10-ap.476-swa.pt")
    e.add_argument("--clap", default=None,
                   help="local Hugging Face CLAP folder (laion/clap-htsat-fused) or laion_clap's "
                        "630k-audioset-fusion-best.pt")
    e.add_argument("--clap-tokenizer", default=None,
                   help="with a .pt CLAP file: roberta-base's tokenizer.json (or a folder holding it)")
    e.add_argument("--openl3-hop", type=float, default=0.5)
    e.add_argument("--clap-seed", type=int, default=0, help="seed of the fusion crops (the reference's are random)")
    e.add_argument("--output", "-o", default="eval", help="folder for report.json, report.md, distributions.png")
    e.add_argument("--save-reference", default=None, help="write the reference statistics here (.npz)")
    e.add_argument("--no-cache", action="store_true", help="do not cache embeddings under OUTPUT/cache")
    e.add_argument("--device", default="cpu")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)


def _require(path: str | None, flag: str, metric: str) -> str:
    from stable_audio_core.errors import InputError
    if not path:
        raise InputError(f"{metric} needs {flag} (a local weight file; nothing is downloaded)")
    return path


def cmd_eval(args: argparse.Namespace) -> int:
    from stable_audio_core.errors import InputError
    from stable_audio_core.evaluation import suite

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(suite.METRICS))
    if unknown:
        raise InputError(f"unknown metrics {unknown}; choose from {', '.join(suite.METRICS)}")
    suite.audio_files(args.generated)  # bad folders fail before any weights load
    prompts = suite.read_prompts(args.prompts) if args.prompts else None
    evaluators = suite.Evaluators(openl3_hop=args.openl3_hop, clap_seed=args.clap_seed)
    tags = []
    if "fd_openl3" in metrics:
        from stable_audio_core.evaluation.openl3 import load_openl3
        path = _require(args.openl3_weights, "--openl3-weights", "fd_openl3")
        evaluators.openl3 = load_openl3(path, args.device)
        tags.append(f"openl3={Path(path).resolve()}:{Path(path).stat().st_mtime_ns}")
    if "kl_passt" in metrics:
        from stable_audio_core.evaluation.passt import load_passt
        path = _require(args.passt_weights, "--passt-weights", "kl_passt")
        evaluators.passt = load_passt(path, args.device)
        tags.append(f"passt={Path(path).resolve()}:{Path(path).stat().st_mtime_ns}")
    if "clap" in metrics:
        from stable_audio_core.evaluation.clap_score import ClapScorer
        evaluators.clap = ClapScorer.load(_require(args.clap, "--clap", "clap"), args.clap_tokenizer,
                                          device=args.device)
    evaluators.tag = ";".join(tags)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    result, stats = suite.evaluate(args.generated, args.reference, metrics, evaluators, prompts,
                                   cache_dir=None if args.no_cache else output / "cache",
                                   show_progress=not args.quiet)
    if args.save_reference and stats:
        print(f"reference statistics: {suite.save_reference_stats(stats, args.save_reference)}", file=sys.stderr)
    report = {"generated": str(args.generated), "reference": args.reference, "metrics": result.metrics,
              "counts": result.counts, "per_file": result.per_file,
              "settings": {"openl3_hop": args.openl3_hop, "clap_seed": args.clap_seed,
                           "openl3_weights": args.openl3_weights, "passt_weights": args.passt_weights,
                           "clap": args.clap}}
    (output / "report.json").write_text(json.dumps(report, indent=2))
    (output / "report.md").write_text(suite.markdown_report(result))
    plot = suite.plot_distributions(result, output / "distributions.png")
    print(suite.markdown_report(result))
    print(f"wrote {output / 'report.json'}, {output / 'report.md'}" + (f", {plot}" if plot else ""), file=sys.stderr)
    return 0
