"""Training prompts from an item's metadata (Stable Audio paper, section 4.5).

Each time an item is drawn its prompt is rebuilt from a random subset of its metadata fields,
either structured ("Instruments: Guitar, Drums | Moods: Uplifting") or free-form ("Guitar, Drums,
Uplifting"), with the items shuffled so the model does not learn an order. A free-text
description, when the item has one, is used as it is (or, with ``fields_instead_probability``,
still replaced by a field prompt). Everything random comes from the item seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import torch

from ..errors import InputError
from .task import item_generators

# Field name -> label used in structured prompts; other fields get their name, capitalised.
FIELD_LABELS = {
    "instruments": "Instruments",
    "genre": "Genre",
    "genres": "Genres",
    "mood": "Moods",
    "moods": "Moods",
    "bpm": "BPM",
    "key": "Key",
    "tags": "Tags",
    "kind": "Kind",
}


@dataclass
class PromptOptions:
    """How prompts are built from metadata.

    Args:
        fields: metadata fields a prompt may draw from, in their structured-prompt order.
        description_fields: fields holding free text; the first non-empty one is the description.
        fields_instead_probability: chance of building a field prompt although a description exists.
        structured_probability: chance of the structured style (else free-form).
        min_fields, max_fields: how many of the item's available fields a prompt uses (drawn
            uniformly between them; max_fields None means all available).
        shuffle: shuffle the fields and the items within them.
        labels: extra or replacement structured labels (field -> label), merged over FIELD_LABELS.
    """

    fields: tuple[str, ...] = ("instruments", "genre", "mood", "bpm", "key")
    description_fields: tuple[str, ...] = ("description", "caption", "text", "prompt")
    fields_instead_probability: float = 0.0
    structured_probability: float = 0.5
    min_fields: int = 1
    max_fields: int | None = None
    shuffle: bool = True
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fields = tuple(self.fields)
        self.description_fields = tuple(self.description_fields)
        for name in ("fields_instead_probability", "structured_probability"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(f"PromptOptions.{name} must be in [0, 1], got {value}")
        if self.min_fields < 0 or (self.max_fields is not None and self.max_fields < self.min_fields):
            raise InputError(
                f"PromptOptions needs 0 <= min_fields <= max_fields, got {self.min_fields} and "
                f"{self.max_fields}"
            )

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "PromptOptions":
        """Build from a plain dict (JSON); unknown keys raise InputError listing the allowed ones."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InputError(f"unknown prompt option(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["fields"] = list(self.fields)
        values["description_fields"] = list(self.description_fields)
        return values


def field_items(name: str, value: Any) -> list[str]:
    """The prompt items of one metadata value: lists item by item, comma-separated strings split,
    numbers without a spurious ".0"; empty values give []."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [item for element in value for item in field_items(name, element)]
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return [part.strip() for part in text.split(",") if part.strip()]


def _label(name: str, labels: Mapping[str, str]) -> str:
    if name in labels:
        return labels[name]
    return FIELD_LABELS.get(name, name.replace("_", " ").capitalize())


def _free_form_items(name: str, items: list[str]) -> list[str]:
    # A bare number says nothing in free form; "120 BPM" does.
    return [f"{item} BPM" for item in items] if name == "bpm" else items


def prompt_rng(seed: int) -> random.Random:
    """The prompt's random source for an item seed (the task's "prompt" salt)."""
    generator = item_generators(torch.tensor([int(seed)]), "prompt")[0]
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))


def description_of(metadata: Mapping[str, Any], options: PromptOptions) -> str | None:
    for name in options.description_fields:
        value = metadata.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def build_prompt(metadata: Mapping[str, Any], options: PromptOptions | None = None,
                 seed: int = 0) -> str:
    """The training prompt for an item: its description, or a structured / free-form prompt
    from a random subset of its fields; "" when it has neither. Deterministic in `seed`."""
    options = options or PromptOptions()
    rng = prompt_rng(seed)
    description = description_of(metadata, options)
    use_fields = rng.random() < options.fields_instead_probability
    available = [(name, field_items(name, metadata.get(name))) for name in options.fields]
    available = [(name, items) for name, items in available if items]
    if description is not None and (not use_fields or not available):
        return description
    if not available:
        return ""
    most = len(available) if options.max_fields is None else min(options.max_fields, len(available))
    count = rng.randint(min(options.min_fields, most), most)
    if count == 0:
        return ""
    chosen = rng.sample(available, count)
    if not options.shuffle:
        chosen.sort(key=lambda pair: options.fields.index(pair[0]))
    structured = rng.random() < options.structured_probability
    if structured:
        parts = []
        for name, items in chosen:
            items = list(items)
            if options.shuffle:
                rng.shuffle(items)
            parts.append(f"{_label(name, options.labels)}: {', '.join(items)}")
        return " | ".join(parts)
    items = [item for name, values in chosen for item in _free_form_items(name, values)]
    if options.shuffle:
        rng.shuffle(items)
    return ", ".join(items)
