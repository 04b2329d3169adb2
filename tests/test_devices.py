"""Device detection: a machine without a GPU driver is CPU-only without importing torch (the
import is most of a fully cached re-run's time)."""

from __future__ import annotations

import sys
import types

from harness import runner


def test_no_gpu_driver_means_cpu_without_asking_torch(tmp_path, monkeypatch):
    assert not runner.may_have_gpu([str(tmp_path / "nvidia0")]) or not sys.platform.startswith("linux")
    (tmp_path / "nvidia0").touch()
    assert runner.may_have_gpu([str(tmp_path / "nvidia0")])
    # a torch whose CUDA query fails loudly: never consulted when no driver node exists
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(is_available=lambda: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(runner, "may_have_gpu", lambda nodes=(): False)
    assert runner.detect_devices() == ["cpu"]
    # with a driver node, torch decides
    fake.cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)
    monkeypatch.setattr(runner, "may_have_gpu", lambda nodes=(): True)
    assert runner.detect_devices() == ["cuda:0", "cuda:1"]
