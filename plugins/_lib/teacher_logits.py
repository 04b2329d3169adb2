"""The teacher's logits for ``distill``: computed once per teacher over the training features and
cached on disk as safetensors (token ids, lengths, fp32 logits; nothing unpickled); each training
example finds its logits by its token ids (:func:`feature_key`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.api import CellContext, LoadedModel
from harness.toolkit import hash_text, pad_batch

__all__ = ["feature_key", "teacher_logits"]

def feature_key(input_ids: Any) -> bytes:
    """How a training example finds its teacher logits: its token ids (int32 bytes)."""
    import numpy as np

    return np.asarray(input_ids, dtype=np.int32).tobytes()


def teacher_logits(teacher: LoadedModel, features: list[dict[str, Any]], path: Path, batch_size: int,
                   ctx: CellContext) -> tuple[dict[bytes, Any], bool]:
    """``({feature key: logits}, cache_hit)``: the teacher's fp32 logits for every feature
    (per token for token classification), from ``path`` or computed once and written there. A
    cached file that does not load, or does not cover every feature, is computed again."""
    from safetensors.torch import load_file

    token_level = teacher.head.kind == "token-classification"
    width = len(teacher.head.labels)
    if path.is_file():
        try:
            return _logits_table(load_file(str(path)), features, token_level, width), True
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes the loader raise
            _discard(path, exc)
    _compute_logits(teacher, features, path, batch_size, ctx, token_level)
    return _logits_table(load_file(str(path)), features, token_level, width), False


def _discard(path: Path, exc: Exception) -> None:
    """Take a cached teacher-logits file that does not load out of the cache (or say why not)."""
    import warnings

    from harness.errors import HarnessWarning
    from harness.toolkit import CorruptCacheEntry

    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CorruptCacheEntry(path, "distill: cached teacher logits do not load and cannot be "
                                      f"removed ({err})", exc) from exc
    warnings.warn(f"cache entry {path} did not load ({type(exc).__name__}: {exc}); computed again",
                  HarnessWarning, stacklevel=3)


def _compute_logits(teacher: LoadedModel, features: list[dict[str, Any]], path: Path, batch_size: int,
                    ctx: CellContext, token_level: bool) -> None:
    import torch
    from safetensors.torch import save_file

    ctx.progress("compress", f"distill: teacher logits for {len(features)} features")
    module = teacher.module.eval()
    device = next(module.parameters()).device
    ids, lens, outs = [], [], []
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            part = [features[i] for i in order[s : s + batch_size]]
            batch = {k: v.to(device) for k, v in pad_batch(part, teacher.tokenizer).items()}
            logits = module(**batch).logits.float().cpu()
            for f, row in zip(part, logits, strict=True):
                n = len(f["input_ids"])
                ids.append(torch.tensor(f["input_ids"], dtype=torch.int32))
                lens.append(n)
                outs.append(row[:n] if token_level else row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{hash_text(str(ctx.work_dir))}")
    save_file({"ids": torch.cat(ids), "lens": torch.tensor(lens), "logits": torch.cat(
        [o.reshape(-1, o.shape[-1]) for o in outs])}, str(tmp))
    tmp.replace(path)


def _logits_table(data: dict[str, Any], features: list[dict[str, Any]], token_level: bool,
                  width: int) -> dict[bytes, Any]:
    """{feature key: logits} from the saved tensors; ``ValueError`` when they are not consistent
    or do not cover every feature."""
    ids, lens, logits = data["ids"], data["lens"].tolist(), data["logits"]
    rows = sum(lens) if token_level else len(lens)
    if (min(lens, default=0) < 1 or sum(lens) != ids.numel() or logits.dim() != 2
            or logits.shape != (rows, width)):
        raise ValueError("teacher logits of the wrong shape")
    table: dict[bytes, Any] = {}
    pos = row = 0
    for n in lens:
        key = ids[pos : pos + n].numpy().tobytes()
        table[key] = logits[row : row + n] if token_level else logits[row]
        pos += n
        row += n if token_level else 1
    if any(feature_key(f["input_ids"]) not in table for f in features):
        raise ValueError("teacher logits do not cover the training features")
    return table
