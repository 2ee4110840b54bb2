"""The server's queue of prompts and its history, in the shapes ComfyUI's API returns.

A queue item is ComfyUI's list `[number, prompt_id, prompt, extra_data, outputs_to_execute]`;
lower numbers run first. A history entry is `{"prompt": item, "outputs": {node: ui},
"meta": {node: {...}}, "status": {"status_str", "completed", "messages"}}`. `/api/jobs` views
both as one list of job records (`job_record`).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
MAX_HISTORY = 10000
PREVIEWABLE = ("images", "video", "audio")


@dataclass(order=True)
class Job:
    number: float
    prompt_id: str = field(compare=False)
    prompt: dict = field(compare=False)
    extra_data: dict = field(compare=False)
    outputs: list = field(compare=False)

    def item(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class JobQueue:
    """Pending jobs, the running one and the finished ones; safe to use from any thread.

    `on_change()` is called (outside the lock) after every change of the queue's length, so a
    server can tell its clients."""

    def __init__(self, on_change=None):
        self._lock = threading.Condition()
        self._pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, dict] = {}
        self._counter = 0
        self._on_change = on_change or (lambda: None)

    def next_number(self, front: bool = False) -> float:
        with self._lock:
            number = self._counter
            self._counter += 1
        return -number if front else number

    def put(self, job: Job) -> None:
        with self._lock:
            self._pending.append(job)
            self._pending.sort()
            self._lock.notify()
        self._on_change()

    def take(self, timeout: float) -> Job | None:
        """The next job, now marked running; None when none came within `timeout` seconds."""
        with self._lock:
            if not self._pending:
                self._lock.wait(timeout)
            if not self._pending:
                return None
            self.running = self._pending.pop(0)
            job = self.running
        self._on_change()
        return job

    def finish(self, job: Job, outputs: dict, meta: dict, status: dict) -> None:
        with self._lock:
            if len(self.history) >= MAX_HISTORY:
                self.history.pop(next(iter(self.history)))
            self.history[job.prompt_id] = {"prompt": job.item(), "outputs": outputs, "meta": meta,
                                           "status": status}
            self.running = None
        self._on_change()

    def remaining(self) -> int:
        with self._lock:
            return len(self._pending) + (self.running is not None)

    def snapshot(self) -> tuple[list[list], list[list]]:
        """(running items, pending items), copies safe to serialize."""
        with self._lock:
            running = [self.running.item()] if self.running else []
            return copy.deepcopy(running), copy.deepcopy([job.item() for job in self._pending])

    def delete(self, prompt_ids) -> int:
        """Remove pending jobs by id; the number removed."""
        wanted = set(prompt_ids)
        with self._lock:
            before = len(self._pending)
            self._pending = [job for job in self._pending if job.prompt_id not in wanted]
            removed = before - len(self._pending)
        if removed:
            self._on_change()
        return removed

    def clear(self) -> None:
        with self._lock:
            self._pending = []
        self._on_change()

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict:
        """ComfyUI's /history answer: every entry, the last `max_items`, or the one `prompt_id`."""
        with self._lock:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {prompt_id: copy.deepcopy(entry)} if entry else {}
            ids = list(self.history)
            if offset < 0 and max_items is not None:
                offset = len(ids) - max_items
            ids = ids[max(offset, 0):]
            if max_items is not None:
                ids = ids[:max_items]
            return {i: copy.deepcopy(self.history[i]) for i in ids}

    def delete_history(self, prompt_ids=(), clear: bool = False) -> None:
        with self._lock:
            if clear:
                self.history.clear()
            for prompt_id in prompt_ids:
                self.history.pop(prompt_id, None)

    def jobs(self) -> list[dict]:
        """Every job (running, pending, finished) as a job record."""
        running, pending = self.snapshot()
        with self._lock:
            history = copy.deepcopy(self.history)
        return ([job_record(item, "in_progress") for item in running]
                + [job_record(item, "pending") for item in pending]
                + [history_record(prompt_id, entry) for prompt_id, entry in history.items()])

    def job(self, prompt_id: str) -> dict | None:
        """One job with its outputs and workflow (/api/jobs/{id})."""
        entry = self.get_history(prompt_id).get(prompt_id)
        if entry is not None:
            return history_record(prompt_id, entry, detailed=True)
        running, pending = self.snapshot()
        for items, status in ((running, "in_progress"), (pending, "pending")):
            for item in items:
                if item[1] == prompt_id:
                    return job_record(item, status)
        return None


def _drop_none(record: dict) -> dict:
    return {k: v for k, v in record.items() if v is not None}


def job_record(item: list, status: str) -> dict:
    extra = item[3]
    return _drop_none({"id": item[1], "status": status, "priority": item[0],
                       "create_time": extra.get("create_time"), "outputs_count": 0,
                       "workflow_id": ((extra.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")})


def history_record(prompt_id: str, entry: dict, detailed: bool = False) -> dict:
    item, status = entry["prompt"], entry.get("status") or {}
    started = ended = error = None
    interrupted = False
    for event, data in status.get("messages", []):
        if event == "execution_start":
            started = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            error = data if event == "execution_error" else None
            interrupted = event == "execution_interrupted"
    state = ("cancelled" if interrupted else "failed" if status.get("status_str") == "error"
             else "completed")
    count, previewable, preview = 0, 0, None
    for node_id, ui in entry.get("outputs", {}).items():
        for media, items in ui.items():
            for output in items if isinstance(items, list) else []:
                if not isinstance(output, dict):
                    continue
                count += 1
                if media in PREVIEWABLE:
                    previewable += 1
                    preview = preview or {**output, "nodeId": node_id, "mediaType": media}
    record = job_record(item, state)
    record.update(_drop_none({"execution_start_time": started, "execution_end_time": ended,
                              "execution_error": error, "outputs_count": count,
                              "previewable_outputs_count": previewable, "preview_output": preview}))
    if detailed:
        record.update({"outputs": entry.get("outputs", {}), "execution_status": status,
                       "workflow": {"prompt": item[2], "extra_data": item[3]}})
    return record


def select_jobs(jobs: list[dict], statuses: list[str] | None, workflow_id: str | None,
                sort_by: str, sort_order: str, limit: int | None, offset: int) -> tuple[list[dict], int]:
    """Filter, sort and page job records as ComfyUI's /api/jobs does; (page, total)."""
    jobs = [j for j in jobs if (statuses is None or j["status"] in statuses)
            and (workflow_id is None or j.get("workflow_id") == workflow_id)]
    if sort_by == "execution_duration":
        def key(job: dict) -> Any:
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return end - start if start and end else 0
    else:
        def key(job: dict) -> Any:
            return job.get("create_time", 0)
    jobs.sort(key=key, reverse=sort_order == "desc")
    total = len(jobs)
    jobs = jobs[offset:]
    return (jobs[:limit] if limit is not None else jobs), total
