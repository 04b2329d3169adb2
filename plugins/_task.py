"""``FineTunedTask``: what the built-in ``ner`` and ``classification`` tasks share.

A task on local splits that fine-tunes a pretrained encoder with the shared recipe
(``finetune.py``) when the model has no trained head, remembers the tokenizer and label order of
the model it last saw (``bind``), and hashes its data for the caches. A subclass sets
``head_kind`` and provides ``labels()``, ``split(name, required)``, ``_split_hash(split)`` and
``_train_features(tokenizer, label2id, max_length)``. Third-party tasks may subclass it too.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.api import CellContext, Head, LoadedModel, Task
from harness.errors import PluginError


class FineTunedTask(Task):
    """Base of tasks that fine-tune with the shared recipe (see docs/tasks.md)."""

    #: ``LoadedModel.head.kind`` this task trains and evaluates
    head_kind: ClassVar[str] = ""
    eval_split: str
    eval_max_length: int | None

    def _init_recipe(
        self,
        *,
        lr: float,
        epochs: int,
        batch_size: int,
        max_length: int,
        warmup_ratio: float,
        grad_accum: int,
        weight_decay: float,
        max_grad_norm: float,
        mixed_precision: str,
        eval_batch_size: int,
        eval_max_length: int | None,
        bootstrap: int,
        max_train_samples: int | None,
        max_eval_samples: int | None,
        micro_batches: int = 0,
    ) -> None:
        """Store the recipe and evaluation parameters every such task takes."""
        from .finetune import MIXED_PRECISION

        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        self.lr, self.epochs, self.batch_size, self.max_length = lr, epochs, batch_size, max_length
        self.warmup_ratio, self.grad_accum = warmup_ratio, grad_accum
        self.weight_decay, self.max_grad_norm = weight_decay, max_grad_norm
        self.mixed_precision = mixed_precision
        self.micro_batches = micro_batches
        self.eval_batch_size, self.eval_max_length = eval_batch_size, eval_max_length
        self.bootstrap = bootstrap
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        from .finetune import task_recipe

        task_recipe(self, 0)  # out-of-range values (epochs: -1, lr: 0, ...) fail at suite validation
        for name in ("eval_batch_size",):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(bootstrap) < 0:
            raise ValueError(f"bootstrap must be >= 0, got {bootstrap!r}")
        # bound by fit() / bind(): what evaluate() needs besides the predictor
        self._tokenizer: Any = None
        self._labels: tuple[str, ...] | None = None
        self._eval_len: int | None = None

    # -- what a subclass provides --------------------------------------------------------------
    def labels(self) -> list[str]:
        raise NotImplementedError

    def split(self, split: str, required: bool = True) -> Any:
        raise NotImplementedError

    def _split_hash(self, split: str) -> str:
        raise NotImplementedError

    def _train_features(
        self, tokenizer: Any, label2id: dict[str, int], max_length: int
    ) -> tuple[list[dict[str, Any]], int]:
        """(training features with ``labels``, number of source examples)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def head(self) -> Head:
        return Head(self.head_kind, tuple(self.labels()))

    def train_hash(self) -> str:
        from ._torch import hash_text

        return hash_text(self._split_hash("train"))

    def data_hash(self) -> str:
        from ._torch import hash_text

        parts = [self._split_hash(self.eval_split)]
        if self.eval_split != "train" and self.split("train", required=False) is not None:
            parts.append(self._split_hash("train"))
        return hash_text(*parts)

    def recipe(self, seed: int):
        from .finetune import task_recipe

        return task_recipe(self, seed)

    def bind(self, model: LoadedModel) -> None:
        """Remember the tokenizer, label order and evaluation length ``evaluate`` will use."""
        from .finetune import model_eval_length

        self._tokenizer = model.tokenizer
        self._labels = tuple(model.head.labels)
        self._eval_len = model_eval_length(model, self.eval_max_length)

    def fit(self, model: LoadedModel, ctx: CellContext) -> LoadedModel:
        """Use a model already fine-tuned for this label set as is; fine-tune any other (cached)."""
        if model.head.kind != self.head_kind:
            raise PluginError(f"task {self.name!r} needs a {self.head_kind} head, got {model.head.kind!r}")
        wanted = self.labels()
        if model.trained_for_task:
            if sorted(model.head.labels) != sorted(wanted):
                raise PluginError(
                    f"model {model.source!r} is fine-tuned for labels {list(model.head.labels)}, "
                    f"but task {self.name!r} has labels {wanted}"
                )
            self.bind(model)
            return model
        return self._train(model, ctx)

    def finetune(self, model: LoadedModel, ctx: CellContext, *, epochs: float) -> LoadedModel:
        """Continue training ``model`` (head kept) for ``epochs`` with this task's recipe; used by
        compressions that recover accuracy (``prune``'s ``recovery_epochs``). Not cached here."""
        return self._train(model, ctx, epochs=epochs, resume=True)

    def _train(
        self, model: LoadedModel, ctx: CellContext, *, epochs: float | None = None, resume: bool = False
    ) -> LoadedModel:
        from .finetune import train_task

        self.split("train")  # a missing train split is a DataError naming it, before any work
        return train_task(
            self,
            model,
            ctx,
            lambda label2id, max_len: self._train_features(model.tokenizer, label2id, max_len),
            epochs=epochs,
            resume=resume,
        )

    def _require_bound(self) -> tuple[Any, tuple[str, ...], int]:
        if self._tokenizer is None or self._labels is None or self._eval_len is None:
            raise PluginError(f"task {self.name!r}: evaluate() needs fit(model, ctx) (or bind(model)) first")
        return self._tokenizer, self._labels, self._eval_len
