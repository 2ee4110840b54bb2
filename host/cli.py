"""The `stable-audio-toolkit` command: generate audio from text, run workflows, check parity with the reference,
train models (`train`, `encode-latents`), evaluate generations (`eval`)."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path


def sanitize_filename(text: str, limit: int = 60) -> str:
    """A safe file stem from free text: letters, digits, '-', '_' only; never empty."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:limit]
    return stem or "audio"


def output_paths(output: str | None, prompt: str, seeds: list[int], fmt: str) -> list[Path]:
    """One path per batch item. A directory (or nothing) gets generated names inside it."""
    if output and Path(output).suffix:
        target = Path(output)
        if len(seeds) == 1:
            return [target]
        return [target.with_name(f"{target.stem}_{i}{target.suffix}") for i in range(len(seeds))]
    folder = Path(output or "output")
    stem = sanitize_filename(prompt or "audio")
    return [folder / f"{stem}_{seed}{'_' + str(i) if len(seeds) > 1 else ''}.{fmt}"
            for i, seed in enumerate(seeds)]


def _progress_callback(total: int):
    from tqdm import tqdm
    bar = tqdm(total=total, unit="step", desc="sampling", file=sys.stderr)

    def callback(info: dict) -> None:
        bar.update(1)
        if info.get("i", 0) + 1 >= total:
            bar.close()
    return callback


def generation_settings(args: argparse.Namespace, settings) -> dict:
    """What `generate` was run with, the model's defaults filled in (saved in FLAC outputs);
    `settings` is the request's pipeline.SamplingSettings."""
    return {"model": args.checkpoint or "bundled default model", "config": args.config,
            "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "seconds_start": args.seconds_start, "seconds_total": args.seconds, "steps": settings.steps,
            "cfg_scale": settings.cfg_scale, "cfg_rescale": args.cfg_rescale, "sampler": settings.sampler,
            "schedule": args.schedule, "sigma_min": args.sigma_min, "sigma_max": args.sigma_max,
            "seed_per_item": args.seed_per_item, "batch_size": args.batch, "window_seconds": args.window,
            "init_audio": args.init_audio, "init_noise_level": args.init_noise_level,
            "loras": args.lora, "inpaint": args.inpaint, "apg_scale": args.apg_scale}


def parse_lora(text: str) -> tuple[str, float]:
    """'FILE' or 'FILE:STRENGTH' -> (file, strength); a ':' inside the path is kept (Windows drives)."""
    path, _, strength = text.rpartition(":")
    if path and not Path(text).exists():
        try:
            return path, float(strength)
        except ValueError:
            pass
    return text, 1.0


def parse_range(text: str, duration: float | None) -> tuple[float, float]:
    """'START:END' seconds, or 'START:' up to `duration` (extending a clip to --seconds)."""
    from stable_audio_core.errors import InputError

    start, sep, end = text.partition(":")
    try:
        low = float(start)
        high = float(end) if end.strip() else duration
    except ValueError:
        low = high = None
    if not sep or high is None or low is None or not 0 <= low < high:
        raise InputError(f"--inpaint takes START:END seconds with 0 <= START < END (or START: up to "
                         f"--seconds), got {text!r}")
    return low, high


def sa3_request(args: argparse.Namespace) -> dict:
    """Stable Audio 3 arguments checked before any work: generate's duration / inpaint / apg_scale,
    and the (file, strength) LoRAs."""
    from stable_audio_core.config import load_model_config
    from stable_audio_core.errors import InputError

    is_sa3 = bool(args.config) and load_model_config(args.config).family == "sa3"
    asked = [flag for flag, value in (("--lora", args.lora), ("--inpaint", args.inpaint),
                                      ("--apg-scale", args.apg_scale)) if value]
    if asked and not is_sa3:
        raise InputError(f"{', '.join(asked)} serve Stable Audio 3 models (a --config of the sa3 family)")
    if not is_sa3:
        return {}
    loras = [parse_lora(item) for item in args.lora or []]
    missing = [path for path, _ in loras if not Path(path).is_file()]
    if missing:
        raise InputError(f"LoRA file(s) not found: {missing}")
    if args.inpaint and not args.init_audio:
        raise InputError("--inpaint regenerates part of --init-audio; give the source with --init-audio")
    if args.seconds is None and not args.init_audio:
        raise InputError("Stable Audio 3 models need --seconds (the duration to generate)")
    regions = [parse_range(item, args.seconds) for item in args.inpaint or []] or None
    return {"loras": loras, "inpaint": regions, "apg_scale": 1.0 if args.apg_scale is None else args.apg_scale}


def _read_sa3_source(path: str, model) -> tuple[int, "torch.Tensor"]:
    """(rate, Tensor[C, T]) of an SA3 init/inpaint source, read no further than the model's longest
    generation (the pipeline resamples it the reference's way)."""
    from stable_audio_core.audio.io import audio_info, read_audio

    _, rate = audio_info(path)
    longest = math.ceil(model.config.sample_size / model.sample_rate * rate)
    audio, rate = read_audio(path, 0, longest)
    return rate, audio


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from stable_audio_core.audio.io import read_audio_window, write_audio
    from stable_audio_core.audio.tags import TAGGED_FORMATS
    from stable_audio_core.factory import load_model
    from stable_audio_core.pipeline import generate, resolve_sampling, window_length

    from .arguments import check_generate, claim_output, output_format, window_warning

    check_generate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    sa3_args = sa3_request(args)
    started = time.time()
    if args.config:
        model = load_model(args.config, args.checkpoint, text_encoder=args.text_encoder,
                           device=args.device, dtype=args.dtype, text_encoder_dtype=args.text_encoder_dtype,
                           precision=args.precision)
    else:   # no model named: the one that ships with the package
        from stable_audio_core.default_model import load_default_model
        model = load_default_model(device=args.device, dtype=args.dtype, precision=args.precision)
    if sa3_args.get("loras"):
        from stable_audio_core.lora import load_loras
        load_loras(model, sa3_args.pop("loras"))
    sa3_args.pop("loras", None)
    print(f"loaded model in {time.time() - started:.1f} s (precision {model.precision})", file=sys.stderr)
    settings = resolve_sampling(model, steps=args.steps, cfg_scale=args.cfg_scale,
                                sampler=args.sampler)
    sample_size = int(args.window * model.sample_rate) if args.window is not None else None
    warning = window_warning(args.window, args.seconds_start, args.seconds,
                             model.config.sample_size / model.sample_rate)
    if warning:
        print(warning, file=sys.stderr)
    init_audio = None
    if args.init_audio and sa3_args:   # SA3: the source at its own rate, as far as the model can reach
        init_audio = _read_sa3_source(args.init_audio, model)
        if args.seconds is None:   # its length unless --seconds says more
            args.seconds = init_audio[1].shape[-1] / init_audio[0]
    elif args.init_audio:   # only the part of the file the window holds is read
        length = window_length(model, sample_size)
        init_audio = (model.sample_rate, read_audio_window(args.init_audio, 0, length, model.sample_rate))
    started = time.time()
    result = generate(
        model, args.prompt, negative_prompt=args.negative_prompt,
        seconds_start=args.seconds_start, seconds_total=args.seconds, steps=settings.steps,
        cfg_scale=settings.cfg_scale, cfg_rescale=args.cfg_rescale, sampler=settings.sampler,
        schedule=args.schedule, sigma_min=args.sigma_min, sigma_max=args.sigma_max,
        seed=args.seed, seed_per_item=args.seed_per_item, batch_size=args.batch,
        sample_size=sample_size, init_audio=init_audio, init_noise_level=args.init_noise_level,
        callback=_progress_callback(settings.steps), **sa3_args,
    )
    print(f"generated in {time.time() - started:.1f} s", file=sys.stderr)
    fmt = output_format(args)
    tags = generation_settings(args, settings)
    for path, audio, seed in zip(output_paths(args.output, args.prompt, result.seeds, fmt),
                                 result.audio, result.seeds):
        path, claim = claim_output(path, bool(args.output and Path(args.output).suffix), args.overwrite)
        # the file carries the prompt and what reproduces it, written with the audio
        file_tags = {"DESCRIPTION": args.prompt, "stable_audio_settings": json.dumps({**tags, "seed": seed})}
        write_audio(path, audio, result.sample_rate, fmt,
                    tags=file_tags if fmt in TAGGED_FORMATS else None, **claim)
        seconds = audio.shape[-1] / result.sample_rate
        print(f"{path}  ({seconds:.2f} s, {audio.shape[0]} ch, {result.sample_rate} Hz, seed {seed})")
    return 0


def cmd_merge_lora(args: argparse.Namespace) -> int:
    """Load the SA3 checkpoint, apply the LoRAs, fold them in and write the whole model."""
    import torch

    from stable_audio_core.config import load_model_config
    from stable_audio_core.checkpoint import read_state_dict
    from stable_audio_core.factory import build_model, load_weights
    from stable_audio_core.lora import load_loras
    from stable_audio_core.training.export import save_merged_checkpoint

    if load_model_config(args.config).family != "sa3":
        print("error: merge-lora folds stable-audio-3 LoRAs into Stable Audio 3 models; --config is not one",
              file=sys.stderr)
        return 2
    loras = [parse_lora(item) for item in args.lora]
    missing = [path for path, _ in loras if not Path(path).is_file()]
    if missing:
        print(f"error: LoRA file(s) not found: {missing}", file=sys.stderr)
        return 2
    if Path(args.output).suffix != ".safetensors":
        print("error: --output must be a .safetensors file", file=sys.stderr)
        return 2
    # Built and loaded without the text encoder: it is not part of the checkpoint.
    model = build_model(args.config)
    source = read_state_dict(args.checkpoint)
    load_weights(model, source, str(args.checkpoint))
    load_loras(model, loras)
    # "stored": each tensor in the dtype the input checkpoint holds it in (a bfloat16 release
    # stays a bfloat16 file); the LoRAs are folded in float32 first.
    dtypes = ({key: value.dtype for key, value in source.items()} if args.dtype == "stored"
              else getattr(torch, args.dtype))
    del source
    print(save_merged_checkpoint(model, args.output, dtypes=dtypes))
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    import torch

    from stable_audio_core.evaluation.parity import run_parity

    torch.set_num_threads(args.threads or torch.get_num_threads())
    failed = 0
    for fixture in args.fixtures:
        print(f"# {fixture}")
        for report in run_parity(fixture):
            print(report.line())
            failed += not report.ok
    print("parity: " + ("FAILED, " + str(failed) + " tensor(s) over tolerance" if failed else "all tensors within tolerance"))
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .executor import NodeExecutionError, WorkflowInvalid
    from .runtime import Folders, Interrupted
    from .session import Session
    from .workflow import WorkflowFileError

    from .arguments import check_device, check_output_folder, check_threads

    check_threads(args.threads)
    check_device(args.device, allow_auto=True)
    check_output_folder(Path(args.output))
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    folders = Folders(models=Path(args.models), input=Path(args.input), output=Path(args.output))
    try:
        session = Session(folders, device=args.device, show_progress=not args.quiet, pack_folder=args.pack)
        started = time.time()

        def announce(node_id: str, class_type: str, index: int, total: int) -> None:
            if not args.quiet:
                name = session.pack.display_names.get(class_type, class_type)
                print(f"[{index}/{total}] node {node_id}: {name}", file=sys.stderr)

        result = session.run_file(args.workflow, args.set, on_node=announce)
    except WorkflowInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (WorkflowFileError, NodeExecutionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, WorkflowFileError) else 1
    except Interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    for path in session.saved_files(result):
        print(path)
    print(f"ran {len(result.executed)} node(s) in {time.time() - started:.1f} s", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server import FrontendMissing, ServerFolders, serve
    except ImportError as exc:
        print(f"error: `serve` needs the ui extra ({exc.name} is missing): pip install -e '.[ui]'", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    folders = ServerFolders(models=Path(args.models), input=Path(args.input), output=Path(args.output),
                            user=Path(args.user))
    try:
        serve(folders, listen=args.listen, port=args.port, token=args.token, device=args.device,
              max_upload_mb=args.max_upload_mb)
    except FrontendMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stable_audio_core.acceleration import PRECISIONS
    from stable_audio_core.audio.io import WRITE_FORMATS
    from stable_audio_core.sampling.loop import SCHEDULE_NAMES, sampler_names

    parser = argparse.ArgumentParser(prog="stable-audio-toolkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text (and duration) to a stereo audio file")
    g.add_argument("prompt", help="what to generate, e.g. 'warm piano chords, 90 BPM'")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--seconds", "--seconds-total", dest="seconds", type=float, default=None,
                   help="requested duration (seconds_total); default: the whole window")
    g.add_argument("--seconds-start", type=float, default=0.0)
    g.add_argument("--window", type=float, default=None,
                   help="generation window in seconds, at most 3600 (default: the model's sample_size)")
    g.add_argument("--steps", type=int, default=None, help="1..10000; default: the model's (SAO 1.0: 100; SA3: 8)")
    g.add_argument("--cfg-scale", type=float, default=None, help="default: the model's (SAO 1.0: 7; SA3: 1)")
    g.add_argument("--cfg-rescale", type=float, default=None,
                   help="CFG rescale phi in [0, 1] (default: the model's; paper U-Net 0.4, DiT 0)")
    g.add_argument("--sampler", choices=sampler_names(), default=None, help="default: the model's")
    g.add_argument("--schedule", choices=SCHEDULE_NAMES, default="polyexponential")
    g.add_argument("--sigma-min", type=float, default=None)
    g.add_argument("--sigma-max", type=float, default=None)
    g.add_argument("--seed", type=int, default=-1, help="0..2**64-2, or -1: random (printed)")
    g.add_argument("--batch", type=int, default=1, help="1..64")
    g.add_argument("--seed-per-item", action="store_true",
                   help="item i uses seed+i (reproducible alone) instead of one seed for the batch")
    g.add_argument("--init-audio", default=None, help="audio file to start from (audio-to-audio)")
    g.add_argument("--init-noise-level", type=float, default=None)
    g.add_argument("--inpaint", action="append", default=None, metavar="START:END",
                   help="Stable Audio 3: regenerate START..END seconds of --init-audio, keep the rest "
                        "(repeatable); a range past the source's end, or START: up to --seconds, extends it")
    g.add_argument("--lora", action="append", default=None, metavar="FILE[:STRENGTH]",
                   help="Stable Audio 3: a stable-audio-3 LoRA file at a strength (default 1); repeat to stack")
    g.add_argument("--apg-scale", type=float, default=None,
                   help="Stable Audio 3 with --cfg-scale above 1: 1 = APG (default), 0 = plain CFG")
    g.add_argument("--output", "-o", default=None, help="file or folder (default: ./output/)")
    g.add_argument("--format", choices=list(WRITE_FORMATS), default=None,
                   help="opus is written at 48 kHz; all but wav carry the prompt and settings as tags")
    g.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    g.add_argument("--config", default=None,
                   help="stable-audio-tools model_config.json (default: the bundled default model)")
    g.add_argument("--checkpoint", default=None, help="model .safetensors (or a training run folder)")
    g.add_argument("--text-encoder", default=None,
                   help="local Hugging Face T5 folder, or T5Gemma (t5gemma-b-b-ul2) for Stable Audio 3")
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    g.add_argument("--text-encoder-dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="T5 precision (default: --dtype; the reference runs T5 in float16)")
    g.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="CPU matmul path of a float32 model: fp32 (equal to the reference), bf16 "
                        "(bfloat16 matmuls), int8 (int8 linears), auto (chosen from what the CPU has; "
                        "tolerances in benchmarks/README.md)")
    g.add_argument("--threads", type=int, default=None)
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="run a ComfyUI workflow (UI or API format) without ComfyUI")
    r.add_argument("workflow", help="workflow .json (saved from ComfyUI, or from workflows/)")
    r.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override an input; NODE is a node id, title or class (repeatable), "
                        "e.g. --set Sampler.seed=42 --set 'T5 Encode.positive=rain on a roof'")
    r.add_argument("--models", default="models", help="folder with checkpoints/ and text_encoders/")
    r.add_argument("--input", default="input", help="folder LoadAudio reads from")
    r.add_argument("--output", default="output", help="folder SaveAudio writes to")
    r.add_argument("--device", default="auto", help="what 'auto' devices mean: cpu, cuda, ...")
    r.add_argument("--pack", default=None, help="node pack folder (default: this repository)")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="the ComfyUI frontend in a browser, running this pack (no ComfyUI needed)")
    s.add_argument("--listen", default="127.0.0.1", help="address to bind (default: this machine only)")
    s.add_argument("--port", type=int, default=8188)
    s.add_argument("--token", default=None, help="access token every request must carry (open the "
                                                 "printed URL once); use it when listening beyond 127.0.0.1")
    s.add_argument("--models", default="models", help="folder with checkpoints/ and text_encoders/")
    s.add_argument("--input", default="input", help="folder for uploads and LoadAudio")
    s.add_argument("--output", default="output", help="folder SaveAudio writes to")
    s.add_argument("--user", default="user", help="folder for settings and saved workflows")
    s.add_argument("--max-upload-mb", type=float, default=100)
    s.add_argument("--device", default="auto", help="what 'auto' devices mean: cpu, cuda, ...")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("merge-lora", help="fold Stable Audio 3 LoRAs into a plain checkpoint")
    m.add_argument("--config", required=True, help="the SA3 model_config.json")
    m.add_argument("--checkpoint", required=True, help="the SA3 model .safetensors")
    m.add_argument("--lora", action="append", required=True, metavar="FILE[:STRENGTH]",
                   help="a stable-audio-3 LoRA file at a strength (default 1); repeat to stack")
    m.add_argument("--output", "-o", required=True, help="the merged .safetensors to write")
    m.add_argument("--dtype", choices=("stored", "float32", "bfloat16", "float16"), default="stored",
                   help="dtype of the written tensors: 'stored' keeps each one's dtype in --checkpoint "
                        "(default), or one dtype for all (the LoRAs are folded in float32 either way)")
    m.set_defaults(func=cmd_merge_lora)

    p = sub.add_parser("parity", help="recompute reference fixtures and report max abs errors")
    p.add_argument("fixtures", nargs="+", help="PATH/NAME of fixtures (NAME.json, NAME.*.safetensors)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_parity)

    from .train_cli import add_encode_parser, add_train_parser
    add_train_parser(sub)
    add_encode_parser(sub)
    from .eval_cli import add_eval_parser
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from stable_audio_core.acceleration import request_huge_pages
    from stable_audio_core.atomic_files import Terminated, install_termination_handler
    from stable_audio_core.errors import StableAudioError

    install_termination_handler()   # SIGTERM cleans up like Ctrl-C: no partial file is left
    try:
        request_huge_pages()  # before any large tensor: torch reads the setting once
        args = build_parser().parse_args(argv)
        return args.func(args)
    except StableAudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except (MemoryError, RuntimeError) as exc:
        from .arguments import out_of_memory_message
        message = out_of_memory_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
