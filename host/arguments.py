"""Command-line values checked before any work starts (loading a model, sampling, writing).

Each check raises InputError naming the option, the value and what is accepted; the ranges that
need no model are the core's own (`pipeline.check_request`, `pipeline.resolve_seed`), so the
command line, the nodes and the Python API refuse the same values.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stable_audio_core.audio.io import WRITE_FORMATS
from stable_audio_core.errors import InputError

MAX_WINDOW_SECONDS = 3600.0   # the Empty Latent Audio node's maximum


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be 1 or more (leave it out for PyTorch's default), got {threads}")


def check_device(name: str, allow_auto: bool = False) -> None:
    """A device this PyTorch build can use: cpu, cuda[:N] with a visible GPU, mps where present."""
    import torch
    if allow_auto and name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "sees no CUDA GPU"
            raise InputError(f"--device {name}: this PyTorch build {build}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: only cpu, cuda and mps are supported")


def check_generate(args: argparse.Namespace) -> None:
    """Every `generate` option that can be checked without the model."""
    from stable_audio_core.audio.io import audio_info
    from stable_audio_core.pipeline import check_request, resolve_seed

    if args.config and not args.checkpoint:
        raise InputError("--config needs its --checkpoint (a config alone would sample from random "
                         "weights); without either, the bundled default model is used")
    if args.checkpoint and not args.config:
        raise InputError("--checkpoint needs its --config model_config.json (without either, the "
                         "bundled default model is used)")
    for option, value in (("--config", args.config), ("--checkpoint", args.checkpoint),
                          ("--text-encoder", args.text_encoder)):
        if value and not Path(value).exists():
            raise InputError(f"{option} {value} does not exist")
    check_threads(args.threads)
    check_device(args.device)
    check_request(steps=args.steps, cfg_scale=args.cfg_scale, cfg_rescale=args.cfg_rescale,
                  sigma_min=args.sigma_min, sigma_max=args.sigma_max, batch_size=args.batch,
                  seconds_start=args.seconds_start, seconds_total=args.seconds,
                  init_noise_level=args.init_noise_level)
    resolve_seed(args.seed, args.batch, args.seed_per_item)
    if args.window is not None and not 0 < args.window <= MAX_WINDOW_SECONDS:
        raise InputError(f"--window must be in (0, {MAX_WINDOW_SECONDS:g}] seconds, got {args.window}")
    if args.init_audio:
        audio_info(args.init_audio)   # exists and decodes, before the model loads
    output_format(args)
    for path in planned_files(args):
        check_output_file(path, args.overwrite)
    if not is_file_target(args.output):
        check_output_folder(Path(args.output or "output"))


def window_warning(window: float | None, seconds_start: float, seconds: float | None,
                   model_window: float) -> str | None:
    """A warning when --window makes the run far longer than the audio asked for needs."""
    if window is None or window <= model_window:
        return None
    needed = seconds_start + (seconds or 0.0)
    if seconds is not None and window <= 2 * max(needed, model_window):
        return None
    return (f"warning: --window {window:g} s is {window / model_window:.1f}x the model's "
            f"{model_window:.1f} s window" + (f" for {seconds:g} s of audio" if seconds else "")
            + f"; sampling takes at least {window / model_window:.1f}x as long (attention grows "
            "faster than the window). Drop --window or lower it if this is not intended.")


def output_format(args: argparse.Namespace) -> str:
    """The format to write: --format, else the -o file's extension, else wav; they must agree."""
    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else ""
    if suffix and suffix not in WRITE_FORMATS:
        raise InputError(f"-o {args.output}: unknown audio extension '.{suffix}'; use one of "
                         f"{['.' + f for f in WRITE_FORMATS]} or give a folder")
    if suffix and args.format and args.format != suffix:
        raise InputError(f"-o {args.output} names a .{suffix} file but --format is {args.format}; "
                         f"drop --format or name the file .{args.format}")
    return args.format or suffix or "wav"


def is_file_target(output: str | None) -> bool:
    """-o names a file (it has an extension) rather than a folder."""
    return bool(output) and bool(Path(output).suffix)


def planned_files(args: argparse.Namespace) -> list[Path]:
    """The files -o names (empty when it names a folder: those names are claimed when written)."""
    if not is_file_target(args.output):
        return []
    target = Path(args.output)
    if args.batch == 1:
        return [target]
    return [target.with_name(f"{target.stem}_{i}{target.suffix}") for i in range(args.batch)]


def check_output_file(path: Path, overwrite: bool) -> None:
    """`path` can be created (or, with overwrite, replaced) in a writable folder."""
    if path.is_dir():
        raise InputError(f"-o {path} is an existing folder; name a file inside it or another path")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise InputError(f"-o {path} exists and is not a regular file; choose another path")
        if not overwrite:
            raise InputError(f"-o {path} already exists; pass --overwrite to replace it")
    check_output_folder(path.parent)


def check_output_folder(folder: Path) -> None:
    """`folder` is, or can be created as, a folder this process may write in."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write into {folder}: {existing} exists and is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {folder}: no permission to create files in {existing}")


def claim_output(path: Path, named_by_user: bool, overwrite: bool) -> tuple[Path, dict]:
    """(path, write_audio options): a file -o named is replaced only with --overwrite; a generated
    name in a folder is never replaced: a taken one gets '-1', '-2', ... appended."""
    if named_by_user:
        return path, {"overwrite": overwrite}
    from stable_audio_core.atomic_files import reserve_numbered
    claimed = reserve_numbered(path.parent, lambda n: path.name if n == 0 else f"{path.stem}-{n}{path.suffix}", 0)
    return claimed, {"reserved": True}


def out_of_memory_message(exc: BaseException) -> str | None:
    """What to do when the work ran out of memory (None when `exc` is another error)."""
    text = str(exc)
    if not isinstance(exc, MemoryError) and "out of memory" not in text.lower() \
            and "not enough memory" not in text.lower():
        return None
    return ("out of memory; lower --batch or --window, or use --dtype float16/bfloat16 on a GPU "
            f"({type(exc).__name__}: {text.splitlines()[0][:200] if text else 'no details'})")
