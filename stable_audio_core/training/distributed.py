"""Data-parallel training across processes started by ``torchrun`` (or one process, same code path).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address); we join the
process group with NCCL on CUDA and gloo otherwise. Every process computes gradients on its own
slice of the global batch, gradients are averaged with one all-reduce per bucket, and only rank 0
writes files. With ``WORLD_SIZE`` unset or 1 every collective is a no-op.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import InputError

BUCKET_BYTES = 32 * 1024 * 1024   # bounds the extra memory of a flattened all-reduce


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False       # True when we initialised the process group (and destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) without it."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise InputError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them): {exc}") from exc


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's CUDA device when there is one, else CPU; otherwise ``name``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return device


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the torchrun process group (if any) and pick this process's device."""
    rank, world_size, local_rank = env_world()
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        owns_group = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target,
                              owns_group=owns_group)


def teardown(context: DistributedContext) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.active:
        if context.device.type == "cuda" and dist.get_backend() == "nccl":
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


def broadcast_modules(context: DistributedContext, modules: dict[str, nn.Module]) -> None:
    """Give every process rank 0's weights and buffers (a fresh run must start identical)."""
    if not context.active:
        return
    with torch.no_grad():
        for name in sorted(modules):
            for tensor in list(modules[name].parameters()) + list(modules[name].buffers()):
                dist.broadcast(tensor.data, src=0)


def average_gradients(context: DistributedContext, parameters: list[nn.Parameter]) -> None:
    """Replace each ``.grad`` by its mean over processes.

    A parameter that got no gradient on some process but did on another (a branch not taken by
    every micro-batch) is given a zero gradient first, so every process reduces the same list.
    """
    if not context.active:
        return
    device = parameters[0].device if parameters else context.device
    has_grad = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    grads: list[Tensor] = []
    for param, flag in zip(parameters, has_grad.tolist()):
        if not flag:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat.div_(context.world_size)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def _buckets(grads: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive groups of one dtype and device, each at most BUCKET_BYTES (or one tensor)."""
    buckets: list[list[Tensor]] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        same_kind = buckets and buckets[-1][0].dtype == grad.dtype and buckets[-1][0].device == grad.device
        if not same_kind or size + nbytes > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += nbytes
    return buckets


def any_process(context: DistributedContext, flag: bool) -> bool:
    """True when ``flag`` is True on any process (so all stop at the same step)."""
    if not context.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_objects(context: DistributedContext, value):
    """``[value of rank 0, value of rank 1, ...]`` on every process (small picklable values only)."""
    if not context.active:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_metrics(context: DistributedContext, metrics: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes that report it."""
    reports = gather_objects(context, metrics)
    keys = sorted({key for report in reports for key in report})
    averaged = {}
    for key in keys:
        values = [report[key] for report in reports if key in report]
        averaged[key] = sum(values) / len(values)
    return averaged
