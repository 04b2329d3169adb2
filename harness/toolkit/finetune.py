"""The fine-tuning loop with a checkpoint cache (torch and transformers imported lazily).

Loop: AdamW (fused kernel where available; no weight decay on biases and LayerNorm weights,
like ``transformers.Trainer``), ``transformers.get_linear_schedule_with_warmup`` over
``ceil(warmup_ratio * steps)`` warm-up steps, gradient clipping at ``max_grad_norm``, gradient
accumulation, batches of similar length in runs of at least 200 optimizer steps or with
``group_by_length: true`` (seeded random pools of 50 batches sorted by length, the batches
shuffled; with token labels each batch's mean loss is scaled by its labelled tokens over the
epoch's mean per batch, so every labelled token weighs the same in every batch, as random batches
give in expectation), else random batches (on CPU in length-sorted micro-batches: the same
update), with dynamic padding, and on a CUDA device automatic mixed precision (bf16 where
supported, else fp16 with a gradient scaler). The new head is re-initialised under the seed, so a
run is reproducible whatever random state loading left behind.

Cache: the fine-tuned model and its tokenizer are written with ``save_pretrained`` to
``<cache_dir>/finetune/<key>/`` (plus ``harness_finetune.json``), where ``key`` hashes the base
model's identity, the head (kind and labels), the training data hash, the recipe (with the
effective precision) and the task name and version. A re-run with the same key loads the
checkpoint's tensors (``model.safetensors``) into a copy of the base model instead of training;
nothing else is read back but the JSON record, and a checkpoint that does not load is trained
again.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import CellContext, LoadedModel
from ..errors import HarnessWarning, PluginError
from ..fsutil import build_and_publish
from .artifacts import hash_text
from .predictor import pad_batch
from .recipe import (
    Recipe,
    batch_units,
    effective_precision,
    groups_by_length,
    length_grouped_batches,
    micro_batch_count,
    micro_batches,
)

#: bump when the training loop changes in a way that alters results (part of every key)
FINETUNE_VERSION = "3"
META_FILE = "harness_finetune.json"


def finetune_key(
    model: LoadedModel, recipe: Recipe, data_hash: str, task: str, task_version: str, device: str
) -> str:
    return hash_text(
        "finetune", FINETUNE_VERSION, model.identity, model.head.kind, tuple(model.head.labels),
        data_hash, sorted(recipe.to_dict().items()), effective_precision(recipe, device),
        micro_batch_count(recipe, device.split(":")[0]), task, task_version,
    )


def _reinit_head(module: Any, seed: int) -> None:
    """Re-initialise every child of ``module`` outside its base model (the new head), under
    ``seed``, with the model's own initialiser."""
    import torch

    prefix = getattr(module, "base_model_prefix", "")
    init = getattr(module, "_init_weights", None)
    if not prefix or init is None or not hasattr(module, prefix):
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, child in module.named_children():
                if name != prefix:
                    child.apply(init)


def _auto_class(kind: str) -> Any:
    import transformers as tf

    try:
        return {
            "token-classification": tf.AutoModelForTokenClassification,
            "sequence-classification": tf.AutoModelForSequenceClassification,
        }[kind]
    except KeyError:
        raise PluginError(f"no fine-tuning recipe for head kind {kind!r}") from None


def _with(model: LoadedModel, module: Any, **changes: Any) -> LoadedModel:
    return LoadedModel(
        module=module, tokenizer=model.tokenizer, head=model.head,
        identity=changes.get("identity", model.identity), source=changes.get("source", model.source),
        trained_for_task=True, max_length=model.max_length, info=changes.get("info", model.info),
    )


def _result(
    model: LoadedModel, module: Any, folder: Path, key: str, meta: dict[str, Any], cached: bool
) -> LoadedModel:
    info = {
        **model.info, "fine_tuned": True, "finetune_key": key, "checkpoint": str(folder),
        "cached": cached, "train_time_s": meta["train_time_s"], "recipe": meta["recipe"],
        "train_examples": meta["train_examples"], "train_features": meta["train_features"],
        "optimizer_steps": meta["optimizer_steps"], "train_loss": meta["train_loss"],
        "train_precision": meta["precision"], "train_device": meta["device"],
        "base_identity": model.identity, "base_source": model.source,
    }
    return _with(model, module, identity=f"ft-{key}", source=str(folder), info=info)


def _optimizer(module: Any, recipe: Recipe) -> Any:
    """AdamW without weight decay on biases and normalisation weights; fused where possible."""
    import torch

    no_decay = ("bias", "layernorm", "layer_norm", "norm.")
    norm_params = {id(p) for m in module.modules() if isinstance(m, torch.nn.LayerNorm)
                   for p in m.parameters(recurse=False)}
    decay: list[Any] = []
    plain: list[Any] = []
    for name, p in module.named_parameters():
        if p.requires_grad:
            plain_p = id(p) in norm_params or any(s in name.lower() for s in no_decay)
            (plain if plain_p else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8)


@dataclass
class _Run:
    """One training run's state: what the step loop reads and updates."""

    module: Any
    tokenizer: Any
    recipe: Recipe
    device: Any
    precision: str
    total_steps: int
    ctx: CellContext
    bar: Any
    step: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    grouped: bool = False  #: batches grouped by length (``recipe.groups_by_length``)
    #: labelled tokens per batch over the epoch when batches are grouped by length (token
    #: labels): each batch's mean loss is scaled by its tokens over this, so every labelled
    #: token weighs the same in every batch, as random batches give in expectation
    unit_mean: float = 0.0


def _train_epoch(run: _Run, loader: Any, optimizer: Any, scheduler: Any, scaler: Any) -> None:
    import torch

    r, dev = run.recipe, run.device
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.precision)
    splits = micro_batch_count(r, dev.type, run.grouped)
    optimizer.zero_grad(set_to_none=True)
    n_batches = len(loader)
    for i, batch in enumerate(loader):
        if run.step >= run.total_steps:
            return
        # the last accumulation group of an epoch may be short: scale by its real size
        group = min(r.grad_accum, n_batches - (i // r.grad_accum) * r.grad_accum)
        # grouped batches with token labels: the batch's labelled tokens over the epoch's mean
        tokens_share = batch_units(batch) / run.unit_mean if run.unit_mean else 0.0
        for part, weight in micro_batches(batch, splits):
            tensors = {k: v.to(dev, non_blocking=True)
                       for k, v in pad_batch(part, run.tokenizer, with_labels=True).items()}
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = run.module(**tensors).loss
            scaled = loss * (weight / group)
            if tokens_share:
                scaled = scaled * tokens_share
            scaler.scale(scaled).backward()
            run.loss_sum += float(loss.detach()) * weight
        run.loss_n += 1
        if (i + 1) % r.grad_accum == 0 or i + 1 == n_batches:
            scaler.unscale_(optimizer)
            if r.max_grad_norm and r.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(run.module.parameters(), r.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            run.step += 1
            run.bar.update(1)
            if run.step % 10 == 0 or run.step == run.total_steps:
                avg = run.loss_sum / max(1, run.loss_n)
                run.bar.set_postfix(loss=f"{avg:.4f}")
                run.ctx.progress("fine-tune", f"step {run.step}/{run.total_steps} loss {avg:.4f}")


def _train(run: _Run, features: list[dict[str, Any]], n_epochs: float) -> float:
    """Train ``run.module`` in place; return the seconds it took."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    r = run.recipe
    generator = torch.Generator().manual_seed(r.seed)
    lengths = [len(f["input_ids"]) for f in features]

    def epoch_batches() -> Any:
        if run.grouped:
            return [[features[i] for i in b]
                    for b in length_grouped_batches(lengths, r.batch_size, generator)]
        dataset: Any = features  # a list is a map-style dataset
        return torch.utils.data.DataLoader(dataset, batch_size=r.batch_size, shuffle=True,
                                           generator=generator, collate_fn=list)

    n_batches = math.ceil(len(features) / r.batch_size)
    steps_per_epoch = math.ceil(n_batches / r.grad_accum)
    run.total_steps = max(1, math.ceil(steps_per_epoch * n_epochs))
    run.grouped = groups_by_length(r, run.total_steps)
    if run.grouped and isinstance(features[0].get("labels"), (list, tuple)):
        run.unit_mean = batch_units(features) / n_batches
    optimizer = _optimizer(run.module, r)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(run.total_steps * r.warmup_ratio), run.total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=run.precision == "fp16")
    run.bar.total = run.total_steps
    run.ctx.progress("fine-tune", f"{len(features)} features, {run.total_steps} steps on {run.ctx.device}")
    # dropout draws from the global generators: seed them for the run, restore them after
    rng_devices = [run.device.index or 0] if run.device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(r.seed)
        for _epoch in range(math.ceil(n_epochs)):
            if run.step >= run.total_steps:
                break
            _train_epoch(run, epoch_batches(), optimizer, scheduler, scaler)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
    return time.perf_counter() - start


def _publish(root: Path, key: str, module: Any, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """Write the checkpoint under a temporary name, then rename it into place atomically."""
    def fill(tmp: Path) -> None:
        module.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))

    build_and_publish(root / key, fill, complete=META_FILE)  # another process first: theirs kept
    return root / key


#: what ``_result`` reads from a checkpoint's META_FILE
_META_KEYS = ("train_time_s", "recipe", "train_examples", "train_features", "optimizer_steps",
              "train_loss", "precision", "device")


def _load_checkpoint(model: LoadedModel, folder: Path) -> tuple[Any, dict[str, Any]] | None:
    """``(module, meta)`` of the cached checkpoint in ``folder``: its tensors (safetensors only)
    loaded strictly into a copy of ``model.module``, the very structure that was trained (no
    class, config or code is taken from the folder). None when it does not load: the entry is
    then taken out of the cache, with a warning, and trained again; ``CorruptCacheEntry`` when
    it cannot be removed (a read-only cache)."""
    from ..fsutil import discard_dir
    from .artifacts import CorruptCacheEntry, read_meta
    from .weights import load_into_copy

    try:
        meta = read_meta(folder / META_FILE)
        if meta is None or not all(k in meta for k in _META_KEYS):
            raise ValueError(f"{META_FILE} is not a fine-tuning record")
        module = load_into_copy(model.module, folder)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes a parser raise
        if not discard_dir(folder):
            raise CorruptCacheEntry(folder, "the cached fine-tuned checkpoint does not load and "
                                            "cannot be removed", exc) from exc
        warnings.warn(f"cache entry {folder} did not load ({type(exc).__name__}: {exc}); "
                      "removed, the model is trained again", HarnessWarning, stacklevel=3)
        return None
    return module.eval(), meta


def finetune(
    model: LoadedModel,
    build_features: Callable[[], tuple[list[dict[str, Any]], int]],
    recipe: Recipe,
    ctx: CellContext,
    *,
    data_hash: str,
    task: str,
    task_version: str,
    epochs: float | None = None,
    resume: bool = False,
) -> LoadedModel:
    """Fine-tune ``model`` (or load the cached result) and return it with ``trained_for_task``.

    :param build_features: called only when training is needed; returns (features, examples):
        the features are dicts with ``input_ids`` (+ ``token_type_ids``) and ``labels`` (a list,
        -100 where not scored, for token classification; an int for sequence classification),
        ``examples`` the number of source examples they came from.
    :param data_hash: hash of the training data as used (enters the cache key).
    :param epochs: train this many epochs instead of ``recipe.epochs`` (may be fractional:
        ``0.25`` stops after a quarter of the optimizer steps of one epoch; the schedule is
        laid out over the shortened run).
    :param resume: continue training a model that already has its trained head (e.g. a pruned
        model's recovery): the head is not re-initialised and nothing is cached here (the
        caller caches its own artifact). The returned model keeps ``model``'s identity.
    """
    import torch
    from tqdm.auto import tqdm

    key = finetune_key(model, recipe, data_hash, task, task_version, ctx.device)
    root = Path(ctx.cache_dir) / "finetune"
    n_epochs = float(recipe.epochs if epochs is None else epochs)
    if n_epochs <= 0:
        raise PluginError(f"task {task!r}: epochs must be > 0, got {n_epochs!r}")
    if not resume and (root / key / META_FILE).is_file():
        cached = _load_checkpoint(model, root / key)
        if cached is not None:
            ctx.progress("fine-tune", f"cached checkpoint {root / key}")
            return _result(model, cached[0], root / key, key, cached[1], cached=True)
    _auto_class(model.head.kind)  # an unknown head kind fails before any work
    features, examples = build_features()
    if not features:
        raise PluginError(f"task {task!r}: no training examples to fine-tune on")
    device = torch.device(ctx.device)
    if not resume:
        _reinit_head(model.module, recipe.seed)
    config = getattr(model.module, "config", None)  # a student wrapper may have none
    problem_type = getattr(config, "problem_type", None)
    model.module.to(device).train()
    bar = tqdm(total=1, desc=f"fine-tune {task}", unit="step", disable=not ctx.show_progress,
               dynamic_ncols=True)
    run = _Run(model.module, model.tokenizer, recipe, device, effective_precision(recipe, ctx.device),
               1, ctx, bar)
    try:
        train_time = _train(run, features, n_epochs)
    finally:
        bar.close()
    module = model.module.eval().to("cpu")
    # a forward with labels records problem_type in the config; the cached checkpoint's module
    # (a copy of the untrained one) has none: the artifact is the same bytes either way
    if config is not None:
        config.problem_type = problem_type
    meta = {
        "key": key, "task": task, "task_version": task_version,
        "finetune_version": FINETUNE_VERSION, "base_identity": model.identity,
        "base_source": model.source,
        "head": {"kind": model.head.kind, "labels": list(model.head.labels)},
        "data_hash": data_hash, "recipe": recipe.to_dict(), "precision": run.precision,
        "device": ctx.device, "train_examples": examples, "train_features": len(features),
        "optimizer_steps": run.step, "train_loss": run.loss_sum / max(1, run.loss_n),
        "grouped_by_length": run.grouped, "loss_unit_mean": run.unit_mean,
        "train_time_s": train_time, "epochs": n_epochs, "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if resume:
        ctx.progress("fine-tune", f"continued training in {train_time:.1f}s")
        return _with(model, module, info={**model.info, "recovery": meta})
    folder = _publish(root, key, module, model.tokenizer, meta)
    ctx.progress("fine-tune", f"trained in {train_time:.1f}s, saved {folder}")
    return _result(model, module, folder, key, meta, cached=False)
