"""Background jobs (ingests) whose progress survives page switches and reruns.

A job runs on a worker thread; kb reports progress to it from whatever thread it likes, and
the page reads a snapshot under a lock and polls with `st.fragment(run_every=...)`. Jobs live in
a process-wide registry (`st.cache_resource`); a session remembers its job ids only, so leaving
the page and coming back finds the job still running. No Streamlit call happens off the
script thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

import kb

log = logging.getLogger("kb.app")

RUNNING, DONE, FAILED = "running", "done", "failed"
# Finished jobs are kept this long so a returning user still sees the report.
KEEP_FINISHED_SECONDS = 6 * 3600


@dataclass(frozen=True, slots=True)
class JobView:
    """A consistent copy of a job's state for one render."""

    id: str
    label: str
    state: str
    started: float
    finished: float | None
    progress: Any
    result: Any
    error: str | None
    detail: dict[str, Any]

    @property
    def running(self) -> bool:
        """Tell whether the job is still working."""
        return self.state == RUNNING

    @property
    def elapsed(self) -> float:
        """Return the seconds since the job started (until it finished)."""
        return (self.finished or time.time()) - self.started


@dataclass(eq=False)
class Job:
    """One background task: its latest progress, and its result or error once finished."""

    label: str
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _state: str = RUNNING
    _progress: Any = None
    _result: Any = None
    _error: str | None = None
    _finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)

    def report(self, progress: Any) -> None:
        """Record the latest progress (called by kb from any thread)."""
        with self._lock:
            self._progress = progress

    def _finish(self, *, result: Any = None, error: str | None = None) -> None:
        with self._lock:
            self._result = result
            self._error = error
            self._state = FAILED if error is not None else DONE
            self._finished = time.time()

    def view(self) -> JobView:
        """Return a consistent snapshot for rendering."""
        with self._lock:
            return JobView(
                id=self.id,
                label=self.label,
                state=self._state,
                started=self.started,
                finished=self._finished,
                progress=self._progress,
                result=self._result,
                error=self._error,
                detail=dict(self.detail),
            )


class JobRegistry:
    """Every job of this process, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def start(
        self,
        label: str,
        work: Callable[[Job], Any],
        *,
        detail: dict[str, Any] | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> Job:
        """Run `work(job)` on a new daemon thread and return the job at once."""
        job = Job(label=label, detail=detail or {})
        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job

        def target() -> None:
            try:
                result = work(job)
            except kb.KBError as exc:
                job._finish(error=str(exc))
            except Exception as exc:
                log.exception("background job %s failed", job.id)
                job._finish(error=f"{type(exc).__name__}: {exc}")
            else:
                job._finish(result=result)
            if on_finish is not None:
                try:
                    on_finish(job)
                except Exception:
                    log.exception("cleanup of job %s failed", job.id)

        threading.Thread(target=target, name=f"kb-job-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str | None) -> Job | None:
        """Return the job with this id, or None."""
        if not job_id:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        """Return the jobs still working."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if j.view().running]

    def _forget_old(self) -> None:
        now = time.time()
        for job_id, job in list(self._jobs.items()):
            view = job.view()
            if view.finished is not None and now - view.finished > KEEP_FINISHED_SECONDS:
                del self._jobs[job_id]


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    """Return the process-wide job registry."""
    return JobRegistry()
