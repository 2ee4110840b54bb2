"""`stable-audio-toolkit train` and `stable-audio-toolkit encode-latents`: the training pack from the command line.

    stable-audio-toolkit train diffusion --data songs/ --out runs/dit --config model_config.json \
        --pretransform-checkpoint vae.safetensors --text-encoder t5-base/ --steps 20000 --batch-size 16

Multi-process (one machine or several): the same command under torchrun, e.g.
`torchrun --nproc_per_node 4 -m stable_audio_host.cli train diffusion ...`; --batch-size stays
the global batch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

TASK_KINDS = ("vae", "clap", "diffusion")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE (VALUE as JSON or text), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_train_parser(sub) -> None:
    from stable_audio_core.training.lr_schedules import SCHEDULES as LR_SCHEDULES

    t = sub.add_parser("train", help="train or fine-tune a VAE, CLAP or diffusion model on a folder of audio",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("task", choices=TASK_KINDS, help="what to train")
    data = t.add_argument_group("data")
    data.add_argument("--data", default=None, help="folder of audio files (+ sidecar JSON or a manifest)")
    data.add_argument("--manifest", default=None, help="manifest .jsonl/.csv/.json (default: DATA/manifest.*)")
    data.add_argument("--split", default=None, help="use only this split of DATA/split.json, e.g. train")
    data.add_argument("--latents", default=None, action="append",
                      help="diffusion: train from latents made by `stable-audio-toolkit encode-latents` instead of --data; "
                           "repeat to train on several latent folders as one dataset")
    data.add_argument("--sample-rate", type=int, default=48000,
                      help="clap: rate the audio is read at (vae/diffusion: the model config's)")
    data.add_argument("--seconds", type=float, default=10.0,
                      help="clap: window length in seconds (vae/diffusion: the model config's sample_size)")
    t.add_argument("--out", required=True, help="run folder: checkpoints/, latest, log.jsonl, loss.png, demos/")
    t.add_argument("--config", required=True,
                   help="stable-audio-tools model_config.json (clap: a CLAP config .json or HF CLAP folder)")
    loop = t.add_argument_group("training loop")
    loop.add_argument("--steps", type=int, default=10000, help="optimizer steps in total (default 10000)")
    loop.add_argument("--batch-size", type=int, default=8, help="global batch per step, over all processes")
    loop.add_argument("--accumulation", type=int, default=1, help="micro-batches per process per step")
    loop.add_argument("--lr", type=float, default=1e-4)
    loop.add_argument("--weight-decay", type=float, default=1e-3)
    loop.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    loop.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up steps")
    loop.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables")
    loop.add_argument("--precision", choices=["no", "bf16"], default="no", help="bf16: autocast mixed precision")
    loop.add_argument("--ema-decay", type=float, default=0.999, help="0 disables the EMA")
    loop.add_argument("--checkpoint-every", type=int, default=1000)
    loop.add_argument("--keep-checkpoints", type=int, default=3, help="newest checkpoints kept; 0 keeps all")
    loop.add_argument("--demo-every", type=int, default=0, help="0: no demos")
    loop.add_argument("--log-every", type=int, default=10)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--workers", type=int, default=0, help="data loading processes")
    loop.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    loop.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                      help="continue from OUT's latest checkpoint (default); --no-resume needs an empty OUT")
    loop.add_argument("--threads", type=int, default=None)
    loop.add_argument("--quiet", action="store_true", help="no progress bar")
    task = t.add_argument_group("task options")
    task.add_argument("--init-checkpoint", default=None, help="start weights (fine-tuning, e.g. Stable Audio Open)")
    task.add_argument("--pretransform-checkpoint", default=None, help="diffusion: the VAE's weights")
    task.add_argument("--text-encoder", default=None, help="diffusion: local T5 / CLAP folder (frozen)")
    task.add_argument("--tokenizer", default=None, help="clap: tokenizer.json (default: trained on the captions)")
    task.add_argument("--lora-rank", type=int, default=None, help="diffusion: train LoRA adapters of this rank")
    task.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    task.add_argument("--phase", type=int, choices=[1, 2], default=None, help="vae: 2 freezes the encoder")
    task.add_argument("--option", action="append", default=[], type=_parse_option, metavar="KEY=VALUE",
                      help="any other task option (VALUE as JSON), e.g. --option cond_dropout=0.2 (repeatable)")
    t.set_defaults(func=cmd_train)


def add_encode_parser(sub) -> None:
    e = sub.add_parser("encode-latents", help="encode a folder of audio into latents once, for diffusion training")
    e.add_argument("--data", required=True)
    e.add_argument("--manifest", default=None)
    e.add_argument("--split", default=None)
    e.add_argument("--out", required=True, help="latents folder (shards + index.json)")
    e.add_argument("--config", required=True, help="the diffusion model's model_config.json (its pretransform)")
    e.add_argument("--checkpoint", required=True,
                   help="VAE weights: an autoencoder checkpoint or a full diffusion checkpoint")
    e.add_argument("--crops-per-file", type=int, default=1)
    e.add_argument("--latent-mode", choices=["mean", "sample"], default="mean")
    e.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_encode_latents)


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The builder options the command line set (unset ones keep the task's defaults)."""
    options: dict[str, Any] = {"seed": args.seed}
    named = {"checkpoint": args.init_checkpoint, "pretransform_checkpoint": args.pretransform_checkpoint,
             "text_encoder": args.text_encoder, "tokenizer": args.tokenizer, "phase": args.phase}
    options.update({key: value for key, value in named.items() if value is not None})
    if args.lora_rank is not None:
        options["lora"] = {"rank": args.lora_rank, "alpha": args.lora_alpha or args.lora_rank}
    if args.latents:
        options["latents"] = True
    options.update(dict(args.option))
    return options


def read_model_config(source: str) -> Any:
    """A JSON config file as a dict; a folder (an HF CLAP folder) is passed on as its path."""
    from stable_audio_core.errors import ConfigError
    path = Path(source)
    if path.is_dir():
        return str(path)
    if not path.is_file():
        raise ConfigError(f"model config not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def dataset_shape(args: argparse.Namespace, model_config: Any) -> tuple[int, int, int]:
    """(sample_rate, sample_size, audio_channels) of the training windows: the model config's for
    vae/diffusion; for clap the command line's (the task resamples to its own rate, in mono)."""
    from stable_audio_core.errors import ConfigError
    from stable_audio_core.training.data import dataset_shape as model_dataset_shape
    if args.task == "clap":
        return args.sample_rate, int(round(args.seconds * args.sample_rate)), 1
    if not isinstance(model_config, dict):
        raise ConfigError(f"{args.task} training needs a model_config.json file, not a folder")
    return model_dataset_shape(None, model_config)


def build_dataset(args: argparse.Namespace, model_config: Any):
    from stable_audio_core.errors import InputError
    if args.latents:
        if args.task != "diffusion":
            raise InputError("--latents is for diffusion training only")
        from stable_audio_core.training.latents import open_latents
        return open_latents(args.latents)
    if not args.data:
        raise InputError("pass --data FOLDER (or, for diffusion, --latents FOLDER)")
    from stable_audio_core.training.data import AudioFolderDataset
    sample_rate, sample_size, channels = dataset_shape(args, model_config)
    return AudioFolderDataset(args.data, sample_rate=sample_rate, sample_size=sample_size,
                              audio_channels=channels, manifest=args.manifest, split=args.split)


def trainer_config(args: argparse.Namespace):
    from stable_audio_core.training.trainer import TrainerConfig
    return TrainerConfig(
        out_dir=Path(args.out), max_steps=args.steps, batch_size=args.batch_size,
        accumulation=args.accumulation, learning_rate=args.lr, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, warmup_steps=args.warmup,
        grad_clip=args.grad_clip if args.grad_clip > 0 else None, mixed_precision=args.precision,
        ema_decay=args.ema_decay if args.ema_decay > 0 else None, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, demo_every=args.demo_every, log_every=args.log_every,
        seed=args.seed, num_workers=args.workers, device=args.device)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from stable_audio_core.training.builders import build_task
    from stable_audio_core.training.distributed import env_world
    from stable_audio_core.training.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    rank = env_world()[0]
    model_config = read_model_config(args.config)
    started = time.time()
    dataset = build_dataset(args, model_config)
    options = task_options(args)
    if args.task == "clap":   # its audio rate, and the captions a tokenizer is trained on when none is given
        options.update(sample_rate=dataset.sample_rate, dataset=dataset)
    task = build_task(args.task, model_config, options)
    config = trainer_config(args)
    if rank == 0:
        print(f"{args.task}: {len(dataset)} item(s), built in {time.time() - started:.1f} s; "
              f"writing to {config.out_dir}", file=sys.stderr)
    try:
        summary = train(task, dataset, config, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:   # the trainer saved a checkpoint first and said where
        return 130
    if rank == 0:
        where = summary.checkpoint or config.out_dir
        print(f"done: step {summary.step}; checkpoint {where} (model.safetensors + model_config.json)",
              file=sys.stderr)
    return 0


def cmd_encode_latents(args: argparse.Namespace) -> int:
    import torch

    from stable_audio_core.config import load_model_config
    from stable_audio_core.errors import ConfigError
    from stable_audio_core.acceleration import prepare_for_inference
    from stable_audio_core.factory import load_autoencoder
    from stable_audio_core.training.data import AudioFolderDataset
    from stable_audio_core.training.distributed import resolve_device
    from stable_audio_core.training.latents import encode_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_model_config(args.config)
    if config.pretransform is None:
        raise ConfigError(f"{args.config} has no model.pretransform: latents need the diffusion model's "
                          "config (its VAE and latent scale)")
    autoencoder = prepare_for_inference(load_autoencoder(config, args.checkpoint).to(resolve_device(args.device)))
    dataset = AudioFolderDataset(args.data, sample_rate=config.sample_rate, sample_size=config.sample_size,
                                 audio_channels=config.audio_channels, manifest=args.manifest, split=args.split)
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(dataset), unit="file", desc="encoding", file=sys.stderr)

    def on_progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    summary = encode_dataset(dataset, autoencoder, args.out, crops_per_file=args.crops_per_file,
                             latent_mode=args.latent_mode, seed=args.seed, batch_size=args.batch_size,
                             dtype=args.dtype, autoencoder_name=str(args.checkpoint), resume=args.resume,
                             on_progress=on_progress)
    if bar is not None:
        bar.close()
    state = "complete" if summary.complete else "incomplete: run the same command to continue"
    print(f"{summary.items} latent crop(s) of {summary.files_done}/{summary.files_total} file(s) in "
          f"{summary.out_dir} ({state}; {len(summary.skipped)} skipped)", file=sys.stderr)
    return 0 if summary.complete else 130
