"""Dataset nodes: a folder of audio with metadata, and its pre-encoded latents."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ...stable_audio_core.errors import InputError
from ...stable_audio_core.acceleration import prepare_for_inference
from ...stable_audio_core.factory import load_autoencoder
from ...stable_audio_core.training.data import AudioFolderDataset
from ...stable_audio_core.training.latents import LatentDataset, encode_dataset
from ...stable_audio_core.training.prompts import PromptOptions
from .common import (CATEGORY, DATASET, DEVICES, SEED_MAX, Control, device_choice, existing_path,
                     model_config_source, output_folder)


@dataclass
class DatasetSpec:
    """The dataset a node chose. The sample rate, window and channel count come from the model
    being trained, so the training node builds the dataset (`build`)."""

    kind: str                          # "audio" (a folder of files) or "latents" (pre-encoded)
    root: Path
    manifest: Path | None = None
    split: str | None = None
    random_crop: bool = True
    on_error: str = "raise"
    prompt_options: PromptOptions | None = None
    window_seconds: float = 0.0        # 0: the model config's sample_size
    files: int = 0

    def build(self, sample_rate: int, sample_size: int, audio_channels: int):
        """An AudioFolderDataset (or LatentDataset) for a model of this rate, window and channels."""
        if self.kind == "latents":
            dataset = LatentDataset(self.root, prompt_options=self.prompt_options)
            if dataset.sample_rate != sample_rate or dataset.audio_channels != audio_channels:
                raise InputError(
                    f"the latents in {self.root} were encoded at {dataset.sample_rate} Hz, "
                    f"{dataset.audio_channels} channel(s); this model wants {sample_rate} Hz, "
                    f"{audio_channels}: encode the dataset again with this model's VAE"
                )
            return dataset
        if self.window_seconds > 0:
            sample_size = max(1, round(self.window_seconds * sample_rate))
        return AudioFolderDataset(
            self.root, sample_rate=sample_rate, sample_size=sample_size, audio_channels=audio_channels,
            manifest=self.manifest, random_crop=self.random_crop, prompt_options=self.prompt_options,
            split=self.split, on_error=self.on_error,
        )


def dataset_spec(value) -> DatasetSpec:
    if not isinstance(value, DatasetSpec):
        raise InputError(f"expected a Stable Audio training dataset, got {type(value).__name__}")
    return value


class TrainDataset:
    DESCRIPTION = ("A training dataset: a folder of audio files (WAV, FLAC, OGG, MP3) with their "
                   "metadata from a sidecar <name>.json beside each file or one manifest "
                   "(.jsonl/.csv/.json). Each item is a window of the model's length: long files are "
                   "cropped at a random point, short ones padded with silence; seconds_start and "
                   "seconds_total are recorded as the paper describes, and a prompt is built from a "
                   "random subset of the metadata fields (or the description).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET,)
    RETURN_NAMES = ("dataset",)
    OUTPUT_TOOLTIPS = ("The dataset recipe, for Pre-encode Latents or a Train node (which sets the "
                       "sample rate and window from its model config).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": ("STRING", {"default": "", "tooltip":
                       "The folder of audio files: a sub-folder of the input folder, or an absolute path."}),
            "manifest": ("STRING", {"default": "", "tooltip":
                         "A manifest (.jsonl, .csv or .json; a 'path' column names each file, relative "
                         "to the folder): a name in the folder or the input folder, or an absolute "
                         "path. Empty: the folder's manifest.jsonl/.csv/.json if present, else every "
                         "audio file with its sidecar JSON."}),
            "split": ("STRING", {"default": "", "tooltip":
                      "Use only the files listed under this name in the folder's split.json "
                      "(e.g. 'train'); empty uses every file."}),
            "random_crop": ("BOOLEAN", {"default": True, "tooltip":
                            "Crop long files at a random point (the paper); off takes their start."}),
            "skip_bad_files": ("BOOLEAN", {"default": False, "tooltip":
                               "Skip unreadable or missing files with a warning instead of stopping "
                               "with an error that names the file."}),
            "window_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01, "tooltip":
                               "Length of each training window; 0 uses the model config's sample_size."}),
            "prompt_fields": ("STRING", {"default": "instruments, genre, mood, bpm, key", "tooltip":
                              "Metadata fields prompts are built from (comma-separated)."}),
            "structured_probability": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "Chance of a structured prompt ('Instruments: Guitar "
                                                  "| Moods: Uplifting') rather than a free-form one "
                                                  "('Guitar, Uplifting')."}),
            "fields_instead_probability": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                           "tooltip": "Chance of a field prompt even when the file "
                                                      "has a free-text description (else the "
                                                      "description is used as it is)."}),
        }}

    def make(self, folder, manifest, split, random_crop, skip_bad_files, window_seconds, prompt_fields,
             structured_probability, fields_instead_probability):
        root = existing_path(folder, "input", "dataset folder")
        if not root.is_dir():
            raise InputError(f"dataset folder {root} is not a folder")
        fields = tuple(name.strip() for name in prompt_fields.split(",") if name.strip())
        manifest_path = None
        if manifest.strip():
            beside = root / manifest.strip()
            manifest_path = beside if beside.is_file() else existing_path(manifest, "input", "manifest")
        spec = DatasetSpec(
            kind="audio", root=root, manifest=manifest_path,
            split=split.strip() or None, random_crop=random_crop,
            on_error="skip" if skip_bad_files else "raise",
            prompt_options=PromptOptions(fields=fields, structured_probability=structured_probability,
                                         fields_instead_probability=fields_instead_probability),
            window_seconds=window_seconds,
        )
        # Scanning now reports a bad folder, manifest or split here rather than at training time.
        probe = spec.build(sample_rate=1, sample_size=1, audio_channels=1)
        return (replace(spec, files=len(probe)),)


class TrainPreEncode:
    DESCRIPTION = ("Encodes a dataset into latents once with a VAE (the posterior mean, or one "
                   "seeded draw), so diffusion training skips the VAE. Several random crops per file "
                   "keep crop variety; each crop keeps its seconds_start. Shards are written as it "
                   "goes: an interrupted run resumes where it stopped.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (DATASET,)
    RETURN_NAMES = ("latents",)
    OUTPUT_NODE = True   # it writes the latents: a workflow runs it with nothing downstream
    OUTPUT_TOOLTIPS = ("The pre-encoded dataset, for Train Diffusion.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dataset": (DATASET, {"tooltip": "The audio dataset to encode."}),
            "model_config": ("STRING", {"default": "", "tooltip":
                             "The diffusion model's model_config.json (its pretransform and window) "
                             "or an autoencoder config: a name in the checkpoints folder, "
                             "'bundled/<name>.json' or an absolute path."}),
            "vae_checkpoint": ("STRING", {"default": "", "tooltip":
                               "The VAE weights: Train VAE's checkpoint, or a full model checkpoint "
                               "(its pretransform.model.* part), by name or absolute path."}),
            "name": ("STRING", {"default": "latents/my_dataset", "tooltip":
                     "Folder for the latents, inside the output folder."}),
            "crops_per_file": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip":
                               "Random windows encoded per long file; training draws one per step."}),
            "latent_mode": (["mean", "sample"], {"default": "mean", "tooltip":
                            "'mean': the posterior mean (deterministic); 'sample': one draw from "
                            "the posterior per crop."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 1024, "tooltip":
                           "Crops per VAE call."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip":
                     "Seed of the crop offsets (and draws)."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "Where the VAE runs."}),
        }}

    def encode(self, dataset, model_config, vae_checkpoint, name, crops_per_file, latent_mode, batch_size,
               seed, device):
        spec = dataset_spec(dataset)
        if spec.kind != "audio":
            raise InputError("this dataset is already pre-encoded latents")
        config, _ = model_config_source(model_config)
        if config is None:
            raise InputError("model_config must be a model_config.json, not a folder")
        checkpoint = existing_path(vae_checkpoint, "checkpoints", "vae_checkpoint")
        autoencoder = prepare_for_inference(load_autoencoder(config, checkpoint).to(device_choice(device)))
        audio = spec.build(int(config["sample_rate"]), int(config["sample_size"]),
                           int(config.get("audio_channels", 2)))
        out_dir = output_folder(name, "name")
        control = Control(len(audio))
        summary = encode_dataset(audio, autoencoder, out_dir, crops_per_file=crops_per_file,
                                 latent_mode=latent_mode, seed=seed, batch_size=batch_size,
                                 autoencoder_name=str(checkpoint), on_progress=control.update,
                                 should_stop=control.should_stop)
        control.finish()
        return (replace(spec, kind="latents", root=summary.out_dir, files=summary.files_done),)
