"""Executors as plugins: the ``register_executors`` hook, and the ``ray`` executor on a local
Ray cluster (loopback, 2 CPUs). The Ray tests are skipped when Ray is not installed
(``pip install 'harness-bench[ray]'``)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from suite_kit import MODEL, ner_entry

import harness
from harness.api import Executor, ExecutorContext
from harness.cell import CellSpec, PluginSet, run_cell
from harness.errors import PluginError
from harness.testing import FAST_SETTINGS, make_plugin_manager

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NER = ner_entry(32)

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed (pip install 'harness-bench[ray]')")


def suite_doc(tmp: Path, compressions, **settings) -> dict:
    return {"name": "t", "settings": {**FAST_SETTINGS, "cache_dir": str(tmp / "cache"), **settings},
            "models": [MODEL], "tasks": [NER], "compressions": compressions}


def write_suite(tmp: Path, doc: dict, name: str = "suite.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(doc))
    return p


def _plugins_env() -> str:
    """faulty, plus the ray executor module unless it is already an installed entry point."""
    installed = {ep.value for ep in md.entry_points(group="harness")}
    return "faulty" if "harness_plugins.executors.ray" in installed \
        else "faulty,harness_plugins.executors.ray"


def cli(*args, cwd: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "plugins"),
           "HARNESS_PLUGINS": _plugins_env(), **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


# ---------------------------------------------------------------------------------------------
# The hook (no Ray needed)


class _Recording(Executor):
    """Runs cells in this process and remembers that it was called."""

    name = "recording"
    calls: list[int] = []

    def run(self, cells, ectx, on_phase, on_done):
        type(self).calls.append(len(cells))
        plugins = PluginSet(ectx.plugin_manager.registries())
        for spec in cells:
            on_done(spec, run_cell(spec, plugins))


class _RecordingPlugin:
    @harness.hookimpl
    def register_executors(self, register):
        register(_Recording)


def test_hook_register_executors(run_suite_dict):
    obj = _RecordingPlugin()
    pm = harness.get_plugin_manager(extra_plugins=[obj])
    assert pm.registries().executors.get("recording") is _Recording
    _Recording.calls.clear()
    df = run_suite_dict(suite_doc(Path("/u"), ["needs-tpu"]) | {"settings": {}},
                        pm=make_plugin_manager(obj, __import__("faulty")), executor="recording")
    assert _Recording.calls == [1]
    assert df.status.tolist() == ["skipped"]


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    from harness_plugins.executors.ray import INSTALL_HINT, RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    ectx = ExecutorContext(devices=["cpu"], jobs=1, disabled_plugins=[], extra_plugins=[])
    with pytest.raises(PluginError, match=r"pip install 'harness-bench\[ray\]'"):
        RayExecutor().run([], ectx, lambda *a: None, lambda *a: None)
    assert "harness-bench[ray]" in INSTALL_HINT


def test_ray_executor_parameters_and_local_instance(monkeypatch):
    """Parameters come from __init__ or $HARNESS_RAY_<NAME>; no address starts a small local
    Ray instance with the dashboard off, an address connects to it."""
    from harness_plugins.executors.ray import RayExecutor

    monkeypatch.setenv("HARNESS_RAY_MAX_RETRIES", "2")
    monkeypatch.setenv("HARNESS_RAY_NUM_CPUS", "2")
    monkeypatch.setenv("HARNESS_RAY_OBJECT_STORE_MB", "80")
    monkeypatch.setenv("HARNESS_RAY_RUNTIME_ENV", '{"env_vars": {"A": "1"}}')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ex = RayExecutor(max_retries=1)
    p = ex.params
    assert (p.max_retries, p.num_cpus, p.num_cpus_per_cell, p.num_gpus_per_cell) == (1, 2, 1, None)
    assert RayExecutor(max_retries=None).params.max_retries == 2  # None: the variable, as before
    assert "num_gpus_per_cell" in RayExecutor.Params.model_fields

    class FakeRay:
        inits: list[dict] = []

        def is_initialized(self):
            return False

        def init(self, **kw):
            self.inits.append(kw)

    fake = FakeRay()
    assert ex._connect(fake, None) is True
    assert ex._connect(fake, "auto") is True
    local, remote = fake.inits
    assert local["num_cpus"] == 2 and local["include_dashboard"] is False
    assert local["object_store_memory"] == 80 * 1024 * 1024
    assert local["runtime_env"] == {"env_vars": {"A": "1"}} and "address" not in local
    assert remote["address"] == "auto" and "num_cpus" not in remote
    monkeypatch.setenv("HARNESS_RAY_MAX_RETRIES", "many")
    with pytest.raises(PluginError, match="HARNESS_RAY_MAX_RETRIES"):
        RayExecutor()
    monkeypatch.delenv("HARNESS_RAY_MAX_RETRIES")
    with pytest.raises(PluginError, match="'max_retries' of .*'ray'"):
        RayExecutor(max_retries=-1)


@needs_ray
def test_ray_failures_become_failed_cells_with_the_reason():
    """What Ray raises for a cell (worker crash after retries, OOM kill, lost node, timeout
    cancel, an exception in the task) becomes a ``failed`` outcome naming the cause."""
    import ray.exceptions as rex

    from harness_plugins.executors.ray import RayExecutor

    class FakeRay:
        exceptions = rex

        def __init__(self, exc):
            self.exc = exc

        def get(self, ref):
            raise self.exc

    spec = CellSpec("c1", None, None, None, None)  # type: ignore[arg-type]
    ex = RayExecutor(max_retries=2)
    cases = {
        rex.WorkerCrashedError(): "worker process running this cell died in the middle of the "
                                  "cell (after 2 retries) (WorkerCrashedError",
        rex.OutOfMemoryError("node low on memory"): "out of memory: Ray's memory monitor",
        rex.NodeDiedError("node 10.0.0.7 is dead"): "Ray node running this cell died (after 2 "
                                                     "retries): node 10.0.0.7 is dead",
        rex.TaskCancelledError(): "timed out after 3 s",
        rex.RayTaskError("f", "tb", ValueError("bad")): "the Ray task raised ValueError: bad",
    }
    for exc, reason in cases.items():
        out = ex._outcome(FakeRay(exc), None, spec, {"c1": "timed out after 3 s"}, "cpu")
        assert (out.status, out.phase) == ("failed", "worker")
        assert reason in out.error, (exc, out.error)


# ---------------------------------------------------------------------------------------------
# On a local Ray cluster


@pytest.fixture(scope="module")
def ray_address():
    """A Ray cluster on loopback with 2 CPUs, shared by this module's runs (started once)."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install 'harness-bench[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024,
             log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _summary(df):
    cells = df.groupby("compression")
    return (cells.status.first().to_dict(),
            {c: sorted(m for m in g.metric if m) for c, g in cells})


@needs_ray
def test_ray_runs_suite_like_local_and_a_crash_fails_only_its_cell(
        tmp_path, ray_address, run_suite_dict):
    doc = suite_doc(tmp_path, ["none", "needs-tpu", "exits"])
    suite = write_suite(tmp_path, doc)
    r = cli("run", str(suite), "--executor", "ray", "--address", ray_address,
            "--out", str(tmp_path / "out"), "--no-progress", "--no-report", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    df = harness.load_results(tmp_path / "out")
    status, metrics = _summary(df)
    assert status == {"none": "ok", "needs-tpu": "skipped", "exits": "failed"}
    err = df.groupby("compression").error.first()
    assert "worker process running this cell died" in err["exits"]
    assert "WorkerCrashedError" in err["exits"]
    assert "needs a TPU" in err["needs-tpu"]
    assert "FAILED: tiny/conll/exits" in r.stderr
    assert set(df[df.compression == "none"].device) == {"cpu"}

    # the same cells run in-process (as the local executor runs them) give the same rows
    local = run_suite_dict(suite_doc(tmp_path, ["none", "needs-tpu"]),
                           pm=make_plugin_manager(__import__("faulty")),
                           out=tmp_path / "inline", force=True)
    lstatus, lmetrics = _summary(local)
    assert lstatus == {c: status[c] for c in lstatus}
    assert lmetrics == {c: metrics[c] for c in lmetrics}
    assert set(local.cell_id) <= set(df.cell_id)

    # a re-run takes the finished cells from the cache: nothing is submitted to Ray (the
    # address below has no cluster, so any attempt to reach one would fail the run)
    r2 = cli("run", str(suite), "--executor", "ray", "--address", "127.0.0.1:1",
             "--only", "*/*/none", "--only", "*/*/needs-tpu", "--out", str(tmp_path / "again"),
             "--no-progress", "--no-report", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 cached" in r2.stdout
    again = harness.load_results(tmp_path / "again")
    assert again.cached.all() and _summary(again)[0] == {"none": "ok", "needs-tpu": "skipped"}


@needs_ray
def test_ray_cell_timeout_cancels_the_task(tmp_path, ray_address):
    doc = suite_doc(tmp_path, ["hangs", "needs-tpu"], timeout_s=3.0)
    r = cli("run", str(write_suite(tmp_path, doc)), "--executor", "ray",
            "--address", ray_address, "--out", str(tmp_path / "out"), "--no-progress",
            "--no-report", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    df = harness.load_results(tmp_path / "out")
    status = df.groupby("compression").status.first().to_dict()
    assert status == {"hangs": "failed", "needs-tpu": "skipped"}
    err = df.groupby("compression").error.first()["hangs"]
    assert "timed out after 3 s" in err and "cancelled" in err
