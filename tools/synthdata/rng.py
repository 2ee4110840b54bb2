"""Seeded randomness that stays stable across Python and NumPy versions.

Python guarantees only that `random.Random(int).random()` repeats its sequence across versions, so
every draw here is built on `random()` alone (not on `choice`/`randrange`, whose algorithms may
change). Seeds for clips are derived by hashing, so a clip's seed depends only on the dataset seed
and the clip's index, never on how many clips are made or in which order.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

T = TypeVar("T")

SEED_BITS = 31  # fits every integer type and JSON reader (JavaScript numbers stay exact)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from a hash of `parts` (e.g. `derive_seed(1234, 17)` for clip 17 of seed 1234)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def hash_fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`, for deterministic membership tests (the held-out split)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class ClipRandom:
    """The draws composition and synthesis need, all derived from `random.Random(seed).random()`."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._random = random.Random(self.seed)

    def child(self, label: str) -> "ClipRandom":
        """An independent stream for one sub-task, so adding draws in one part never shifts another."""
        return ClipRandom(derive_seed(self.seed, label))

    def unit(self) -> float:
        """A float in [0, 1)."""
        return self._random.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random.random()

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high], both ends included."""
        span = high - low + 1
        return low + min(int(self._random.random() * span), span - 1)

    def chance(self, probability: float) -> bool:
        return self._random.random() < probability

    def choice(self, items: Sequence[T]) -> T:
        return items[self.integer(0, len(items) - 1)]

    def weighted(self, items: Sequence[T], weights: Sequence[float]) -> T:
        total = float(sum(weights))
        point = self._random.random() * total
        for item, weight in zip(items, weights):
            point -= weight
            if point < 0:
                return item
        return items[-1]

    def sample(self, items: Sequence[T], count: int) -> list[T]:
        """`count` distinct items in random order (a partial Fisher-Yates shuffle)."""
        pool = list(items)
        for i in range(min(count, len(pool))):
            j = self.integer(i, len(pool) - 1)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:count]

    def jitter(self, value: float, spread: float) -> float:
        return value + self.uniform(-spread, spread)
