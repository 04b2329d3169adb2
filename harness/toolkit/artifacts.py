"""Hashing, sizes and the compressed-artifact cache.

The cache lives at ``ctx.cache_dir/compress/<plugin>-<key>/`` and is keyed by the input model
(identity, head, weight content), the plugin's name, version and parameters, plus an optional
``extra_key`` (e.g. ``task_key(task)`` when the task's data shapes the artifact). The core keeps
chain steps' outputs in the same way under ``ctx.cache_dir/transform/`` (``kind``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api import CellContext, Compression, LoadedModel, Task
from ..fsutil import publish_dir


def hash_text(*parts: object) -> str:
    """sha256 (16 hex digits) of ``repr(parts)``."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def sha256_files(paths: list[Path], extra: str = "") -> str:
    """Hash of file contents (sorted by name) plus ``extra``; 16 hex digits."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def dir_bytes(path: Path) -> int:
    """Bytes on disk of a file or of every file under a folder (how artifact sizes are measured)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def missing_packages_reason(plugin: str, *packages: str) -> str | None:
    """The skip reason of ``plugin`` when any of ``packages`` is not importable here, else None."""
    missing = [n for n in packages if importlib.util.find_spec(n) is None]
    if missing:
        return f"{plugin}: package(s) {', '.join(missing)} not installed (pip install {' '.join(missing)})"
    return None


def plugin_params(plugin: Any) -> dict[str, Any]:
    """A plugin's constructor parameters as set (each stored under its own name)."""
    return {n: getattr(plugin, n, None) for n in type(plugin).parameters()}


def module_fingerprint(module: Any) -> str:
    """sha256 (16 hex digits) of every tensor of the module's state dict: names, dtypes,
    shapes and bytes. ``LoadedModel.identity`` names where weights came from but not the head
    (an untrained head is initialised at load time), so the cache also keys on the content."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.is_quantized:
            t = t.int_repr()
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cache_key(model: LoadedModel, comp: Compression, extra_key: str = "") -> str:
    """Hash of the input model (identity, head and weight content), the plugin's name, version
    and parameters, plus ``extra_key`` (e.g. the task's data when it shapes the artifact)."""
    params = json.dumps(plugin_params(comp), sort_keys=True, default=str)
    return hash_text(
        model.identity, model.head.kind, tuple(model.head.labels), module_fingerprint(model.module),
        comp.name, comp.version, params, extra_key,
    )


def cache_dir(ctx: CellContext, model: LoadedModel, comp: Compression, extra_key: str = "",
              kind: str = "compress") -> Path:
    """The cache folder of this model and plugin configuration (it may not exist yet), under
    ``ctx.cache_dir/<kind>/``."""
    return Path(ctx.cache_dir) / kind / f"{comp.name}-{cache_key(model, comp, extra_key)}"


def task_key(task: Task) -> str:
    """The task's name, version, parameters and data hash (for data-dependent compressions)."""
    try:
        data = task.data_hash()
    except Exception:  # noqa: BLE001 - a task without data hashing: parameters only
        data = ""
    params = json.dumps(plugin_params(task), sort_keys=True, default=str)
    return hash_text(task.name, task.version, params, data)


def cached_or_build(
    ctx: CellContext,
    model: LoadedModel,
    comp: Compression,
    build: Callable[[Path], dict[str, Any]],
    extra_key: str = "",
    kind: str = "compress",
) -> tuple[Path, dict[str, Any], bool]:
    """Return ``(folder, meta, cache_hit)`` for this model and plugin configuration.

    On a miss, ``build(model_dir)`` writes the artifact into ``model_dir`` (an empty folder,
    ``folder / "model"`` once published) and returns extra metadata; it is timed, and the folder
    is published atomically (written under a temporary name, renamed when complete), so an
    interrupted or concurrent build never leaves a half-written entry behind.
    ``meta["compression_time_s"]`` is the time of the original build.
    """
    final = cache_dir(ctx, model, comp, extra_key, kind)
    meta_file = final / "meta.json"
    if meta_file.exists():
        try:
            return final, json.loads(meta_file.read_text()), True
        except (OSError, json.JSONDecodeError):
            shutil.rmtree(final, ignore_errors=True)  # corrupt entry: rebuild
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (tmp / "model").mkdir(parents=True)
    try:
        ctx.progress("compress", f"{comp.name}: compressing")
        t0 = time.perf_counter()
        extra = build(tmp / "model") or {}
        meta = {
            "plugin": comp.name,
            "plugin_version": comp.version,
            "params": plugin_params(comp),
            "model_identity": model.identity,
            "model_source": model.source,
            "compression_time_s": round(time.perf_counter() - t0, 3),
            "cache_key": final.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if not publish_dir(tmp, final, complete="meta.json"):  # another process first: use theirs
            meta = json.loads(meta_file.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, meta, False


def copy_artifact(src: Path, directory: Path) -> Path:
    """Copy a cached ``model/`` folder to ``directory/model`` (what ``Predictor.save`` writes)."""
    out = Path(directory) / "model"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    return out


def base_info(comp: Compression, runtime: str, meta: dict[str, Any] | None, hit: bool) -> dict[str, Any]:
    """The ``describe()`` columns every compression should report, from ``cached_or_build``'s
    ``meta`` and ``hit``. (No ``compression`` or ``compression_params`` key: the core's row
    already has those columns.)

    ``compression_time_s`` is the time this cell spent compressing: 0 on a cache hit, as the
    core documents; ``compression_time_build_s`` is what building the cached artifact took.
    """
    meta = meta or {}
    built = float(meta.get("compression_time_s", 0.0))
    info: dict[str, Any] = {
        "runtime": runtime,
        "compression_time_s": 0.0 if hit else built,
        "compression_time_build_s": built,
        "cache_hit": hit,
    }
    if meta.get("created"):
        info["compression_cache_key"] = str(meta.get("cache_key", ""))
    return info
