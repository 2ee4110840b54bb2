"""Several rendered datasets as one, without copying audio: a manifest and a split over all.

The training CLI reads one dataset folder; the default model's decoder stage trains on `synth-v1`
and `synth-solo` together. `merge_datasets(sources, out)` writes

    out/manifest.jsonl   every row of every source, in source order, with "id" prefixed by the
                         source's folder name ("synth-v1-000123") so ids never collide, and "path"
                         relative to `out` ("../synth-v1/audio/000123.wav")
    out/split.json       each split of the sources (the lists only), as prefixed ids
    out/dataset.json     {"merged_from": [{"folder", "items", "dataset"}, ...]}

The sources are referenced, not copied: keep them where they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class MergeError(ValueError):
    """A source that is not a rendered dataset, or an output that would overwrite one."""


def _rows(source: Path) -> list[dict]:
    manifest = source / "manifest.jsonl"
    if not manifest.is_file():
        raise MergeError(f"{source} has no manifest.jsonl: not a dataset made by make_dataset.py")
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


def merge_datasets(sources: list[Path], out: Path) -> dict[str, int]:
    """Write the merged manifest, split and description to `out`; returns the items per split."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    names = [s.resolve().name for s in sources]
    if len(sources) < 2:
        raise MergeError("give at least two datasets to merge")
    if len(set(names)) != len(names):
        raise MergeError(f"the datasets' folder names must differ (they prefix the ids): {names}")
    if (out / "manifest.jsonl").exists():
        raise MergeError(f"{out} already holds a manifest; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    rows, splits, described = [], {}, []
    for source, name in zip(sources, names):
        source_rows = _rows(source)
        for row in source_rows:
            merged = dict(row)
            merged["id"] = f"{name}-{row['id']}"
            merged["path"] = Path(os.path.relpath(source.resolve() / row["path"], out.resolve())).as_posix()
            rows.append(merged)
        split_file = source / "split.json"
        split = json.loads(split_file.read_text(encoding="utf-8")) if split_file.is_file() else {}
        for key, ids in split.items():
            if isinstance(ids, list):
                splits.setdefault(key, []).extend(f"{name}-{i}" for i in ids)
        description = source / "dataset.json"
        described.append({"folder": str(source.resolve()), "items": len(source_rows),
                          "dataset": json.loads(description.read_text(encoding="utf-8"))
                          if description.is_file() else None})  # fmt: skip
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "split.json").write_text(json.dumps(splits, indent=1) + "\n", encoding="utf-8")
    (out / "dataset.json").write_text(json.dumps({"merged_from": described}, indent=1) + "\n", encoding="utf-8")
    return {"items": len(rows), **{key: len(ids) for key, ids in splits.items()}}
