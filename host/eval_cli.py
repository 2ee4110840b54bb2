"""`stable-audio-toolkit eval`: FD_openl3, KL_passt, CLAP score and timing of a folder of generations."""

from __future__ import annotations

import argparse
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
    for metric, flag, path in (("fd_openl3", "--openl3-weights", args.openl3_weights),
                               ("kl_passt", "--passt-weights", args.passt_weights), ("clap", "--clap", args.clap)):
        if metric in metrics:
            _require(path, flag, metric)
    evaluators = suite.load_evaluators(metrics, args.openl3_weights, args.passt_weights, args.clap,
                                       args.clap_tokenizer, args.device, args.openl3_hop, args.clap_seed)
    output = Path(args.output)
    result, stats = suite.evaluate(args.generated, args.reference, metrics, evaluators, prompts,
                                   cache_dir=None if args.no_cache else output / "cache",
                                   show_progress=not args.quiet)
    if args.save_reference and stats:
        print(f"reference statistics: {suite.save_reference_stats(stats, args.save_reference)}", file=sys.stderr)
    settings = {"openl3_hop": args.openl3_hop, "clap_seed": args.clap_seed, "openl3_weights": args.openl3_weights,
                "passt_weights": args.passt_weights, "clap": args.clap}
    suite.write_reports(result, output, {"generated": str(args.generated), "reference": args.reference,
                                         "settings": settings})
    print(suite.markdown_report(result))
    print(f"wrote report.json, report.md (and distributions.png with matplotlib) in {output}", file=sys.stderr)
    return 0
