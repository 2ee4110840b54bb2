"""Pre-encoding: run the autoencoder over a dataset once and train the diffusion model on latents.

``encode_dataset`` writes ``out_dir/shard-NNNNN.safetensors`` files (``"latents"`` Tensor[N, D, L],
``"padding_mask"`` Tensor[N, L] bool) and ``out_dir/index.json`` (settings, shards, and per item
its file, crop number and metadata, including the crop offset, so ``seconds_start`` and
``seconds_total`` stay those of the audio window that was encoded). Each file can be encoded at
``crops_per_file`` random windows; ``LatentDataset`` then draws one of them per item seed.

Latents are what ``AudioAutoencoder.encode`` returns (already divided by the pretransform
scale): the posterior mean (``latent_mode="mean"``, the default, deterministic) or one draw
from the posterior per crop (``"sample"``, from the crop's seed); the index records which.

Every shard and every index update is written to a temporary file and renamed, after each
shard, so an interrupted encoding resumes from its last shard with the same settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..atomic_files import atomic_write
from ..autoencoding import encode_audio
from ..errors import AudioFileError, InputError
from ..models.autoencoder import AudioAutoencoder
from .data import AudioFolderDataset, collate_items
from .prompts import PromptOptions, build_prompt
from .task import Batch, item_generators, latent_padding_mask

INDEX_NAME = "index.json"
INDEX_FORMAT = "stable-audio-latents"
INDEX_VERSION = 1
LATENT_MODES = ("mean", "sample")
CROP_CHOICES = ("random", "first")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def crop_seed(seed: int, file_index: int, crop: int) -> int:
    """The item seed of crop `crop` of file `file_index` in an encoding run seeded `seed`."""
    digest = hashlib.blake2b(f"{seed}:{file_index}:{crop}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    atomic_write(path, write, durable=True)


def _write_json(path: Path, value: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=1)
    _write_atomic(path, write)


@dataclass
class EncodeSummary:
    """What an encode_dataset call left in `out_dir`."""

    out_dir: Path
    items: int                      # encoded crops in the index
    files_done: int                 # dataset files processed (encoded or skipped)
    files_total: int
    complete: bool                  # False when stopped early; call again to resume
    skipped: list[str] = field(default_factory=list)


def _settings(dataset: AudioFolderDataset, autoencoder, *, crops_per_file: int, latent_mode: str,
              seed: int, dtype: str, autoencoder_name: str | None) -> dict:  # fmt: skip
    return {
        "sample_rate": dataset.sample_rate,
        "sample_size": dataset.sample_size,
        "audio_channels": dataset.audio_channels,
        "random_crop": dataset.random_crop,
        "dataset_files": [entry.relpath for entry in dataset.entries],
        "latent_dim": int(autoencoder.latent_dim),
        "downsampling_ratio": int(autoencoder.downsampling_ratio),
        "latent_length": dataset.sample_size // autoencoder.downsampling_ratio,
        "scale": float(autoencoder.scale),
        "latent_mode": latent_mode,
        "crops_per_file": crops_per_file,
        "seed": seed,
        "dtype": dtype,
        "autoencoder": autoencoder_name,
    }


def _check_compatible(dataset: AudioFolderDataset, autoencoder) -> None:
    problems = []
    if autoencoder.sample_rate != dataset.sample_rate:
        problems.append(f"sample rate {dataset.sample_rate} vs the autoencoder's {autoencoder.sample_rate}")
    if autoencoder.in_channels != dataset.audio_channels:
        problems.append(f"{dataset.audio_channels} channels vs the autoencoder's {autoencoder.in_channels}")
    if dataset.sample_size % autoencoder.downsampling_ratio:
        problems.append(f"sample_size {dataset.sample_size} is not a multiple of the downsampling "
                        f"ratio {autoencoder.downsampling_ratio}")  # fmt: skip
    if problems:
        raise InputError("the dataset does not fit the autoencoder: " + "; ".join(problems))


class _Encoder:
    """Encodes crops, batch_size at a time, into latents and latent padding masks."""

    def __init__(self, autoencoder, latent_mode: str, batch_size: int, dtype: torch.dtype,
                 chunked: bool | None):  # fmt: skip
        self.autoencoder = autoencoder
        self.latent_mode = latent_mode
        self.batch_size = batch_size
        self.dtype = dtype
        self.chunked = chunked
        self.device = next(autoencoder.parameters()).device

    @torch.no_grad()
    def __call__(self, items: list[dict], seeds: list[int]) -> tuple[Tensor, Tensor]:
        """Items of AudioFolderDataset.load -> (latents Tensor[N, D, L], mask Tensor[N, L])."""
        outputs = []
        for first in range(0, len(items), self.batch_size):
            part = items[first : first + self.batch_size]
            audio = torch.stack([item["audio"] for item in part]).to(self.device)
            if self.latent_mode == "mean":
                latents = encode_audio(self.autoencoder, audio, self.autoencoder.sample_rate, chunked=self.chunked)
            else:  # one posterior draw per crop, from the crop's own seed
                generators = item_generators(torch.tensor(seeds[first : first + len(part)]), "latent",
                                             self.device)  # fmt: skip
                latents = torch.cat([
                    encode_audio(self.autoencoder, audio[i : i + 1], self.autoencoder.sample_rate, sample=True,
                                 generator=g, chunked=self.chunked)
                    for i, g in enumerate(generators)
                ])
            outputs.append(latents.to("cpu", self.dtype))
        masks = torch.stack([item["padding_mask"] for item in items])
        return torch.cat(outputs), latent_padding_mask(masks, masks.shape[-1] // self.autoencoder.downsampling_ratio)


def encode_dataset(
    dataset: AudioFolderDataset,
    autoencoder: AudioAutoencoder,
    out_dir: str | Path,
    *,
    crops_per_file: int = 1,
    latent_mode: str = "mean",
    seed: int = 0,
    batch_size: int = 8,
    shard_size: int = 256,
    dtype: str = "float32",
    chunked: bool | None = None,
    autoencoder_name: str | None = None,
    resume: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EncodeSummary:
    """Encode every file of `dataset` into latents under `out_dir` (see the module docstring).

    Args:
        autoencoder: an AudioAutoencoder (models.autoencoder), used where its weights are.
        crops_per_file: random windows per file (files no longer than the window give one).
        latent_mode: "mean" (posterior mean) or "sample" (one seeded draw per crop).
        seed: seeds every crop (crop_seed) and so the crop offsets and draws.
        batch_size: crops per autoencoder call; shard_size: crops per shard file (about).
        dtype: stored latent dtype ("float32", "float16", "bfloat16").
        chunked: passed to AudioAutoencoder.encode.
        autoencoder_name: recorded in the index (e.g. the checkpoint path) and checked on resume.
        resume: continue an unfinished run with the same settings found in `out_dir`; False
            deletes its shards and index first.
        on_progress(files_done, files_total): called after each file.
        should_stop(): checked after each file; True writes what is done and returns early.
    """
    if latent_mode not in LATENT_MODES:
        raise InputError(f"latent_mode must be one of {LATENT_MODES}, got {latent_mode!r}")
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if crops_per_file < 1 or batch_size < 1 or shard_size < 1:
        raise InputError("crops_per_file, batch_size and shard_size must be at least 1")
    _check_compatible(dataset, autoencoder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(dataset, autoencoder, crops_per_file=crops_per_file, latent_mode=latent_mode,
                         seed=seed, dtype=dtype, autoencoder_name=autoencoder_name)  # fmt: skip
    index_path = out_dir / INDEX_NAME
    if index_path.exists() and not resume:
        for old in out_dir.glob("shard-*.safetensors"):
            old.unlink()
        index_path.unlink()
    if index_path.exists():
        index = _read_index(out_dir)
        if index["settings"] != settings:
            changed = sorted(k for k in settings if index["settings"].get(k) != settings[k])
            raise InputError(
                f"{out_dir} holds latents encoded with other settings ({', '.join(changed)} differ); "
                "choose another folder, or pass resume=False to encode again from scratch"
            )
        index["prompt_options"] = dataset.prompt_options.to_dict()   # they do not change latents
    else:
        index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "settings": settings,
                 "prompt_options": dataset.prompt_options.to_dict(), "files_done": 0,
                 "complete": False, "shards": [], "items": [], "skipped": []}  # fmt: skip
        _write_json(index_path, index)

    encode = _Encoder(autoencoder, latent_mode, batch_size, DTYPES[dtype], chunked)
    total = len(dataset)
    queue: list[tuple[dict, int]] = []        # (item, seed) read but not yet encoded
    shard_latents: list[Tensor] = []           # encoded, not yet written
    shard_masks: list[Tensor] = []
    shard_items: list[dict] = []

    def encode_queue() -> None:
        if queue:
            latents, masks = encode([item for item, _ in queue], [s for _, s in queue])
            shard_latents.append(latents)
            shard_masks.append(masks)
            queue.clear()

    def flush(files_done: int) -> None:
        encode_queue()
        if shard_items:
            number = len(index["shards"])
            name = f"shard-{number:05d}.safetensors"
            tensors = {"latents": torch.cat(shard_latents).contiguous(),
                       "padding_mask": torch.cat(shard_masks).contiguous()}  # fmt: skip
            _write_atomic(out_dir / name, lambda tmp: save_file(tensors, tmp))
            for row, record in enumerate(shard_items):
                index["items"].append({"shard": number, "row": row, **record})
            index["shards"].append({"file": name, "rows": len(shard_items)})
            shard_latents.clear()
            shard_masks.clear()
            shard_items.clear()
        index["files_done"] = files_done
        index["complete"] = files_done == total
        _write_json(index_path, index)

    file_index = index["files_done"]
    while file_index < total:
        try:
            crops = []
            for crop in range(crops_per_file):
                item_seed = crop_seed(seed, file_index, crop)
                item = dataset.load(file_index, item_seed)
                crops.append((item, crop, item_seed))
                if item["metadata"]["audio_length"] <= dataset.sample_size or not dataset.random_crop:
                    break  # every further crop would be the same window
        except AudioFileError as exc:
            if dataset.on_error == "raise":
                raise
            dataset.report_skipped(dataset.entries[file_index].path, exc)
            index["skipped"].append(dataset.entries[file_index].relpath)
            crops = []
        for item, crop, item_seed in crops:
            metadata = {k: v for k, v in item["metadata"].items() if k != "prompt"}
            shard_items.append({"file_index": file_index, "crop": crop, "seed": item_seed,
                                "metadata": metadata})  # fmt: skip
            queue.append((item, item_seed))
            if len(queue) >= batch_size:
                encode_queue()
        file_index += 1
        stop = should_stop is not None and should_stop()
        if len(shard_items) >= shard_size or file_index == total or stop:
            flush(file_index)
        if on_progress is not None:
            on_progress(file_index, total)
        if stop:
            break
    return EncodeSummary(out_dir, len(index["items"]), index["files_done"], total, index["complete"],
                         list(index["skipped"]))  # fmt: skip


def _read_index(root: Path) -> dict:
    path = root / INDEX_NAME
    if not path.is_file():
        raise InputError(f"{root} holds no latent index ({INDEX_NAME}); encode a dataset into it first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"latent index {path} is not valid JSON ({exc})") from exc
    if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise InputError(f"{path} is not a version-{INDEX_VERSION} {INDEX_FORMAT} index")
    return index


class LatentDataset:
    """Pre-encoded latents with the AudioFolderDataset get/collate contract.

    One item per encoded file; `get(index, seed)` picks one of the file's crops from the seed
    ("random") or always the first ("first"), and rebuilds the prompt from the stored metadata
    with `prompt_options` (default: the options the audio dataset had when encoded).

    Attributes: sample_rate, sample_size, audio_channels, latent_dim, latent_length,
    downsampling_ratio, latent_mode, settings (the index's settings dict).
    """

    def __init__(self, root: str | Path, *, prompt_options: PromptOptions | None = None,
                 crop_choice: str = "random", allow_incomplete: bool = False):  # fmt: skip
        if crop_choice not in CROP_CHOICES:
            raise InputError(f"crop_choice must be one of {CROP_CHOICES}, got {crop_choice!r}")
        self.root = Path(root)
        index = _read_index(self.root)
        if not index["complete"] and not allow_incomplete:
            raise InputError(
                f"encoding into {self.root} did not finish ({index['files_done']} files done); run "
                "encode_dataset again with the same settings to resume it, or pass allow_incomplete=True"
            )
        self.settings = index["settings"]
        for name in ("sample_rate", "sample_size", "audio_channels", "latent_dim", "latent_length",
                     "downsampling_ratio", "latent_mode"):  # fmt: skip
            setattr(self, name, self.settings[name])
        self.prompt_options = prompt_options or PromptOptions.from_dict(index["prompt_options"])
        self.crop_choice = crop_choice
        self.shards = [shard["file"] for shard in index["shards"]]
        groups: dict[int, list[dict]] = {}
        for item in index["items"]:
            groups.setdefault(item["file_index"], []).append(item)
        self.groups = [sorted(groups[key], key=lambda item: item["crop"]) for key in sorted(groups)]
        if not self.groups:
            raise InputError(f"{self.root} holds no encoded items")
        self._handles: dict[int, Any] = {}

    def __getstate__(self) -> dict:  # open shard handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.groups)

    def _row(self, shard: int, row: int) -> tuple[Tensor, Tensor]:
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(self.root / self.shards[shard]), framework="pt")
        latents = handle.get_slice("latents")[row : row + 1][0]
        mask = handle.get_slice("padding_mask")[row : row + 1][0]
        return latents.float(), mask.bool()

    def get(self, index: int, seed: int) -> dict:
        """{"latents": Tensor[D, L] float32, "padding_mask": Tensor[L] bool, "metadata": stored
        metadata + "prompt" (+ "crop": which crop of the file)}."""
        if not 0 <= index < len(self):
            raise IndexError(f"latent dataset index {index} out of range for {len(self)} items")
        crops = self.groups[index]
        choice = 0
        if self.crop_choice == "random" and len(crops) > 1:
            generator = item_generators(torch.tensor([int(seed)]), "crop")[0]
            choice = int(torch.randint(0, len(crops), (1,), generator=generator))
        item = crops[choice]
        latents, mask = self._row(item["shard"], item["row"])
        metadata = dict(item["metadata"])
        metadata["crop"] = item["crop"]
        metadata["prompt"] = build_prompt(item["metadata"], self.prompt_options, seed)
        return {"latents": latents, "padding_mask": mask, "metadata": metadata}

    def collate(self, items: list[dict], seeds: list[int] | Tensor) -> Batch:
        """Batch of get() items: "latents" Tensor[B, D, L], "padding_mask" Tensor[B, L],
        "metadata" list[dict], "seeds" Tensor[B]."""
        return collate_items(items, seeds)

    def prompts(self, seed: int = 0) -> list[str]:
        """One prompt per item (its first crop's metadata), e.g. to train a tokenizer."""
        return [build_prompt(crops[0]["metadata"], self.prompt_options, seed + index)
                for index, crops in enumerate(self.groups)]  # fmt: skip


COMPATIBLE_SETTINGS = ("sample_rate", "sample_size", "audio_channels", "latent_dim", "latent_length",
                       "downsampling_ratio", "latent_mode")


class LatentDatasets:
    """Several LatentDataset folders trained on as one (e.g. a dataset and a later supplement),
    items numbered in order; they must agree on every setting in COMPATIBLE_SETTINGS. Each
    part keeps its own prompt options."""

    def __init__(self, parts: list[LatentDataset]):
        if not parts:
            raise InputError("LatentDatasets needs at least one latent folder")
        first = parts[0]
        for part in parts[1:]:
            changed = [k for k in COMPATIBLE_SETTINGS if getattr(part, k) != getattr(first, k)]
            if changed:
                listed = ", ".join(f"{k} {getattr(first, k)!r} vs {getattr(part, k)!r}" for k in changed)
                raise InputError(f"latent folders {first.root} and {part.root} cannot be combined: {listed}")
        self.parts = list(parts)
        for name in COMPATIBLE_SETTINGS:
            setattr(self, name, getattr(first, name))
        self.settings = first.settings
        self.starts = []
        total = 0
        for part in self.parts:
            self.starts.append(total)
            total += len(part)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def _locate(self, index: int) -> tuple[LatentDataset, int]:
        if not 0 <= index < self.total:
            raise IndexError(f"latent dataset index {index} out of range for {self.total} items")
        for part, start in zip(reversed(self.parts), reversed(self.starts)):
            if index >= start:
                return part, index - start
        raise AssertionError("unreachable")

    def get(self, index: int, seed: int) -> dict:
        part, local = self._locate(index)
        return part.get(local, seed)

    def collate(self, items: list[dict], seeds: list[int] | Tensor) -> Batch:
        return collate_items(items, seeds)

    def prompts(self, seed: int = 0) -> list[str]:
        prompts = []
        for part, start in zip(self.parts, self.starts):
            prompts += part.prompts(seed + start)
        return prompts


def open_latents(roots: str | Path | list[str | Path]) -> LatentDataset | LatentDatasets:
    """One latent folder as a LatentDataset, several as LatentDatasets."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if len(roots) == 1:
        return LatentDataset(roots[0])
    return LatentDatasets([LatentDataset(root) for root in roots])
