"""Where a result came from: versions, commit, machine. Gathered once per run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the git checkout around ``start`` (default: cwd), '+dirty' if modified."""
    cwd = str(start or Path.cwd())
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """CPU feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def environment() -> dict[str, Any]:
    """Run-level provenance columns (no torch import: versions come from metadata)."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                        "amx_int8") if f in flags]
    return {
        "harness_version": _version("harness-bench"),
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "transformers_version": _version("transformers"),
        "openvino_version": _version("openvino"),
        "nncf_version": _version("nncf"),
        "onnxruntime_version": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "onnx_version": _version("onnx"),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_isa": " ".join(isa),
        "cpu_count": os.cpu_count(),
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
    }


def gpu_environment(devices: list[str]) -> dict[str, Any]:
    """GPU provenance columns for a run on CUDA devices: the CUDA version torch was built with,
    cuDNN, the driver (from ``nvidia-smi``) and the name of every device used."""
    if not any(d.startswith("cuda") for d in devices):
        return {}
    out: dict[str, Any] = {"gpu_names": ", ".join(device_name(d) for d in devices)}
    try:
        import torch

        out["cuda_version"] = torch.version.cuda
        out["cudnn_version"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if smi.returncode == 0 and smi.stdout.strip():
            out["gpu_driver"] = smi.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        try:
            import torch

            return torch.cuda.get_device_name(torch.device(device))
        except (AssertionError, RuntimeError):  # no CUDA in this torch / no such device
            return device
    return cpu_name()
