"""The ``ray`` executor: each cell of a suite is one Ray task, on one machine or a cluster.

    pip install 'harness-bench[ray]'
    harness run suites/quickstart.yaml --executor ray                  # a local Ray instance
    harness run suites/sweep.yaml --executor ray --address auto \\
        --set settings.cache_dir=/shared/harness-cache                 # an existing cluster

The runner keeps doing what it does for every executor: it plans the cells, skips those in the
results file or the cell cache, writes the rows of each finished cell as it arrives and caches
it. This executor only runs the remaining cells: one ``@ray.remote`` task per cell, asking for
``num_gpus_per_cell`` GPUs (default: 1 when the cluster has GPUs, else 0) and
``num_cpus_per_cell`` CPUs. Finished tasks stream back with ``ray.wait`` and are handed to the
runner one by one. A task whose worker process dies (crash, ``os._exit``, OOM kill, lost node) is
retried ``max_retries`` times by Ray, then reported ``failed`` with the reason; the run goes on.

Everything a cell writes (fine-tuned checkpoints, compressed artifacts) goes to
``settings.cache_dir``, made absolute on the driver; on a multi-node cluster it must be a path on
storage that every node mounts at the same place (see docs/scale-out.md).

Parameters are declared in ``RayExecutor.Params``; since ``harness run`` builds the executor
without arguments, each can also be set with an environment variable ``HARNESS_RAY_<NAME>``
(e.g. ``HARNESS_RAY_MAX_RETRIES=2``, ``HARNESS_RAY_RUNTIME_ENV='{...}'``), read when the executor
is built: a parameter given (not None) wins over its variable, the variable over the default.

Ray is imported only inside methods, so listing plugins works without it installed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

import harness
from harness.api import Executor, ExecutorContext
from harness.cell import CellOutcome, CellSpec
from harness.errors import PluginError

from .._lib.ray_worker import _PhaseLog, _plugin_paths, _run_in_worker

INSTALL_HINT = "the ray executor needs Ray: pip install 'harness-bench[ray]'"
ENV_PREFIX = "HARNESS_RAY_"
POLL_S = 0.5  #: how often the driver looks for finished cells, phases and timeouts


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise PluginError(INSTALL_HINT) from exc
    return ray


def _boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


#: how each parameter's ``HARNESS_RAY_<NAME>`` variable is read
_ENV_CASTS: dict[str, Callable[[str], Any]] = {
    "num_gpus_per_cell": float, "num_cpus_per_cell": float, "max_retries": int,
    "fine_tune_first": _boolean, "runtime_env": json.loads, "num_cpus": int, "object_store_mb": int,
}


def _with_env(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each parameter that is missing or None taken from ``$HARNESS_RAY_<NAME>``
    where that is set (else left out: the default applies)."""
    out = {k: v for k, v in data.items() if v is not None or k not in _ENV_CASTS}
    for name, cast in _ENV_CASTS.items():
        raw = os.environ.get(ENV_PREFIX + name.upper(), "").strip()
        if name in out or not raw:
            continue
        try:
            out[name] = cast(raw)
        except ValueError as exc:  # json.JSONDecodeError too
            raise ValueError(f"${ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return out


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class RayExecutor(Executor):
    """Each cell is a Ray task (one GPU, or CPUs); results stream back as cells finish."""

    name = "ray"
    version = "1"
    description = "cells as Ray tasks on a Ray cluster (--address auto) or a local Ray instance"

    class Params(harness.Params):
        """Each is also read from ``$HARNESS_RAY_<NAME>`` when not given (or given as None)."""

        num_gpus_per_cell: float | None = None
        """GPUs each cell's task asks for (fractions share a GPU); default: 1 when the cluster
        has GPUs, else 0."""
        num_cpus_per_cell: float = 1.0
        """CPUs each task asks for; on CPU cells it is also torch's thread count."""
        max_retries: int = Field(0, ge=0)
        """Times Ray re-runs a cell whose worker process or node died (0: the cell is
        ``failed``). A plugin's exception is never retried."""
        fine_tune_first: bool = True
        """Run one cell of each (model, task) before its other cells, so that the fine-tuned
        checkpoint is trained once and then read from the shared cache; false submits every
        cell at once."""
        runtime_env: dict[str, Any] | None = None
        """Ray runtime environment of the job (``env_vars``, ``pip``, ...)."""
        num_cpus: int | None = None
        """CPUs of the local Ray instance started when no cluster address is given (default:
        all); ignored when connecting to a cluster."""
        object_store_mb: int | None = None
        """Object store size of that local instance in MiB (default: Ray's)."""

        @model_validator(mode="before")
        @classmethod
        def _from_env(cls, data: Any) -> Any:
            return _with_env(data) if isinstance(data, dict) else data

    params: Params

    # -- connection --------------------------------------------------------------------------

    def _connect(self, ray: Any, address: str | None) -> bool:
        """Connect to (or start) Ray; True when this call started it and must shut it down."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"runtime_env": self.params.runtime_env, "log_to_driver": True}
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is None or address == "local":
            kwargs.update(include_dashboard=False, num_cpus=self.params.num_cpus)
            if self.params.object_store_mb:
                kwargs["object_store_memory"] = self.params.object_store_mb * 1024 * 1024
            if address:
                kwargs["address"] = address
        else:
            kwargs["address"] = address
            self._check_reachable(address)
        try:
            ray.init(**{k: v for k, v in kwargs.items() if v is not None})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address!r}" if address else "locally"
            raise PluginError(
                f"cannot start or reach Ray {where}: {type(exc).__name__}: {_first_line(str(exc))}"
                " (start a cluster with 'ray start --head', or leave --address out to run a "
                "local Ray instance)"
            ) from exc
        return True

    @staticmethod
    def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
        """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
        hostport = address.split("://", 1)[-1]
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            return  # "auto" and the like: Ray resolves and reports them itself
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
        except OSError as exc:
            raise PluginError(
                f"cannot reach the Ray cluster at {address!r}: {exc} (is 'ray start --head' "
                "running there, and is its port open to this machine?)"
            ) from exc

    # -- the run -----------------------------------------------------------------------------

    def run(self, cells: list[CellSpec], ectx: ExecutorContext,
            on_phase: Callable[[CellSpec, str], None],
            on_done: Callable[[CellSpec, CellOutcome], None]) -> None:
        ray = _import_ray()
        started_here = self._connect(ray, ectx.address)
        try:
            self._run(ray, cells, ectx, on_phase, on_done)
        finally:
            if started_here:
                ray.shutdown()

    def _resources(self, ray: Any) -> tuple[float, float]:
        """(GPUs, CPUs) each cell asks for; a warning when the cluster has fewer now."""
        resources = ray.cluster_resources()
        gpus = self.params.num_gpus_per_cell
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        cpus = self.params.num_cpus_per_cell
        for what, need in (("GPU", gpus), ("CPU", cpus)):
            if need > resources.get(what, 0):
                print(f"harness: warning: each cell asks for {need:g} {what} but the Ray cluster "
                      f"has {resources.get(what, 0):g} now; cells wait until such a node joins",
                      file=sys.stderr)
        return gpus, cpus

    def _run(self, ray: Any, cells: list[CellSpec], ectx: ExecutorContext,
             on_phase: Callable[[CellSpec, str], None],
             on_done: Callable[[CellSpec, CellOutcome], None]) -> None:
        gpus, cpus = self._resources(ray)
        run = _Schedule(self, ray, cells, ectx, gpus, cpus)
        for specs in run.groups.values():
            run.submit(specs.popleft())
            while specs and not self.params.fine_tune_first:
                run.submit(specs.popleft())
        try:
            while run.in_flight:
                ready, _ = ray.wait(list(run.in_flight), num_returns=len(run.in_flight),
                                    timeout=POLL_S)
                run.report_phases(on_phase)
                for ref in ready:
                    spec = run.in_flight.pop(ref)
                    outcome = self._outcome(ray, ref, spec, run.timed_out, run.fail_device)
                    on_done(spec, outcome)
                    run.after(spec, outcome)
                run.cancel_overdue()
        finally:
            run.stop()

    def _outcome(self, ray: Any, ref: Any, spec: CellSpec, timed_out: dict[str, str],
                 device: str) -> CellOutcome:
        """The task's CellOutcome, or a ``failed`` one that says why Ray could not give it."""
        exc_mod = ray.exceptions
        n = self.params.max_retries
        retried = f" (after {n} retr{'y' if n == 1 else 'ies'})" if n else ""
        try:
            outcome = ray.get(ref)
            if isinstance(outcome, CellOutcome):
                return outcome
            reason = f"the Ray task returned {type(outcome).__name__}, not a CellOutcome"
        except exc_mod.TaskCancelledError:
            reason = timed_out.get(spec.cell_id, "the Ray task was cancelled")
        except exc_mod.OutOfMemoryError as exc:
            reason = ("out of memory: Ray's memory monitor killed the worker running this cell"
                      f"{retried}: {_first_line(str(exc))}")
        except exc_mod.NodeDiedError as exc:
            reason = (f"the Ray node running this cell died{retried}: {_first_line(str(exc))}")
        except exc_mod.WorkerCrashedError as exc:
            reason = ("the Ray worker process running this cell died in the middle of the cell"
                      f"{retried} (WorkerCrashedError: it crashed, exited or was killed, e.g. "
                      f"by the OOM killer): {_first_line(str(exc))}")
        except exc_mod.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            reason = f"the Ray task raised {type(cause).__name__}: {_first_line(str(cause))}"
        except exc_mod.RayError as exc:
            reason = f"Ray could not run the cell{retried}: {type(exc).__name__}: " \
                     f"{_first_line(str(exc))}"
        return CellOutcome("failed", error=reason, phase="worker", info={"device": device})


class _Schedule:
    """The state of one ``RayExecutor.run``: cells grouped by (model, task), the Ray tasks in
    flight, when each started, which were cancelled for running past their time limit."""

    def __init__(self, executor: RayExecutor, ray: Any, cells: list[CellSpec],
                 ectx: ExecutorContext, gpus: float, cpus: float) -> None:
        self.ray, self.ectx = ray, ectx
        self.threads = max(1, int(cpus)) if cpus >= 1 else 1
        self.remote = ray.remote(_run_in_worker)
        self.options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": executor.params.max_retries,
                        "retry_exceptions": False}
        self.paths = _plugin_paths(list(ectx.extra_plugins))
        try:
            self.phases: Any = ray.remote(num_cpus=0)(_PhaseLog).remote()
        except Exception:  # noqa: BLE001 - progress is optional
            self.phases = None
        self.fail_device = "cuda" if gpus > 0 else "cpu"
        self.by_id = {c.cell_id: c for c in cells}
        self.groups: dict[str, deque[CellSpec]] = {}
        for spec in cells:
            key = repr([sorted(spec.model.spec().items()), sorted(spec.task.spec().items())])
            self.groups.setdefault(key, deque()).append(spec)
        self.group_of = {spec.cell_id: key for key, specs in self.groups.items() for spec in specs}
        self.in_flight: dict[Any, CellSpec] = {}
        self.started: dict[str, float] = {}  # cell_id -> when its task reported "setup"
        self.timed_out: dict[str, str] = {}

    def submit(self, spec: CellSpec) -> None:
        s = spec.settings
        shipped = replace(spec, settings=replace(s, cache_dir=str(Path(s.cache_dir).expanduser().absolute())))
        ref = self.remote.options(
            **self.options, name=f"harness {spec.model.name}/{spec.task.name}/{spec.compression.name}"
        ).remote(shipped, list(self.ectx.disabled_plugins), list(self.ectx.extra_plugins), self.paths,
                 self.threads, self.phases)
        self.in_flight[ref] = spec

    def report_phases(self, on_phase: Callable[[CellSpec, str], None]) -> None:
        if self.phases is None:
            return
        try:
            events = self.ray.get(self.phases.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - the actor died: go on without phases
            events, self.phases = [], None
        live = {s.cell_id for s in self.in_flight.values()}
        for cell_id, phase in events:
            if cell_id in live:
                if phase == "setup":  # worker start-up and queueing excluded
                    self.started[cell_id] = time.monotonic()
                on_phase(self.by_id[cell_id], phase)

    def after(self, spec: CellSpec, outcome: CellOutcome) -> None:
        """Submit what a finished cell unblocks in its (model, task) group."""
        rest = self.groups[self.group_of[spec.cell_id]]
        if outcome.status == "ok":  # the checkpoint is in the cache: all at once
            while rest:
                self.submit(rest.popleft())
        elif rest:  # not fitted (skipped, failed): the next cell leads
            self.submit(rest.popleft())

    def cancel_overdue(self) -> None:
        now = time.monotonic()
        for ref, spec in self.in_flight.items():
            limit = spec.settings.timeout_s
            t0 = self.started.get(spec.cell_id)
            if limit and t0 is not None and spec.cell_id not in self.timed_out and now - t0 > limit:
                self.timed_out[spec.cell_id] = (
                    f"timed out after {limit:g} s (settings.timeout_s); "
                    "the Ray task was cancelled and its worker killed")
                self.ray.cancel(ref, force=True)

    def stop(self) -> None:
        """Ctrl-C or an error in on_done: cancel what still runs, end the phase log."""
        for ref in self.in_flight:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        if self.phases is not None:
            try:
                self.ray.kill(self.phases)
            except Exception:  # noqa: BLE001
                pass


@harness.hookimpl
def register_executors(register):
    register(RayExecutor)
