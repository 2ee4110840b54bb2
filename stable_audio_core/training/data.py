"""Training data from a folder of audio files with metadata.

An item is one window of ``sample_size`` samples at the model's rate: long files are cropped at a
random offset, short ones padded with silence, and the item records (Stable Audio paper, 3.2)

- ``seconds_start``: where the window begins in the file, in whole seconds (floor), and
- ``seconds_total``: the file's duration, in whole seconds (ceil),

the same rounding stable-audio-tools uses, so timing conditioners see the values they were made
for. Metadata comes from a sidecar JSON beside each file (same stem) or from one manifest
(``.jsonl``, ``.csv`` or a ``.json`` list) whose rows name their file in ``"path"``.

Datasets are map-style with explicit randomness: ``get(index, seed)`` draws the crop and the
prompt from ``seed`` alone, so the trainer decides every random choice (see ``training.task``).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

from ..audio.io import audio_info, fit_length, read_audio_window, resampled_length, set_channels
from ..errors import AudioFileError, InputError
from .prompts import PromptOptions, build_prompt
from .task import Batch, item_generators

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv", "manifest.json")
PATH_KEYS = ("path", "file_name", "filename", "file", "audio")
ON_ERROR = ("raise", "skip")


@dataclass
class AudioEntry:
    """One audio file of a dataset and its raw metadata."""

    path: Path
    relpath: str          # POSIX path relative to the dataset root (or the absolute path)
    metadata: dict[str, Any]

    def ids(self) -> set[str]:
        """Names a split file may use for this entry: its "id", relative path, path without
        suffix, or file stem."""
        names = {self.relpath, self.relpath.rsplit(".", 1)[0], self.path.stem}
        if self.metadata.get("id") is not None:
            names.add(str(self.metadata["id"]))
        return names


# ---------------------------------------------------------------------------------------------
# Finding files and metadata
# ---------------------------------------------------------------------------------------------


def _relpath(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc}); fix or remove it") from exc


def scan_folder(root: str | Path) -> list[AudioEntry]:
    """Every audio file under `root` (recursively, hidden files and folders skipped), sorted by
    relative path, with the metadata of its sidecar `<stem>.json` when there is one."""
    root = Path(root)
    entries = []
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        sidecar = path.with_suffix(".json")
        metadata = _read_json(sidecar, "sidecar") if sidecar.is_file() else {}
        if not isinstance(metadata, dict):
            raise InputError(f"sidecar {sidecar} must hold a JSON object, got {type(metadata).__name__}")
        entries.append(AudioEntry(path, relative.as_posix(), metadata))
    return entries


def _csv_value(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def _manifest_rows(path: Path) -> Iterable[tuple[str, dict]]:
    """(location for errors, row dict) for each row of a .jsonl, .csv or .json manifest."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"manifest {path} line {number} is not valid JSON ({exc})") from exc
                yield f"{path} line {number}", row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                yield f"{path} line {number}", {
                    key.strip(): _csv_value(value) for key, value in row.items()
                    if key is not None and value is not None and value.strip()
                }
    elif suffix == ".json":
        rows = _read_json(path, "manifest")
        if not isinstance(rows, list):
            raise InputError(f"manifest {path} must hold a JSON list of objects")
        for number, row in enumerate(rows):
            yield f"{path} entry {number}", row
    else:
        raise InputError(f"manifest {path} must be .jsonl, .csv or .json, got '{suffix}'")


def read_manifest(manifest: str | Path, root: str | Path) -> list[AudioEntry]:
    """Entries of a manifest, in its order. A row's file path is relative to `root` (or, when not
    found there, to the manifest's folder); the other columns are its metadata."""
    manifest, root = Path(manifest), Path(root)
    if not manifest.is_file():
        raise InputError(f"manifest not found: {manifest}")
    entries = []
    for where, row in _manifest_rows(manifest):
        if not isinstance(row, dict):
            raise InputError(f"{where} must be a JSON object, got {type(row).__name__}")
        key = next((k for k in PATH_KEYS if row.get(k)), None)
        if key is None:
            raise InputError(f"{where} names no audio file; give it one of the columns {list(PATH_KEYS)}")
        location = Path(str(row[key]))
        path = location if location.is_absolute() else root / location
        if not location.is_absolute() and not path.exists() and (manifest.parent / location).exists():
            path = manifest.parent / location
        metadata = {k: v for k, v in row.items() if k != key}
        entries.append(AudioEntry(path, _relpath(path, root), metadata))
    return entries


def read_split(split_file: str | Path, split: str) -> set[str]:
    """The ids listed under `split` in a split JSON ({"train": [ids], "held_out": [ids], ...})."""
    split_file = Path(split_file)
    if not split_file.is_file():
        raise InputError(f"split '{split}' asked for, but there is no split file {split_file}")
    splits = _read_json(split_file, "split file")
    if not isinstance(splits, dict) or split not in splits:
        names = sorted(splits) if isinstance(splits, dict) else []
        raise InputError(f"split file {split_file} has no split '{split}'; it has {names}")
    return {str(name) for name in splits[split]}


# ---------------------------------------------------------------------------------------------
# Windows and batches
# ---------------------------------------------------------------------------------------------


def crop_offset(length: int, window: int, seed: int, random_crop: bool = True) -> int:
    """Start of the window in a file of `length` samples: uniform over every full window when
    `random_crop` and the file is longer than the window, else 0."""
    if not random_crop or length <= window:
        return 0
    generator = item_generators(torch.tensor([int(seed)]), "crop")[0]
    return int(torch.randint(0, length - window + 1, (1,), generator=generator))


def timing_seconds(offset: int, length: int, sample_rate: int) -> tuple[int, int]:
    """(seconds_start, seconds_total) of a window starting at sample `offset` of a file of
    `length` samples: floor of the start, ceil of the duration, as in stable-audio-tools."""
    return offset // sample_rate, math.ceil(length / sample_rate)


def dataset_shape(task: Any, model_config: dict | None) -> tuple[int, int, int]:
    """(sample_rate, sample_size, audio_channels) a task's data must have: the task's attributes
    where it has them, else the model config's top-level keys (audio_channels defaults to 2)."""
    values = []
    for name in ("sample_rate", "sample_size", "audio_channels"):
        value = getattr(task, name, None)
        if value is None and isinstance(model_config, dict):
            value = model_config.get(name, 2 if name == "audio_channels" else None)
        if value is None:
            raise InputError(f"the model config gives no {name}: the training windows take their shape from it")
        values.append(int(value))
    return values[0], values[1], values[2]


def collate_items(items: list[dict], seeds: list[int] | Tensor) -> Batch:
    """Stack the items' tensors (Tensor[B, ...]); metadata stays a list of dicts; adds
    "seeds" Tensor[B] int64."""
    if not items:
        raise InputError("cannot collate an empty list of items")
    if len(seeds) != len(items):
        raise InputError(f"collate got {len(items)} items but {len(seeds)} seeds")
    batch: Batch = {}
    for key, value in items[0].items():
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(value, Tensor) else values
    batch["seeds"] = torch.as_tensor(list(seeds) if not isinstance(seeds, Tensor) else seeds,
                                     dtype=torch.int64)  # fmt: skip
    return batch


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class AudioFolderDataset:
    """Windows of audio with prompts and timing from a folder of files (see the module docstring).

    Args:
        root: the folder.
        sample_rate, sample_size, audio_channels: the model's rate, window and channel count;
            files are resampled, cropped or padded; mono is duplicated to stereo (and more
            channels than asked for are dropped, or averaged for mono).
        manifest: a .jsonl/.csv/.json manifest; None uses `root/manifest.jsonl|csv|json` when
            present, else every audio file under `root` with its sidecar JSON.
        random_crop: a random window of long files (else their first window).
        prompt_options: how prompts are built (training.prompts.PromptOptions).
        split: keep only the entries listed under this name in `split_file`
            (default `root/split.json`).
        on_error: "raise" an AudioFileError naming an unreadable file, or "skip" it with a warning
            (the item is then taken from the next readable file).
    """

    def __init__(self, root: str | Path, *, sample_rate: int, sample_size: int,
                 audio_channels: int = 2, manifest: str | Path | None = None,
                 random_crop: bool = True, prompt_options: PromptOptions | None = None,
                 split: str | None = None, split_file: str | Path | None = None,
                 on_error: str = "raise"):  # fmt: skip
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset folder not found: {self.root}")
        if sample_rate <= 0 or sample_size <= 0 or audio_channels <= 0:
            raise InputError(
                f"sample_rate, sample_size and audio_channels must be positive, got {sample_rate}, "
                f"{sample_size}, {audio_channels}"
            )
        if on_error not in ON_ERROR:
            raise InputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.sample_rate = int(sample_rate)
        self.sample_size = int(sample_size)
        self.audio_channels = int(audio_channels)
        self.random_crop = random_crop
        self.prompt_options = prompt_options or PromptOptions()
        self.on_error = on_error
        if manifest is None:
            manifest = next((self.root / n for n in MANIFEST_NAMES if (self.root / n).is_file()), None)
        self.manifest = None if manifest is None else Path(manifest)
        entries = scan_folder(self.root) if self.manifest is None else read_manifest(self.manifest, self.root)
        if split is not None:
            wanted = read_split(split_file or self.root / "split.json", split)
            entries = [entry for entry in entries if entry.ids() & wanted]
        self.entries = self._existing(entries)
        if not self.entries:
            source = self.manifest or f"{self.root} (extensions {', '.join(AUDIO_EXTENSIONS)})"
            raise InputError(f"no audio files found in {source}" + (f", split '{split}'" if split else ""))
        self._reported: set[Path] = set()

    @classmethod
    def for_model_config(cls, root: str | Path, model_config: dict, *, sample_size: int | None = None,
                         **options: Any) -> "AudioFolderDataset":  # fmt: skip
        """The dataset a stable-audio-tools model config trains on: its "sample_rate",
        "sample_size" (unless `sample_size` is given) and "audio_channels" (default 2)."""
        config = dict(model_config)
        if sample_size is not None:
            config["sample_size"] = sample_size
        rate, size, channels = dataset_shape(None, config)
        return cls(root, sample_rate=rate, sample_size=size, audio_channels=channels, **options)

    def _existing(self, entries: list[AudioEntry]) -> list[AudioEntry]:
        missing = [entry for entry in entries if not entry.path.is_file()]
        if missing and self.on_error == "raise":
            names = ", ".join(str(entry.path) for entry in missing[:5])
            raise AudioFileError(
                f"{len(missing)} audio file(s) named by the dataset are missing: {names}"
                + (" ..." if len(missing) > 5 else "") + "; fix the manifest or pass on_error='skip'"
            )
        if missing:
            warnings.warn(f"skipping {len(missing)} missing audio file(s), e.g. {missing[0].path}",
                          stacklevel=3)  # fmt: skip
        return [entry for entry in entries if entry.path.is_file()]

    def __len__(self) -> int:
        return len(self.entries)

    def file_length(self, index: int) -> int:
        """Length of file `index` in samples at the model rate."""
        frames, rate = audio_info(self.entries[index].path)
        return resampled_length(frames, rate, self.sample_rate)

    def load(self, index: int, seed: int, offset: int | None = None) -> dict:
        """The item of file `index` (window at `offset`, or drawn from `seed`); raises
        AudioFileError for an unreadable file whatever `on_error` says."""
        entry = self.entries[index]
        length = self.file_length(index)
        if offset is None:
            offset = crop_offset(length, self.sample_size, seed, self.random_crop)
        audio = read_audio_window(entry.path, offset, self.sample_size, self.sample_rate)
        audio = set_channels(audio, self.audio_channels).clamp(-1.0, 1.0)
        real = audio.shape[-1]
        seconds_start, seconds_total = timing_seconds(offset, length, self.sample_rate)
        metadata = dict(entry.metadata)
        metadata.update(
            path=str(entry.path), relpath=entry.relpath, seconds_start=seconds_start,
            seconds_total=seconds_total, crop_offset=offset, audio_length=length,
            sample_rate=self.sample_rate,
        )
        metadata["prompt"] = build_prompt(entry.metadata, self.prompt_options, seed)
        return {
            "audio": fit_length(audio, self.sample_size).contiguous(),
            "padding_mask": torch.arange(self.sample_size) < real,
            "metadata": metadata,
        }

    def get(self, index: int, seed: int) -> dict:
        """{"audio": Tensor[C, sample_size], "padding_mask": Tensor[sample_size] bool (True on
        real audio), "metadata": raw fields + "prompt", "seconds_start", "seconds_total", "path",
        "relpath", "crop_offset", "audio_length", "sample_rate"}."""
        if not 0 <= index < len(self):
            raise IndexError(f"dataset index {index} out of range for {len(self)} items")
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            try:
                return self.load(current, seed)
            except AudioFileError as exc:
                if self.on_error == "raise":
                    raise
                self.report_skipped(self.entries[current].path, exc)
        raise AudioFileError(f"no file of the dataset in {self.root} could be read")

    def report_skipped(self, path: Path, error: Exception) -> None:
        """Warn once per unreadable file that it is being skipped."""
        if path not in self._reported:
            self._reported.add(path)
            warnings.warn(f"skipping unreadable audio file {path}: {error}", stacklevel=3)

    def collate(self, items: list[dict], seeds: list[int] | Tensor) -> Batch:
        """Batch of get() items: "audio" Tensor[B, C, T], "padding_mask" Tensor[B, T],
        "metadata" list[dict], "seeds" Tensor[B]."""
        return collate_items(items, seeds)

    def prompts(self, seed: int = 0) -> list[str]:
        """One prompt per file (no audio is read), e.g. to train a tokenizer on the captions."""
        return [build_prompt(entry.metadata, self.prompt_options, seed + index)
                for index, entry in enumerate(self.entries)]  # fmt: skip
