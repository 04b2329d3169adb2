"""Hashing, sizes and the compressed-artifact cache.

The cache lives at ``ctx.cache_dir/compress/<plugin>-<key>/`` and is keyed by the input model
(identity, head, weight content), the plugin's name, version and parameters, plus an optional
``extra_key`` (e.g. ``task_key(task)`` when the task's data shapes the artifact). The core keeps
chain steps' outputs in the same way under ``ctx.cache_dir/transform/`` (``kind``).

Trust: an entry is data, never code. Loaders read tensors (safetensors), JSON and runtime graph
files (ONNX, OpenVINO IR) only; nothing is unpickled and no class or function is named by a
file. ``cached_load`` turns an entry that does not load (a corrupt or foreign file, wrong
shapes) into a rebuild, or into :class:`CorruptCacheEntry` naming its folder
(docs/reliability.md, "Trust model of a shared cache").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..api import CellContext, Compression, LoadedModel, Task
from ..errors import HarnessError, HarnessWarning
from ..fsutil import build_and_publish, discard_dir, safe_name
from ..params import as_key

T = TypeVar("T")


class CorruptCacheEntry(HarnessError):
    """A cache entry that does not load (and could not be rebuilt); the message names its folder."""

    def __init__(self, folder: Path, what: str, exc: BaseException | None = None) -> None:
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(f"cache entry {folder}: {what}{cause}")
        self.folder = Path(folder)


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


def dir_sha256(path: Path) -> str:
    """sha256 (16 hex digits) of a file, or of every file under a folder (relative names and
    contents, in sorted order): the ``artifact_sha256`` a cell records for its saved artifact."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path) if p != path else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def missing_packages_reason(plugin: str, *packages: str) -> str | None:
    """The skip reason of ``plugin`` when any of ``packages`` is not importable here, else None."""
    missing = [n for n in packages if importlib.util.find_spec(n) is None]
    if missing:
        return f"{plugin}: package(s) {', '.join(missing)} not installed (pip install {' '.join(missing)})"
    return None


def plugin_params(plugin: Any) -> dict[str, Any]:
    """A plugin's validated parameters with defaults filled in (``harness.params.as_key``)."""
    return as_key(plugin)


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
    ``ctx.cache_dir/<kind>/``; the plugin's name as :func:`harness.fsutil.safe_name` gives it
    (a short safe name as it is, so existing entries stay valid)."""
    return Path(ctx.cache_dir) / safe_name(kind) / (
        f"{safe_name(comp.name)}-{cache_key(model, comp, extra_key)}")


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
        meta = read_meta(meta_file)
        if meta is not None:
            return final, meta, True
        discard_dir(final)  # corrupt entry: rebuild
    written: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        (tmp / "model").mkdir()
        ctx.progress("compress", f"{comp.name}: compressing")
        t0 = time.perf_counter()
        extra = build(tmp / "model") or {}
        written.update({
            "plugin": comp.name,
            "plugin_version": comp.version,
            "params": plugin_params(comp),
            "model_identity": model.identity,
            "model_source": model.source,
            "compression_time_s": round(time.perf_counter() - t0, 3),
            "cache_key": final.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        })
        (tmp / "meta.json").write_text(json.dumps(written, indent=2, sort_keys=True, default=str))

    if not build_and_publish(final, fill, complete="meta.json"):  # another process first: theirs
        theirs = read_meta(meta_file)
        if theirs is None:
            raise CorruptCacheEntry(final, "meta.json is not a JSON object and the entry "
                                           "cannot be replaced (remove the folder to rebuild it)")
        return final, theirs, False
    return final, written, False


def read_meta(path: Path) -> dict[str, Any] | None:
    """A cache entry's JSON object, or None when the file does not read as one."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("compression_time_s", 0.0), (int, float)):
        return None
    return meta


def cached_load(
    ctx: CellContext,
    model: LoadedModel,
    comp: Compression,
    build: Callable[[Path], dict[str, Any]],
    load: Callable[[Path], T],
    extra_key: str = "",
    kind: str = "compress",
) -> tuple[Path, dict[str, Any], bool, T]:
    """:func:`cached_or_build`, then ``load(folder / "model")``: ``(folder, meta, hit, loaded)``.

    An entry found in the cache that does not load (``load`` raises: a file that does not parse,
    tensors of the wrong shape, a missing file) is taken out of the cache and built again, once,
    with a warning naming it. When it cannot be removed (a read-only cache), or when an artifact
    built just now does not load, :class:`CorruptCacheEntry` names the folder. ``load`` must
    read data only (safetensors, JSON, ONNX / OpenVINO files), never unpickle."""
    for attempt in (1, 2):
        folder, meta, hit = cached_or_build(ctx, model, comp, build, extra_key, kind)
        try:
            return folder, meta, hit, load(folder / "model")
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes a parser raise
            if not hit:
                raise CorruptCacheEntry(folder, f"{comp.name}: the artifact just built does not "
                                                "load", exc) from exc
            if attempt == 2 or not discard_dir(folder):
                raise CorruptCacheEntry(folder, f"{comp.name}: corrupt and cannot be rebuilt "
                                                "(remove the folder)", exc) from exc
            warnings.warn(f"cache entry {folder} did not load ({type(exc).__name__}: {exc}); "
                          "removed and rebuilt", HarnessWarning, stacklevel=2)
            ctx.progress("compress", f"{comp.name}: corrupt cache entry {folder.name}, rebuilding")
    raise AssertionError("unreachable")  # pragma: no cover


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
