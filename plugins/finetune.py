"""The fine-tuning recipe shared by the built-in tasks, with a checkpoint cache.

Recipe: AdamW (torch; fused kernel where available; no weight decay on biases and LayerNorm
weights, like ``transformers.Trainer``), a linear schedule with linear warm-up over
``ceil(warmup_ratio * steps)`` optimizer steps then linear decay to 0, gradient clipping at
``max_grad_norm``, gradient accumulation, random batches (seeded) with dynamic padding, and on a
CUDA device automatic mixed precision (bf16 where supported, else fp16 with a gradient scaler).
The new head is re-initialised under the seed, so a run is reproducible whatever random state
loading left behind.

Cache: the fine-tuned model and its tokenizer are written with ``save_pretrained`` to
``<cache_dir>/finetune/<key>/`` (plus ``harness_finetune.json``), where ``key`` hashes the base
model's identity (source + weight bytes), the head (kind and labels), the training data hash, the
recipe (with the effective precision) and the task name and version. A re-run with the same key
loads the checkpoint instead of training. torch and transformers are imported lazily.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.api import CellContext, LoadedModel
from harness.errors import PluginError

from ._torch import hash_text

#: bump when the training loop changes in a way that alters results (part of every key)
FINETUNE_VERSION = "2"
META_FILE = "harness_finetune.json"
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of a fine-tuning run (all of them enter the cache key)."""

    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 32
    max_length: int = 128  #: training window / truncation length, in subword tokens
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "auto"  #: "auto", "no", "fp16", "bf16"; used on CUDA only
    max_train_samples: int | None = None
    #: length-sorted micro-batches per batch (0: auto); saves padding, same update
    micro_batches: int = 0

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if int(self.micro_batches) < 0:
            raise ValueError(f"micro_batches must be >= 0, got {self.micro_batches!r}")
        for name in ("epochs", "batch_size", "max_length", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_precision(recipe: Recipe, device: str) -> str:
    """The autocast precision actually used: "fp32" on CPU, else per ``mixed_precision``."""
    if not device.startswith("cuda") or recipe.mixed_precision == "no":
        return "fp32"
    if recipe.mixed_precision in ("fp16", "bf16"):
        return recipe.mixed_precision
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def finetune_key(
    model: LoadedModel, recipe: Recipe, data_hash: str, task: str, task_version: str, device: str
) -> str:
    return hash_text(
        "finetune",
        FINETUNE_VERSION,
        model.identity,
        model.head.kind,
        tuple(model.head.labels),
        data_hash,
        sorted(recipe.to_dict().items()),
        effective_precision(recipe, device),
        micro_batch_count(recipe, device.split(":")[0]),
        task,
        task_version,
    )


# -- batching helpers (shared by the tasks) ----------------------------------------------------
def input_names(tokenizer: Any) -> tuple[str, ...]:
    """The model inputs the tokenizer produces (input_ids, attention_mask, token_type_ids?)."""
    names = tuple(getattr(tokenizer, "model_input_names", ()) or ("input_ids", "attention_mask"))
    return tuple(n for n in ("input_ids", "token_type_ids", "attention_mask") if n in names) or (
        "input_ids",
        "attention_mask",
    )


def pad_batch(
    features: Sequence[Mapping[str, Any]], tokenizer: Any, *, with_labels: bool = False
) -> dict[str, Any]:
    """Pad ``input_ids`` (pad id), ``attention_mask``/``token_type_ids`` (0) and, for token
    labels, ``labels`` (-100) to the longest item: dynamic padding. int64 CPU tensors."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(f["input_ids"]) for f in features)
    out: dict[str, Any] = {}
    for name in input_names(tokenizer):
        fill = pad_id if name == "input_ids" else 0
        rows = []
        for f in features:
            ids = f["input_ids"]
            if name == "input_ids":
                row = list(ids)
            elif name == "attention_mask":
                row = [1] * len(ids)
            else:
                row = list(f.get("token_type_ids") or [0] * len(ids))
            rows.append(row + [fill] * (width - len(row)))
        out[name] = torch.tensor(rows, dtype=torch.long)
    if with_labels:
        first = features[0]["labels"]
        if isinstance(first, (list, tuple)):
            out["labels"] = torch.tensor(
                [list(f["labels"]) + [-100] * (width - len(f["labels"])) for f in features],
                dtype=torch.long,
            )
        else:
            out["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
    return out


def micro_batch_count(recipe: Recipe, device_type: str) -> int:
    """How many length-sorted micro-batches each batch is split into (``recipe.micro_batches``;
    ``0`` = auto: 4 on CPU, where compute grows with padded tokens, 1 on GPUs)."""
    if recipe.micro_batches:
        return int(recipe.micro_batches)
    return 1 if device_type == "cuda" else 4


def _units(feature: Mapping[str, Any]) -> int:
    """What the model's loss averages over: labelled tokens (token classification) or 1."""
    labels = feature["labels"]
    if isinstance(labels, (list, tuple)):
        return sum(1 for x in labels if x != -100)
    return 1


def micro_batches(
    batch: Sequence[Mapping[str, Any]], splits: int
) -> list[tuple[list[Mapping[str, Any]], float]]:
    """Split one training batch into up to ``splits`` micro-batches of similar length, each with
    the weight (its share of the batch's loss units) that makes the sum of the weighted
    micro-batch losses equal the whole batch's mean loss. The batch's composition, and so the
    optimizer update, is unchanged; only padding is saved (a random batch of CoNLL-2003 windows
    is 2.6x its real tokens when padded whole, 1.3x in 4 sorted parts). Parts without a loss
    unit are dropped (they would contribute nothing)."""
    units = [_units(f) for f in batch]
    total = sum(units)
    if total == 0:
        return []
    order = sorted(range(len(batch)), key=lambda i: len(batch[i]["input_ids"]))
    k = max(1, min(int(splits), len(order)))
    size, extra = divmod(len(order), k)
    out, lo = [], 0
    for j in range(k):
        hi = lo + size + (1 if j < extra else 0)
        idx = order[lo:hi]
        lo = hi
        n = sum(units[i] for i in idx)
        if idx and n:
            out.append(([batch[i] for i in idx], n / total))
    return out


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


def _result(
    model: LoadedModel, module: Any, folder: Path, key: str, meta: dict[str, Any], cached: bool
) -> LoadedModel:
    info = dict(model.info)
    info.update(
        fine_tuned=True,
        finetune_key=key,
        checkpoint=str(folder),
        cached=cached,
        train_time_s=meta["train_time_s"],
        recipe=meta["recipe"],
        train_examples=meta["train_examples"],
        train_features=meta["train_features"],
        optimizer_steps=meta["optimizer_steps"],
        train_loss=meta["train_loss"],
        train_precision=meta["precision"],
        train_device=meta["device"],
        base_identity=model.identity,
        base_source=model.source,
    )
    return LoadedModel(
        module=module,
        tokenizer=model.tokenizer,
        head=model.head,
        identity=f"ft-{key}",
        source=str(folder),
        trained_for_task=True,
        max_length=model.max_length,
        info=info,
    )


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

    :param epochs: train this many epochs instead of ``recipe.epochs`` (may be fractional:
        ``0.25`` stops after a quarter of the optimizer steps of one epoch; the schedule is
        laid out over the shortened run).
    :param resume: continue training a model that already has its trained head (e.g. a pruned
        model's recovery): the head is not re-initialised and nothing is cached here (the
        caller caches its own artifact). The returned model keeps ``model``'s identity.

    :param build_features: called only when training is needed; returns (features, examples):
        the features are dicts with ``input_ids`` (+ ``token_type_ids``) and ``labels`` (a list,
        -100 where not scored, for token classification; an int for sequence classification),
        ``examples`` the number of source examples they came from.
    :param data_hash: hash of the training data as used (enters the cache key).
    """
    import torch

    key = finetune_key(model, recipe, data_hash, task, task_version, ctx.device)
    root = Path(ctx.cache_dir) / "finetune"
    folder = root / key
    auto = _auto_class(model.head.kind)
    meta_path = folder / META_FILE
    n_epochs = float(recipe.epochs if epochs is None else epochs)
    if n_epochs <= 0:
        raise PluginError(f"task {task!r}: epochs must be > 0, got {n_epochs!r}")
    if not resume and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        ctx.progress("fine-tune", f"cached checkpoint {folder}")
        module = auto.from_pretrained(folder)
        module.eval()
        return _result(model, module, folder, key, meta, cached=True)

    features, examples = build_features()
    if not features:
        raise PluginError(f"task {task!r}: no training examples to fine-tune on")
    precision = effective_precision(recipe, ctx.device)
    device = torch.device(ctx.device)
    module = model.module
    if not resume:
        _reinit_head(module, recipe.seed)
    module.to(device)
    module.train()

    generator = torch.Generator().manual_seed(recipe.seed)
    loader = torch.utils.data.DataLoader(
        features,
        batch_size=recipe.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=list,  # padded per length-sorted micro-batch below
    )
    splits = micro_batch_count(recipe, device.type)
    steps_per_epoch = math.ceil(len(loader) / recipe.grad_accum)
    total_steps = max(1, math.ceil(steps_per_epoch * n_epochs))
    warmup_steps = math.ceil(total_steps * recipe.warmup_ratio)

    no_decay = ("bias", "layernorm", "layer_norm", "norm.")
    decay, plain = [], []
    norm_params = {
        id(p)
        for m in module.modules()
        if isinstance(m, torch.nn.LayerNorm)
        for p in m.parameters(recurse=False)
    }
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params or any(s in name.lower() for s in no_decay):
            plain.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    try:
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.999), eps=1e-8)

    def lr_lambda(step: int) -> float:  # transformers.get_linear_schedule_with_warmup
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        desc=f"fine-tune {task}",
        unit="step",
        disable=not ctx.show_progress,
        dynamic_ncols=True,
    )
    ctx.progress("fine-tune", f"{len(features)} features, {total_steps} steps on {ctx.device}")
    loss_sum, loss_n, step = 0.0, 0, 0
    # dropout draws from the global generators: seed them for the run, restore them after
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(recipe.seed)
            for _epoch in range(math.ceil(n_epochs)):
                if step >= total_steps:
                    break
                optimizer.zero_grad(set_to_none=True)
                n_batches = len(loader)
                for i, batch in enumerate(loader):
                    if step >= total_steps:
                        break
                    # the last accumulation group of an epoch may be short: scale by its real size
                    group = min(recipe.grad_accum, n_batches - (i // recipe.grad_accum) * recipe.grad_accum)
                    batch_loss = 0.0
                    for part, weight in micro_batches(batch, splits):
                        part_t = pad_batch(part, model.tokenizer, with_labels=True)
                        part_t = {k: v.to(device, non_blocking=True) for k, v in part_t.items()}
                        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                            loss = module(**part_t).loss
                        scaler.scale(loss * (weight / group)).backward()
                        batch_loss += float(loss.detach()) * weight
                    loss_sum += batch_loss
                    loss_n += 1
                    if (i + 1) % recipe.grad_accum == 0 or i + 1 == n_batches:
                        scaler.unscale_(optimizer)
                        if recipe.max_grad_norm and recipe.max_grad_norm > 0:
                            torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.max_grad_norm)
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        step += 1
                        bar.update(1)
                        if step % 10 == 0 or step == total_steps:
                            avg = loss_sum / max(1, loss_n)
                            bar.set_postfix(loss=f"{avg:.4f}")
                            ctx.progress("fine-tune", f"step {step}/{total_steps} loss {avg:.4f}")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        bar.close()
    train_time = time.perf_counter() - start
    module.eval()
    module.to("cpu")

    meta = {
        "key": key,
        "task": task,
        "task_version": task_version,
        "finetune_version": FINETUNE_VERSION,
        "base_identity": model.identity,
        "base_source": model.source,
        "head": {"kind": model.head.kind, "labels": list(model.head.labels)},
        "data_hash": data_hash,
        "recipe": recipe.to_dict(),
        "precision": precision,
        "device": ctx.device,
        "train_examples": examples,
        "train_features": len(features),
        "optimizer_steps": step,
        "train_loss": loss_sum / max(1, loss_n),
        "train_time_s": train_time,
        "epochs": n_epochs,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if resume:
        ctx.progress("fine-tune", f"continued training in {train_time:.1f}s")
        info = {**model.info, "recovery": meta}
        return LoadedModel(
            module=module,
            tokenizer=model.tokenizer,
            head=model.head,
            identity=model.identity,
            source=model.source,
            trained_for_task=True,
            max_length=model.max_length,
            info=info,
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    module.save_pretrained(tmp)
    model.tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same key first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / META_FILE).is_file():
            raise
    ctx.progress("fine-tune", f"trained in {train_time:.1f}s, saved {folder}")
    return _result(model, module, folder, key, meta, cached=False)


def train_task(
    task: Any,
    model: LoadedModel,
    ctx: CellContext,
    make_features: Callable[[dict[str, int], int], tuple[list[dict[str, Any]], int]],
    *,
    epochs: float | None = None,
    resume: bool = False,
) -> LoadedModel:
    """Fine-tune ``model`` for a built-in ``task`` (``recipe()``, ``labels()``,
    ``train_hash()``, ``bind()``) and bind the result to the task.

    :param make_features: ``(label2id, train_length) -> (features, examples)``, called only
        when training is needed.
    """
    recipe = task.recipe(ctx.seed)
    label2id = {label: i for i, label in enumerate(model.head.labels)}
    missing = set(task.labels()) - set(label2id)
    if missing:
        raise PluginError(f"model head lacks labels {sorted(missing)} of the data")
    train_len = min(recipe.max_length, model.max_length)
    tuned = finetune(
        model,
        lambda: make_features(label2id, train_len),
        recipe,
        ctx,
        data_hash=task.train_hash(),
        task=task.name,
        task_version=task.version,
        epochs=epochs,
        resume=resume,
    )
    task.bind(tuned)
    return tuned


def task_recipe(task: Any, seed: int) -> Recipe:
    """The recipe of a task that stores the recipe parameters under their own names."""
    return Recipe(
        lr=float(task.lr),
        epochs=int(task.epochs),
        batch_size=int(task.batch_size),
        max_length=int(task.max_length),
        warmup_ratio=float(task.warmup_ratio),
        grad_accum=int(task.grad_accum),
        weight_decay=float(task.weight_decay),
        max_grad_norm=float(task.max_grad_norm),
        seed=int(seed),
        mixed_precision=task.mixed_precision,
        max_train_samples=task.max_train_samples,
        micro_batches=int(getattr(task, "micro_batches", 0)),
    )


def model_eval_length(model: LoadedModel, requested: int | None) -> int:
    """Evaluation length: ``requested`` or the model's limit, never above the model's or the
    tokenizer's own limit."""
    limit = int(model.max_length)
    tok_limit = getattr(model.tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return min(int(requested), limit) if requested else limit
