"""The built-in executors: ``local`` (a pool of spawned worker processes) and ``inline``.

Registered through the ``register_executors`` hook like any plugin's executor.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .api import Executor, ExecutorContext
from .cell import CellOutcome, CellSpec, PluginSet, run_cell
from .errors import HarnessWarning
from .hookspecs import hookimpl
from .scheduling import built, next_ready

#: a worker's start-up (imports, plugin loading) does not count towards a cell's timeout,
#: up to this many seconds
STARTUP_GRACE_S = 300



def physical_gpu(device: str, visible: str | None) -> str:
    """What to put in a worker's ``CUDA_VISIBLE_DEVICES`` for ``device`` ("cuda:N") as this
    process numbers it: the N-th entry of this process's own ``CUDA_VISIBLE_DEVICES`` when that
    is set (so ``CUDA_VISIBLE_DEVICES=2,3 harness run`` uses GPUs 2 and 3), else N."""
    index = device.split(":", 1)[1] if ":" in device else "0"
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if entries and index.isdigit() and int(index) < len(entries):
        return entries[int(index)]
    return index


def start_pinned(proc: Any, device: str) -> None:
    """Start the spawned process ``proc`` with ``CUDA_VISIBLE_DEVICES`` pinned to ``device``'s
    GPU (:func:`physical_gpu`; unchanged on CPU); this process's own value is restored."""
    backup = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device.startswith("cuda"):
        os.environ["CUDA_VISIBLE_DEVICES"] = physical_gpu(device, backup)
    try:
        proc.start()
    finally:
        if backup is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = backup


def _exit_with_parent(parent: int) -> None:
    """End this worker as soon as the process that started it is gone (``kill -9`` of
    ``harness run`` must not leave workers behind): the kernel's parent-death signal on Linux,
    and everywhere a thread that watches the parent pid."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="harness-parent-watch", daemon=True).start()


def _forward_warnings(outbox: Any, cell: dict[str, str]) -> None:
    """A :class:`HarnessWarning` raised in this worker (by the core or a plugin) is sent to the
    parent, which shows it as its own (the CLI's one 'Warning: ...' line); other warnings print
    here as usual."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HarnessWarning):
            outbox.put(("warn", cell.get("id", ""), str(message)))
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@contextlib.contextmanager
def _harness_warnings_once():
    """While cells run in this process, a :class:`HarnessWarning` whose text was shown already
    is not shown again (one line for a data problem every cell of a task meets)."""
    original, shown = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HarnessWarning):
            if str(message) in shown:
                return
            shown.add(str(message))
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def _worker_main(disabled: list[str], extra: list[str], threads: int | None,
                 inbox: Any, outbox: Any, parent: int | None = None) -> None:
    """Worker loop: build plugins once, run cells until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is not None:
        _exit_with_parent(parent)
    # the parent draws the progress; keep library chatter (load reports, shard bars) quiet
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if threads:
        import torch

        torch.set_num_threads(threads)
    current: dict[str, str] = {}
    _forward_warnings(outbox, current)
    plugins = PluginSet.build(disabled, extra)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        spec: CellSpec = msg
        current["id"] = spec.cell_id

        def progress(phase: str, text: str, _id: str = spec.cell_id) -> None:
            outbox.put(("phase", _id, phase, text))

        outcome = run_cell(spec, plugins, progress=progress)
        outbox.put(("done", spec.cell_id, outcome))


def phase_text(phase: str, text: str) -> str:
    """What ``on_phase`` gets: the phase, and a plugin's progress text in it when there is one
    (``fine-tune: step 300/2195 loss 0.2100``): a long fine-tune shows how far it is."""
    return f"{phase}: {text}" if text else phase


@dataclass
class _Worker:
    device: str
    proc: Any = None
    inbox: Any = None
    cell: CellSpec | None = None
    started: float = 0.0
    begun: bool = False
    phase: str = "setup"  #: the cell's phase as last reported (what it is building)


class LocalExecutor(Executor):
    """One spawned worker process per device slot; replaces a worker that dies or hangs."""

    name = "local"
    version = "1"
    description = "spawned worker processes: one per GPU (pinned), or --jobs on CPU"

    def _setup(self, ectx: ExecutorContext) -> None:
        self.ctx = mp.get_context("spawn")
        self.outbox = self.ctx.Queue()
        self.ectx = ectx
        ncpu = os.cpu_count() or 1
        devices, jobs = ectx.devices, max(1, ectx.jobs)
        self.threads = max(1, ncpu // jobs) if devices == ["cpu"] else None
        slots = [devices[i % len(devices)] for i in range(jobs)]
        self.built: set[str] = set()  # cached work finished in this run (harness.scheduling)
        self.workers = [_Worker(d) for d in slots]
        for w in self.workers:
            self._start(w)

    def _start(self, w: _Worker) -> None:
        w.inbox = self.ctx.Queue()
        w.proc = self.ctx.Process(
            target=_worker_main,
            args=(self.ectx.disabled_plugins, self.ectx.extra_plugins, self.threads,
                  w.inbox, self.outbox, os.getpid()),
            daemon=True,
        )
        start_pinned(w.proc, w.device)
        w.cell = None

    def run(self, cells: list[CellSpec], ectx: ExecutorContext,
            on_phase: Callable[[CellSpec, str], None],
            on_done: Callable[[CellSpec, CellOutcome], None]) -> None:
        self._setup(ectx)
        try:
            with _harness_warnings_once():  # a worker's warning, shown here once per run
                self._loop(cells, on_phase, on_done)
        except BaseException:  # Ctrl-C, SIGTERM: the cells in flight are abandoned at once
            self._close(kill=True)
            raise
        self._close()

    def _loop(self, cells, on_phase, on_done) -> None:
        pending = list(cells)
        by_id = {c.cell_id: c for c in cells}
        while pending or any(w.cell for w in self.workers):
            for w in self.workers:
                if w.cell is None and pending:
                    self._assign_next(w, pending)
            try:
                msg = self.outbox.get(timeout=0.2)
            except queue.Empty:
                msg = None
            if msg is not None:
                self._handle(msg, by_id, on_phase, on_done)
            for w in self.workers:
                reason = self._lost(w) if w.cell is not None else None
                if reason:
                    self._replace(w, reason, by_id, on_phase, on_done)

    def _assign_next(self, w: _Worker, pending: list[CellSpec]) -> None:
        """Give ``w`` the first pending cell that needs nothing another worker is building now
        (``harness.scheduling``); none while every pending cell waits on one."""
        spec = next_ready(pending, [(x.cell, x.phase) for x in self.workers if x.cell], self.built)
        if spec is not None:
            pending.remove(spec)
            self._assign(w, spec)

    @staticmethod
    def _assign(w: _Worker, spec: CellSpec) -> None:
        # inside the worker the pinned GPU is always cuda:0
        w.cell = replace(spec, device="cuda:0" if w.device.startswith("cuda") else "cpu")
        w.started, w.begun, w.phase = time.monotonic(), False, "setup"
        w.inbox.put(w.cell)

    @staticmethod
    def _lost(w: _Worker) -> str | None:
        """Why the worker's cell is lost (the worker died, or the cell ran past its timeout:
        then the worker is killed), or None while it is fine."""
        assert w.cell is not None
        if not w.proc.is_alive():
            code = w.proc.exitcode
            if code is None or code >= 0:
                return f"worker process exited with status {code} in the middle of the cell"
            sig = signal.Signals(-code).name
            return (f"worker process was killed by {sig}"
                    + (" (out of memory? the kernel's OOM killer sends SIGKILL)"
                       if sig == "SIGKILL" else ""))
        timeout = w.cell.settings.timeout_s
        if not timeout or time.monotonic() - w.started <= timeout + (0 if w.begun else STARTUP_GRACE_S):
            return None
        w.proc.kill()
        return (f"timed out after {timeout:g} s (settings.timeout_s); worker killed"
                if w.begun else f"worker did not start within {STARTUP_GRACE_S} s")

    def _replace(self, w: _Worker, reason: str, by_id, on_phase, on_done) -> None:
        """Report the lost cell as failed and start a fresh worker."""
        assert w.cell is not None
        spec = by_id[w.cell.cell_id]
        w.proc.join(5)
        # every message already sent (by this worker or any other) is handled, so a 'done'
        # the dying worker managed to send counts, and none of another worker's messages is lost
        self._drain(by_id, on_phase, on_done)
        if w.cell is not None:
            w.cell = None
            on_done(spec, CellOutcome("failed", error=reason, phase="worker",
                                      info={"device": w.device}))
        self._start(w)

    def _handle(self, msg: tuple, by_id: dict[str, CellSpec], on_phase, on_done) -> None:
        """One message from a worker: a phase change, a warning or a finished cell."""
        kind, cell_id = msg[0], msg[1]
        if kind == "warn":  # shown like a warning of this process
            warnings.warn(msg[2], HarnessWarning, stacklevel=1)
            return
        w = next((w for w in self.workers if w.cell and w.cell.cell_id == cell_id), None)
        if w is None:  # a late message for a cell already reported (e.g. timed out)
            return
        if kind == "phase":
            if not msg[3]:  # the core's announcement of a phase, not a plugin's progress text
                w.phase = msg[2]  # (a student's training reports "fine-tune" inside "compress")
                self.built |= built(by_id[cell_id], msg[2])
            if msg[2] == "setup" and not w.begun:
                w.started, w.begun = time.monotonic(), True  # worker start-up excluded
            on_phase(by_id[cell_id], phase_text(msg[2], msg[3]))
        elif kind == "done":
            w.cell = None
            on_done(by_id[cell_id], msg[2])

    def _drain(self, by_id, on_phase, on_done) -> None:
        """Handle every message already in the outbox (from any worker)."""
        while True:
            try:
                msg = self.outbox.get_nowait()
            except queue.Empty:
                return
            self._handle(msg, by_id, on_phase, on_done)

    def _close(self, kill: bool = False) -> None:
        for w in self.workers:
            if kill and w.cell is not None:  # its cell is abandoned; an idle worker ends cleanly
                w.proc.kill()
            elif w.proc.is_alive():
                w.inbox.put(None)
        for w in self.workers:
            w.proc.join(2 if kill else 10)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)
        for q in (self.outbox, *(w.inbox for w in self.workers)):
            q.close()


class InlineExecutor(Executor):
    """Runs cells in this process (``--jobs 0``): no isolation, easiest to debug."""

    name = "inline"
    version = "1"
    description = "cells run in the harness process itself (no isolation; for debugging)"

    def run(self, cells, ectx, on_phase, on_done) -> None:
        pm = ectx.plugin_manager
        plugins = PluginSet(pm.registries()) if pm is not None else PluginSet.build(
            ectx.disabled_plugins, ectx.extra_plugins)
        with _harness_warnings_once():
            for cell in cells:
                spec = replace(cell, device=ectx.devices[0])

                def progress(phase: str, text: str, spec: CellSpec = spec) -> None:
                    on_phase(spec, phase_text(phase, text))

                on_done(spec, run_cell(spec, plugins, progress=progress))


@hookimpl
def register_executors(register):
    register(LocalExecutor)
    register(InlineExecutor)
