"""The order in which a run sees its data, identical however the global batch is split.

The run is one stream of dataset items, epoch after epoch, each epoch a permutation drawn from
(run seed, epoch); the item at stream position ``p`` gets the seed ``item_seed(run seed, epoch,
index)``. Optimizer step ``k`` consumes the next ``batch_size`` positions (the global batch);
process ``r`` takes the ``r``-th of ``world_size`` equal slices and splits it into
``accumulation`` micro-batches in order. Resuming restarts the stream at the saved position.
"""
from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def mix_seed(*values: int) -> int:
    """A well-spread non-negative 63-bit seed from integers (order matters)."""
    state_value = 0
    for value in values:
        state_value = _splitmix64(state_value ^ (int(value) & _MASK64))
    return state_value >> 1


def item_seed(run_seed: int, epoch: int, index: int) -> int:
    return mix_seed(run_seed, epoch, index, 1)


class DataOrder:
    """Maps a stream position to (dataset index, item seed); one permutation per epoch."""

    def __init__(self, length: int, run_seed: int):
        self.length = length
        self.run_seed = run_seed
        self._epoch = -1
        self._permutation: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.run_seed, epoch, 0))
            self._permutation = torch.randperm(self.length, generator=generator).tolist()
            self._epoch = epoch
        return self._permutation

    def item(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.length)
        index = self.permutation(epoch)[offset]
        return index, item_seed(self.run_seed, epoch, index)


class _StreamItems(torch.utils.data.Dataset):
    """Dataset view indexed by stream position; yields (item dict, item seed)."""

    def __init__(self, dataset, order: DataOrder):
        self.dataset = dataset
        self.order = order

    def __len__(self) -> int:
        return self.order.length

    def __getitem__(self, position: int):
        index, seed = self.order.item(position)
        return self.dataset.get(index, seed), seed


class _Collate:
    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, pairs):
        items, seeds = zip(*pairs)
        return self.dataset.collate(list(items), list(seeds))


class _MicroBatchPositions:
    """Stream positions of this process's micro-batches, step after step, in training order."""

    def __init__(self, start_position: int, steps: int, batch_size: int, rank: int, world_size: int,
                 accumulation: int):
        self.start_position, self.steps, self.batch_size = start_position, steps, batch_size
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation

    def __iter__(self):
        per_rank = self.batch_size // self.world_size
        micro = per_rank // self.accumulation
        for k in range(self.steps):
            base = self.start_position + k * self.batch_size + self.rank * per_rank
            for m in range(self.accumulation):
                yield list(range(base + m * micro, base + (m + 1) * micro))

    def __len__(self) -> int:
        return self.steps * self.accumulation


def micro_batch_loader(dataset, *, run_seed: int, start_position: int, steps: int, batch_size: int,
                       rank: int, world_size: int, accumulation: int, num_workers: int = 0,
                       pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader yielding this process's micro-batches (``dataset.collate`` output) for ``steps``
    optimizer steps from stream position ``start_position``, ``accumulation`` per step."""
    positions = _MicroBatchPositions(start_position, steps, batch_size, rank, world_size, accumulation)
    return torch.utils.data.DataLoader(
        _StreamItems(dataset, DataOrder(len(dataset), run_seed)), batch_sampler=positions,
        collate_fn=_Collate(dataset), num_workers=num_workers, pin_memory=pin_memory,
        # its own generator: a DataLoader iterator otherwise draws from the global RNG
        generator=torch.Generator().manual_seed(mix_seed(run_seed, rank, start_position, 3)))
