"""The fine-tuning recipe: one ``Recipe`` dataclass, declared once.

Every field but ``seed`` (which comes from the run's ``CellContext``) is also a suite parameter
of a ``FineTunedTask``: ``Recipe.parameters()`` lists them for suite validation, and
``Recipe.from_params`` builds and range-checks a recipe, so an out-of-range value (``epochs: -1``)
fails when the suite is validated, naming the entry's key path.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of a fine-tuning run (all of them enter the fine-tune cache key)."""

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
        if self.max_train_samples is not None and int(self.max_train_samples) < 1:
            raise ValueError(f"max_train_samples must be >= 1, got {self.max_train_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parameters(cls) -> dict[str, inspect.Parameter]:
        """The recipe fields a suite sets on a task (every field but ``seed``), as keyword
        parameters with their defaults and annotations (for ``Plugin.parameters``)."""
        return {
            f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                      default=f.default if f.default is not MISSING else None,
                                      annotation=f.type)
            for f in fields(cls) if f.name != "seed"
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any], seed: int = 0) -> Recipe:
        """A recipe from suite parameters (unknown names raise ``TypeError`` naming them)."""
        unknown = sorted(set(params) - set(cls.parameters()))
        if unknown:
            raise TypeError(f"unknown recipe parameter(s) {unknown}; known: {sorted(cls.parameters())}")
        return cls(**params, seed=seed)

    def with_seed(self, seed: int) -> Recipe:
        return replace(self, seed=int(seed))


def effective_precision(recipe: Recipe, device: str) -> str:
    """The autocast precision actually used: "fp32" on CPU, else per ``mixed_precision``."""
    if not device.startswith("cuda") or recipe.mixed_precision == "no":
        return "fp32"
    if recipe.mixed_precision in ("fp16", "bf16"):
        return recipe.mixed_precision
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


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
    optimizer update, is unchanged; only padding is saved. Parts without a loss unit are
    dropped (they would contribute nothing)."""
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


def model_eval_length(model: Any, requested: int | None) -> int:
    """Evaluation length for a ``LoadedModel``: ``requested`` or the model's limit, never above
    the model's or the tokenizer's own limit."""
    limit = int(model.max_length)
    tok_limit = getattr(model.tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return min(int(requested), limit) if requested else limit
