"""The worker side of the benchmark: measure one run, talk to the orchestrator over stdin/stdout.

Imported by every worker, in every party's own environment (it needs only torch and numpy).

A worker builds its party's model once, prints `@@READY {...}`, then answers one request per
stdin line (JSON) with one `@@RESULT {...}` line; anything else a library prints is ignored.
Requests: {"op": "run", "mode": "timed" | "agree-<peer>", "out": path or null}, {"op": "quit"}.
"agree-<peer>" runs the work item's agreement variant: the deterministic sampler, and for us the
peer's own conventions where they differ (its text-encoder dtype, its unconditional tokens), so
the saved output can be compared with that peer's.

Per run: wall time (perf_counter, after a CUDA synchronize on GPU), process CPU time, the peak
resident set size of the run (the kernel's high-water mark VmHWM, reset just before the run by
writing 5 to /proc/self/clear_refs, so it includes the weights already resident), the RSS before
the run, and on CUDA the peak allocated memory (reset before the run).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from typing import Callable

import torch

READY, RESULT = "@@READY ", "@@RESULT "


def _status_kb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:  # not Linux, or not allowed: the peak then covers the process lifetime
        return False


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(work: Callable[[], object], device: str) -> tuple[object, dict]:
    """Run work() once; return (its result, measurements)."""
    gc.collect()
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    resettable = reset_peak_rss()
    rss_before = _status_kb("VmRSS") / 1024
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = work()
    synchronize(device)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    stats = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _status_kb("VmHWM") / 1024,
             "rss_before_mb": rss_before, "peak_is_per_run": resettable}
    if device.startswith("cuda"):
        stats["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result, stats


def save_output(tensor: torch.Tensor, path: str) -> None:
    import numpy as np

    np.save(path, tensor.detach().float().cpu().numpy())


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def environment() -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
            # Read after build(): our package requests huge pages when it is imported.
            "huge_pages": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
            # The kernels this process runs (the ISA caps of --emulate-avx2 show here).
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": _onednn_bf16()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def serve(build: Callable[[dict], object], run: Callable[..., torch.Tensor | str]) -> None:
    """Worker main loop. build(spec) -> state; run(state, spec, mode, warmup) -> output tensor
    (or a string saying why this party has no such output).

    A warm-up run (warmup=True: the worker may shrink the work, e.g. two steps) precedes the
    timed ones so one-off setup (kernel selection, allocator growth) is not timed."""
    spec = json.loads(open(sys.argv[sys.argv.index("--spec") + 1]).read())
    torch.set_num_threads(int(spec["threads"]))
    emit = sys.stdout.write
    try:
        state = build(spec)
        if spec.get("warmup", True):
            run(state, spec, "timed", True)
    except Exception:
        emit(READY + json.dumps({"error": traceback.format_exc()}) + "\n")
        sys.stdout.flush()
        return
    emit(READY + json.dumps({"environment": environment()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            output, stats = measure(lambda: run(state, spec, request["mode"], False), spec["device"])
            reply = stats
            if isinstance(output, str):  # the party cannot produce this output; says why
                reply["note"] = output
            elif request.get("out"):
                save_output(output, request["out"])
        except Exception:
            reply = {"error": traceback.format_exc()}
        del line
        output = None
        emit(RESULT + json.dumps(reply) + "\n")
        sys.stdout.flush()
