"""Training nodes: train the VAE, CLAP or the diffusion model into a run folder, and load the
result. Each calls `stable_audio_core.training.trainer.train` once with a task from
`training.builders`; progress and interruption go through the host's hooks, and an interrupted
run leaves a checkpoint that the same node resumes from."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from ...stable_audio_core.checkpoint import RUN_CONFIG_FILE, RUN_MODEL_FILE
from ...stable_audio_core.errors import InputError
from ...stable_audio_core.factory import load_model
from ...stable_audio_core.training.builders import build_task
from ...stable_audio_core.training.data import dataset_shape
from ...stable_audio_core.training.trainer import TrainerConfig, train
from .. import hooks
from ..datatypes import MODEL
from .common import (CATEGORY, DATASET, DEVICES, PATH, SEED_MAX, Control, clean_name, device_choice,
                     existing_path, json_widget, model_config_source, optional_path, output_folder)
from .dataset import dataset_spec

# TrainerConfig fields set by the widgets; the others may be given in trainer_options.
WIDGET_FIELDS = {"out_dir", "max_steps", "batch_size", "learning_rate", "checkpoint_every", "seed",
                 "mixed_precision", "device"}


def trainer_config(out_dir: Path, steps: int, batch_size: int, learning_rate: float, checkpoint_every: int,
                   seed: int, mixed_precision: str, device: str, trainer_options: str) -> TrainerConfig:
    extra = json_widget(trainer_options, "trainer_options")
    allowed = {f.name for f in dataclasses.fields(TrainerConfig)} - WIDGET_FIELDS
    unknown = sorted(set(extra) - allowed)
    if unknown:
        raise InputError(f"unknown trainer option(s) {unknown} (the widgets set {sorted(WIDGET_FIELDS)}); "
                         f"allowed: {sorted(allowed)}")
    return TrainerConfig(out_dir=out_dir, max_steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                         checkpoint_every=checkpoint_every, seed=seed, mixed_precision=mixed_precision,
                         device=device_choice(device), **extra)


class _TrainNode:
    """The inputs and the run every training node shares; subclasses add their own options."""

    KIND = ""
    CATEGORY = CATEGORY
    OUTPUT_NODE = True   # it writes checkpoints: a workflow runs it with nothing downstream
    RETURN_TYPES = (PATH, PATH)
    RETURN_NAMES = ("checkpoint", "model_config")
    OUTPUT_TOOLTIPS = ("Path of the newest checkpoint's model.safetensors (EMA weights where the "
                       "task keeps an EMA), in stable-audio-tools' layout.",
                       "Path of its model_config.json.")
    FUNCTION = "run"
    CONFIG_TOOLTIP = ("The model_config.json to train: a name in the checkpoints folder, "
                      "'bundled/<name>.json', an absolute path, or the JSON itself.")

    @classmethod
    def common_inputs(cls, steps: int, batch_size: int, learning_rate: float) -> dict:
        return {
            "dataset": (DATASET, {"tooltip": "From Training Dataset (or Pre-encode Latents)."}),
            "model_config": ("STRING", {"default": "", "tooltip": cls.CONFIG_TOOLTIP}),
            "run_name": ("STRING", {"default": f"training/{cls.KIND}", "tooltip":
                         "Run folder inside the output folder: checkpoints/, latest, log.jsonl, "
                         "loss.png, demos/."}),
            "steps": ("INT", {"default": steps, "min": 1, "max": 100_000_000, "tooltip":
                      "Optimizer steps in total (a resumed run continues up to this)."}),
            "batch_size": ("INT", {"default": batch_size, "min": 1, "max": 65536, "tooltip":
                           "Items per optimizer step."}),
            "learning_rate": ("FLOAT", {"default": learning_rate, "min": 0.0, "max": 1.0, "step": 1e-6,
                              "round": False, "tooltip": "AdamW learning rate."}),
            "checkpoint_every": ("INT", {"default": 1000, "min": 1, "max": 100_000_000, "tooltip":
                                 "Steps between checkpoints (one is also written at the end and "
                                 "when interrupted)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                     "Seed of the run: data order, crops, prompts, noise; keep it to resume."}),
            "resume": ("BOOLEAN", {"default": True, "tooltip":
                       "Continue from the run folder's latest checkpoint; off needs an empty folder."}),
            "mixed_precision": (["no", "bf16"], {"default": "no", "tooltip":
                                "bf16 autocast around the loss (GPUs with bfloat16)."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where training runs."}),
        }

    OPTIONAL_INPUTS = {
        "task_options": ("STRING", {"default": "{}", "multiline": True, "tooltip":
                         "More task options as JSON (see the task's builder), e.g. loss weights."}),
        "trainer_options": ("STRING", {"default": "{}", "multiline": True, "tooltip":
                            "More trainer options as JSON: accumulation, weight_decay, lr_schedule, "
                            "warmup_steps, grad_clip, ema_decay, keep_checkpoints, demo_every, "
                            "log_every, num_workers."}),
    }

    def task_options(self, **extra) -> dict[str, Any]:
        """Options the node's own widgets set (added over task_options)."""
        return {}

    def after_training(self, task, summary, out_dir: Path, **extra) -> tuple:
        """Anything to write once training finished (not after an interruption); returns the
        node's outputs beyond (checkpoint, model_config)."""
        return ()

    def run(self, dataset, model_config, run_name, steps, batch_size, learning_rate, checkpoint_every, seed,
            resume, mixed_precision, device, task_options="{}", trainer_options="{}", **extra):
        spec = dataset_spec(dataset)
        config_dict, config_path = model_config_source(model_config)
        source = config_dict if config_dict is not None else str(config_path)
        options = {"seed": seed, **json_widget(task_options, "task_options"), **self.task_options(**extra)}
        if spec.kind == "latents":
            if self.KIND != "diffusion":
                raise InputError(f"{self.KIND} training needs audio, not pre-encoded latents")
            options["latents"] = True
        out_dir = output_folder(run_name)
        config = trainer_config(out_dir, steps, batch_size, learning_rate, checkpoint_every, seed,
                                mixed_precision, device, trainer_options)
        task, data = self.build(source, config_dict, options, spec, extra)
        control = Control(steps)
        summary = train(task, data, config, resume=resume, should_stop=control.should_stop,
                        on_step=control.on_step)
        control.finish()
        if summary.checkpoint is None:
            raise InputError(f"training wrote no checkpoint in {out_dir}")
        more = self.after_training(task, summary, out_dir, **extra)
        return (str(summary.checkpoint / RUN_MODEL_FILE), str(summary.checkpoint / RUN_CONFIG_FILE), *more)

    def build(self, source, config_dict, options: dict, spec, extra: dict):
        task = build_task(self.KIND, source, options)
        return task, spec.build(*dataset_shape(task, config_dict))


class TrainVAE(_TrainNode):
    KIND = "vae"
    DESCRIPTION = ("Trains (or fine-tunes) the VAE of an autoencoder model_config.json: "
                   "multi-resolution STFT loss on mid/side and left/right with A-weighting, a "
                   "multi-scale STFT discriminator (hinge + feature matching) and KL, with the "
                   "paper's weights by default. Phase 2 freezes the encoder and fine-tunes the decoder.")
    CONFIG_TOOLTIP = ("An autoencoder model_config.json (model_type 'autoencoder'): a name in the "
                      "checkpoints folder, an absolute path, or the JSON itself.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **cls.common_inputs(steps=10000, batch_size=4, learning_rate=1e-4),
            "phase": ("INT", {"default": 1, "min": 1, "max": 2, "tooltip":
                      "1: train encoder and decoder; 2: freeze the encoder, fine-tune the decoder "
                      "(start from a phase-1 checkpoint)."}),
            "start_checkpoint": ("STRING", {"default": "", "tooltip":
                                 "Start weights (an autoencoder checkpoint); empty starts fresh."}),
        }, "optional": dict(cls.OPTIONAL_INPUTS)}

    def task_options(self, phase=1, start_checkpoint="", **_):
        options: dict[str, Any] = {"phase": phase}
        checkpoint = optional_path(start_checkpoint, "checkpoints", "start_checkpoint")
        if checkpoint:
            options["checkpoint"] = checkpoint
        return options


class TrainCLAP(_TrainNode):
    KIND = "clap"
    RETURN_TYPES = (PATH, PATH, PATH)
    RETURN_NAMES = ("checkpoint", "model_config", "clap_folder")
    OUTPUT_TOOLTIPS = _TrainNode.OUTPUT_TOOLTIPS + (
        "A Hugging Face CLAP folder (config.json, model.safetensors, tokenizer.json) of the trained "
        "model: the text_encoder of Train Diffusion.",)
    DESCRIPTION = ("Trains (or fine-tunes) a CLAP model's text and audio towers with the symmetric "
                   "contrastive loss and a learned temperature, on the dataset's audio and prompts. "
                   "Without a tokenizer one is trained on the dataset's captions.")
    CONFIG_TOOLTIP = ("A CLAP config.json (fresh weights) or a Hugging Face CLAP folder (fine-tune): a "
                      "name in the checkpoints folder, an absolute path, or the JSON itself.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **cls.common_inputs(steps=10000, batch_size=32, learning_rate=1e-4),
            "sample_rate": ("INT", {"default": 48000, "min": 1000, "max": 384000, "tooltip":
                            "Rate the audio is read at (CLAP's feature extractor expects 48000)."}),
            "window_seconds": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 3600.0, "step": 0.1, "tooltip":
                               "Window of audio per item (the Training Dataset's window_seconds, "
                               "when set, wins)."}),
            "tokenizer": ("STRING", {"default": "", "tooltip":
                          "A tokenizer.json (or folder holding one); empty: the CLAP folder's, or "
                          "one trained on the dataset's captions."}),
        }, "optional": dict(cls.OPTIONAL_INPUTS)}

    def build(self, source, config_dict, options: dict, spec, extra: dict):
        sample_rate = int(extra["sample_rate"])
        data = spec.build(sample_rate, max(1, round(extra["window_seconds"] * sample_rate)), 1)
        tokenizer = optional_path(extra.get("tokenizer", ""), "text_encoders", "tokenizer")
        options = {**options, "sample_rate": sample_rate}
        if tokenizer:
            options["tokenizer"] = tokenizer
        else:
            options.setdefault("dataset", data)
        return build_task(self.KIND, source, options), data

    def after_training(self, task, summary, out_dir, **extra):
        return (str(task.save_pretrained(out_dir / "clap")),)


class TrainDiffusion(_TrainNode):
    KIND = "diffusion"
    DESCRIPTION = ("Trains or fine-tunes the latent diffusion model of a diffusion_cond "
                   "model_config.json (DiT or the paper's U-Net): v-objective with the cosine schedule "
                   "(or rectified flow), 10% conditioning dropout for guidance, frozen text encoder, "
                   "EMA, optional LoRA merged back into a plain checkpoint. Trains from audio or from "
                   "Pre-encode Latents.")
    CONFIG_TOOLTIP = ("The diffusion model's model_config.json: a name in the checkpoints folder, "
                      "'bundled/<name>.json', an absolute path, or the JSON itself.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **cls.common_inputs(steps=10000, batch_size=8, learning_rate=5e-5),
            "pretransform_checkpoint": ("STRING", {"default": "", "tooltip":
                                        "VAE weights (Train VAE's checkpoint or a full model); "
                                        "empty when base_checkpoint holds the VAE."}),
            "text_encoder": ("STRING", {"default": "", "tooltip":
                             "The frozen T5 or CLAP folder (a name in text_encoders or an absolute "
                             "path, e.g. Train CLAP's clap_folder); empty when the model needs none."}),
            "base_checkpoint": ("STRING", {"default": "", "tooltip":
                                "Fine-tune from this full checkpoint (e.g. Stable Audio Open); empty "
                                "trains from fresh weights."}),
            "lora_rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip":
                          "Train LoRA adapters of this rank on attention and feed-forward "
                          "projections (merged into the exported checkpoint); 0 trains all weights."}),
            "export_name": ("STRING", {"default": "", "tooltip":
                            "Also copy the final checkpoint into the checkpoints folder as "
                            "<name>.safetensors + <name>.json, for Load Checkpoint; empty skips it."}),
        }, "optional": dict(cls.OPTIONAL_INPUTS)}

    def task_options(self, pretransform_checkpoint="", text_encoder="", base_checkpoint="", lora_rank=0, **_):
        options: dict[str, Any] = {}
        named = {"pretransform_checkpoint": optional_path(pretransform_checkpoint, "checkpoints",
                                                          "pretransform_checkpoint"),
                 "checkpoint": optional_path(base_checkpoint, "checkpoints", "base_checkpoint"),
                 "text_encoder": optional_path(text_encoder, "text_encoders", "text_encoder")}
        options.update({key: value for key, value in named.items() if value})
        if lora_rank:
            options["lora"] = {"rank": lora_rank, "alpha": lora_rank}
        return options

    def after_training(self, task, summary, out_dir, export_name="", **_):
        if not export_name.strip():
            return ()
        stem = clean_name(export_name)
        if not stem:
            raise InputError(f"export_name '{export_name}' is not a file name")
        folder = hooks.folder_paths("checkpoints")[0]
        folder.mkdir(parents=True, exist_ok=True)
        for source, suffix in ((RUN_MODEL_FILE, ".safetensors"), (RUN_CONFIG_FILE, ".json")):
            partial = folder / f".partial-{stem}{suffix}"
            shutil.copyfile(summary.checkpoint / source, partial)
            partial.replace(folder / f"{stem}{suffix}")
        return ()


class TrainLoadModel:
    DESCRIPTION = ("Loads a diffusion checkpoint that Train Diffusion wrote (its model.safetensors "
                   "path and the model_config.json beside it) for the sampler and the other Stable "
                   "Audio nodes, in the same run as the training.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The trained model, ready for the Stable Audio nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": ("STRING", {"default": "", "tooltip":
                           "Train Diffusion's checkpoint output (a model.safetensors path, or a "
                           "checkpoint folder), absolute or inside the output folder."}),
            "text_encoder": ("STRING", {"default": "", "tooltip":
                             "The T5 or CLAP folder the model was trained with (name in "
                             "text_encoders or absolute path); empty when none is needed."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where the model runs."}),
            "dtype": (["auto", "float32", "float16", "bfloat16"], {"default": "auto", "tooltip":
                      "Weight precision; 'auto' is float32 on the CPU and float16 on a GPU."}),
        }}

    def load(self, checkpoint, text_encoder, device, dtype):
        path = existing_path(checkpoint, "output", "checkpoint")
        if path.is_dir():
            path = path / RUN_MODEL_FILE
        config = path.parent / RUN_CONFIG_FILE
        if not path.is_file() or not config.is_file():
            raise InputError(f"{path.parent} holds no {RUN_MODEL_FILE} with a {RUN_CONFIG_FILE} beside it")
        device = device_choice(device)
        if dtype == "auto":
            dtype = "float32" if str(device).startswith("cpu") else "float16"
        encoder = optional_path(text_encoder, "text_encoders", "text_encoder")
        return (load_model(config, path, text_encoder=encoder, device=device, dtype=dtype),)
