"""``FineTunedTask``: a base for tasks on local splits that fine-tune a pretrained encoder with
the shared ``Recipe`` (``harness.toolkit.finetune``) when the model has no trained head.

A subclass sets ``head_kind`` and ``eval_split`` and provides ``labels()``,
``split(name, required)``, ``split_hash(split)``, ``train_features(tokenizer, label2id,
max_length)`` and ``evaluate(...)``, and extends ``FineTunedTask.Params`` with its own
parameters (the evaluation parameters and every ``RecipeParams`` field are inherited).

Nothing is remembered between ``fit`` and ``evaluate``: ``eval_setup(model)`` derives the
tokenizer, label order and evaluation length from the model ``evaluate`` receives.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from ..api import CellContext, Head, LoadedModel, Task
from ..errors import PluginError
from ..examples import Examples, example_batches, fit_examples, is_example_model
from .artifacts import hash_text
from .finetune import finetune
from .recipe import Recipe, RecipeParams, model_eval_length


@dataclass(frozen=True)
class EvalSetup:
    """What evaluating needs from the model: its tokenizer, label order and input length."""

    tokenizer: Any
    labels: tuple[str, ...]
    max_length: int


class FineTunedTask(Task):
    """Base of tasks that fine-tune with the shared recipe (see docs/tasks.md). Its ``Params``
    are the evaluation parameters below plus every ``RecipeParams`` field (``lr``, ``epochs``,
    ...); a subclass extends them (``class Params(FineTunedTask.Params): data_dir: str``)."""

    class Params(RecipeParams):
        eval_batch_size: int = Field(64, ge=1)
        """Batch size when scoring."""
        eval_max_length: int | None = Field(None, ge=1)
        """Evaluation input length in subword tokens (default: the model's limit)."""
        bootstrap: int = Field(1000, ge=0)
        """Resamples of the 95% bootstrap confidence intervals (0: none)."""
        max_eval_samples: int | None = Field(None, ge=1)
        """Score only the first N examples of the evaluated split."""
        validation_split: str | None = None
        """The split this task's choices are made on (``harness select``), scored beside the
        evaluation split; overrides the run setting ``validation_split`` for this task (e.g.
        ``holdout`` where the validation split is the one reported)."""

    params: Params
    #: ``LoadedModel.head.kind`` this task trains and evaluates
    head_kind: ClassVar[str] = ""
    #: the model kinds it feeds: transformers (tokenised by the subclass) by default; a subclass
    #: that implements ``raw_examples`` and scores an ``ExampleModel``'s outputs in ``evaluate``
    #: (as ``ner`` and ``classification`` do) sets ``("model:*",)``
    requires: ClassVar[tuple[str, ...]] = ()
    #: the splits ``split()`` knows, in reading order
    split_names: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    eval_split: str

    # -- what a subclass provides --------------------------------------------------------------
    @abstractmethod
    def labels(self) -> list[str]:
        """The label names of the data (all splits)."""

    @abstractmethod
    def split(self, split: str, required: bool = True) -> Any:
        """The data of ``split``; ``None`` when it is absent and not ``required`` (a missing
        required split raises ``harness.errors.DataError`` naming the file)."""

    @abstractmethod
    def split_hash(self, split: str) -> str:
        """A hash of ``split`` as used (content and any sample limit)."""

    @abstractmethod
    def train_features(
        self, tokenizer: Any, label2id: dict[str, int], max_length: int
    ) -> tuple[list[dict[str, Any]], int]:
        """(training features with ``labels``, number of source examples); see ``finetune``."""

    def raw_examples(self, split: str, limit: int | None = None) -> Examples:
        """The first ``limit`` examples of ``split`` (default: ``sample_limit(split)``), raw: what
        a model that is not a transformer (``harness.examples.ExampleModel``) trains and predicts
        on. Implement it (and list ``"model:*"`` in ``requires``) to feed such models."""
        raise PluginError(f"task {self.name!r} does not hand out raw examples (raw_examples)")

    # -- shared --------------------------------------------------------------------------------
    @property
    def validation_split(self) -> str | None:
        """The ``validation_split`` parameter (``harness.validation`` reads it)."""
        return self.params.validation_split

    def head(self) -> Head:
        return Head(self.head_kind, tuple(self.labels()))

    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.split_names if self.split(s, required=False) is not None)

    def train_hash(self) -> str:
        return hash_text(self.split_hash("train"))

    def data_hash(self) -> str:
        parts = [self.split_hash(self.eval_split)]
        if self.eval_split != "train" and self.split("train", required=False) is not None:
            parts.append(self.split_hash("train"))
        return hash_text(*parts)

    def recipe(self, seed: int) -> Recipe:
        """This task's recipe with ``seed``."""
        return Recipe(**self.params.model_dump(include=set(RecipeParams.model_fields)),
                      seed=int(seed))

    def eval_setup(self, model: LoadedModel) -> EvalSetup:
        """Tokenizer, label order and evaluation length of ``model`` (what ``evaluate`` needs)."""
        return EvalSetup(model.tokenizer, tuple(model.head.labels),
                         model_eval_length(model, self.params.eval_max_length))

    def sample_limit(self, split: str, limit: int | None = None) -> int | None:
        """``limit``, else the cap the parameters set for ``split``: ``max_train_samples`` for
        train, ``max_eval_samples`` for the evaluation split, none (all) for any other."""
        if limit is not None:
            return limit
        if split == "train":
            return self.params.max_train_samples
        return self.params.max_eval_samples if split == self.eval_split else None

    def eval_options(self, split: str | None, limit: int | None) -> tuple[str, int | None]:
        """``evaluate``'s ``split``/``limit`` keywords resolved: the split to score (the task's
        ``eval_split`` by default; one it lacks raises ``DataError`` naming the file) and the
        sample cap (``max_eval_samples`` by default)."""
        split = self.eval_split if split is None else split
        if split not in self.split_names:
            raise PluginError(f"task {self.name!r}: no split {split!r} (splits: {self.split_names})")
        self.split(split)  # a missing split is a DataError naming its file
        if limit is not None and int(limit) < 1:
            raise PluginError(f"task {self.name!r}: limit must be >= 1, got {limit!r}")
        return split, (self.params.max_eval_samples if limit is None else int(limit))

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
            return model
        if is_example_model(model):
            return fit_examples(model, lambda: self.raw_examples("train"), ctx,
                                data_hash=self.train_hash(), task=self.name, task_version=self.version)
        return self._train(model, ctx)

    def example_latency_batches(self, batch_size: int, count: int, seed: int) -> list[dict[str, Any]]:
        """``latency_batches`` for an ``ExampleModel``: raw inputs of the evaluation split."""
        return example_batches(self.raw_examples(self.eval_split).inputs, batch_size, count, seed)

    def finetune(self, model: LoadedModel, ctx: CellContext, *, epochs: float) -> LoadedModel:
        """Continue training ``model`` (head kept) for ``epochs`` with this task's recipe
        (``harness.api.Finetunable``). Not cached here: the caller caches its artifact."""
        return self._train(model, ctx, epochs=epochs, resume=True)

    def _train(self, model: LoadedModel, ctx: CellContext, *, epochs: float | None = None,
               resume: bool = False) -> LoadedModel:
        self.split("train")  # a missing train split is a DataError naming it, before any work
        recipe = self.recipe(ctx.seed)
        label2id = {label: i for i, label in enumerate(model.head.labels)}
        missing = set(self.labels()) - set(label2id)
        if missing:
            raise PluginError(f"model head lacks labels {sorted(missing)} of the data")
        train_len = min(recipe.max_length, model.max_length)
        return finetune(
            model, lambda: self.train_features(model.tokenizer, label2id, train_len), recipe, ctx,
            data_hash=self.train_hash(), task=self.name, task_version=self.version,
            epochs=epochs, resume=resume,
        )
