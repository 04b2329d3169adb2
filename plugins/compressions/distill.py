"""The ``distill`` compression: a shallower (optionally narrower) student trained from the cell's
fine-tuned model as its teacher.

The student is a copy of the teacher that keeps ``layers: [..]`` of its transformer layers, or
``num_layers: k`` evenly spaced ones (the first and the last among them; default: half the
layers), initialised from the teacher's weights (embeddings and head included). The layers, and
the config field that counts them (``num_hidden_layers``, DistilBERT's ``n_layers``, ...), are
found in any transformers encoder (``plugins/_lib/arch.py``); on ALBERT, whose one layer runs
``num_hidden_layers`` times, the student runs it fewer times (faster, not smaller). With
``intermediate_size`` its feed-forward blocks are narrowed to the neurons of largest
``|W_in row| * |W_out column|`` (the ``prune`` FFN score). It is then trained on the task's train
split with the task's own recipe and batching (``finetune.finetune``, the loop every task uses),
for ``epochs``, on the loss

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels)

averaged over what the task scores: every example (sequence classification), or every labelled
first sub-token (token classification, the -100 convention). ``alpha: 0`` is the same student
fine-tuned without a teacher (the control a distillation gain is measured against). With
``layer_loss`` (``hidden``, ``attention``, ``both``) the loss adds ``layer_weight`` x an
intermediate-layer term, student layer ``j`` against teacher layer ``keep[j]`` (MiniLM/TinyBERT;
``plugins/_lib/layer_distill.py``): the teacher then runs beside the student on every batch,
and its logits come from that pass rather than from the cache below.

The teacher's logits on the train split are computed once per teacher and cached on disk
(``<cache_dir>/distill-teacher/<key>.safetensors``, key: the teacher's identity and weights, the
task's training data and the feature length), so several students cost one teacher pass; each
training example finds its logits by its token ids. The artifact is a plain ``save_pretrained``
checkpoint of the student (its config has the new layer count and FFN width; the cache rebuilds
the student from the teacher and the parameters, and reads only its tensors): fewer layers is
both smaller and proportionally faster on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

import harness
from harness.api import CellContext, LoadedModel, Task, Transform
from harness.errors import PluginError
from harness.toolkit import (
    finetune,
    hash_text,
    load_tensors,
    module_fingerprint,
)
from harness.toolkit.weights import WEIGHTS_FILE

from .._lib.arch import discover, keep_blocks
from .._lib.layer_distill import layer_teacher
from .._lib.layers import device_reason, params_vs_source
from .._lib.structured import apply_structured, ffn_scores, intermediate_field
from .._lib.teacher_logits import teacher_logits
from .._lib.torch_utils import cpu_copy

TEACHER_DIR = "distill-teacher"


# ---------------------------------------------------------------------------------------------
# the student
# ---------------------------------------------------------------------------------------------


def even_layers(n: int, k: int) -> list[int]:
    """``k`` of ``n`` layer indices, evenly spaced, the first and the last included (k >= 2)."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return sorted({int(i * (n - 1) / (k - 1) + 0.5) for i in range(k)})


def make_student(teacher: Any, keep: list[int], intermediate_size: int | None) -> Any:
    """A copy of ``teacher`` with only the ``keep`` layers (and a narrower FFN), config updated
    (the discovered layer-count field, and the feed-forward width's) so that it rebuilds."""
    import torch

    student = cpu_copy(teacher).float()
    found = keep_blocks(student, discover(student, "distill"), keep, plugin="distill")
    if intermediate_size is not None:
        n = found.intermediate_size
        if intermediate_size >= n:
            raise PluginError(f"distill: intermediate_size={intermediate_size} is not narrower "
                              f"than the teacher's {n}")
        field = intermediate_field(student.config, n)
        spec = {}
        for b in found.blocks:
            if b.same_as is None:
                top = torch.argsort(ffn_scores(student, found, b.index), descending=True)[:intermediate_size]
                spec[b.path] = top.sort().values.tolist()
        apply_structured(student, found, "ffn", spec)
        if field is not None:
            setattr(student.config, field, intermediate_size)
    return student


# ---------------------------------------------------------------------------------------------
# the loss, as a module the shared fine-tuning loop can train
# ---------------------------------------------------------------------------------------------


def distill_loss(student: Any, teacher: Any | None, labels: Any, alpha: float, temperature: float) -> Any:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`` averaged over the scored
    units (examples, or tokens whose label is not -100). ``student``: (B, C) or (B, S, C)."""
    import torch.nn.functional as F  # noqa: N812 - the usual name

    c = student.shape[-1]
    s = student.reshape(-1, c)
    y = labels.reshape(-1)
    scored = y != -100
    hard = F.cross_entropy(s[scored], y[scored]) if alpha < 1 else s.sum() * 0
    if alpha == 0 or teacher is None:
        return hard
    t = teacher.reshape(-1, c)[scored]
    log_p = F.log_softmax(s[scored] / temperature, dim=-1)
    log_q = F.log_softmax(t / temperature, dim=-1)
    soft = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * hard


@functools.cache
def _wrapper() -> type:
    import torch

    class DistillStudent(torch.nn.Module):
        """The student plus the teacher's logits: ``forward(**batch, labels=...)`` returns an
        object with ``.loss`` (the distillation loss) and ``.logits``, as the loop expects."""

        def __init__(self, student: Any, table: dict[bytes, Any] | None, alpha: float, temperature: float,
                     layer: Any = None):
            super().__init__()
            self.student = student
            self.table = table
            self.alpha, self.temperature = alpha, temperature
            self.layer = layer  # a LayerTeacher (layer_loss), moved to the device with the student

        def train(self, mode: bool = True) -> Any:
            super().train(mode)
            if self.layer is not None:
                self.layer.steady()
            return self

        def _teacher(self, input_ids: Any, attention_mask: Any, like: Any) -> Any:
            out = torch.zeros_like(like)
            for i, (ids, mask) in enumerate(zip(input_ids, attention_mask, strict=True)):
                n = int(mask.sum())
                key = ids[:n].to("cpu", torch.int32).numpy().tobytes()
                t = self.table[key]  # type: ignore[index]
                if like.dim() == 3:
                    out[i, :n] = t.to(like.device)
                else:
                    out[i] = t.to(like.device)
            return out

        def forward(self, labels: Any = None, **inputs: Any) -> Any:
            from types import SimpleNamespace

            if self.layer is not None:
                return self.layer.step(self.student, labels, inputs, functools.partial(
                    distill_loss, alpha=self.alpha, temperature=self.temperature))
            logits = self.student(**inputs).logits
            teacher = None
            if self.table is not None and self.alpha > 0:
                teacher = self._teacher(inputs["input_ids"], inputs["attention_mask"], logits.detach().float())
            loss = distill_loss(logits.float(), teacher, labels, self.alpha, self.temperature)
            return SimpleNamespace(loss=loss, logits=logits)

    return DistillStudent


# ---------------------------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------------------------


class Distill(Transform):
    """Knowledge distillation into a student with fewer (and optionally narrower) layers."""

    name = "distill"
    version = "1"
    description = "knowledge distillation into a shallower (narrower) student initialised from the teacher"

    class Params(harness.Params):
        layers: list[int] | None = Field(None, min_length=1)
        """Teacher layer indices the student keeps, e.g. [0, 2, 4]; give this or num_layers."""
        num_layers: int | None = Field(None, ge=1)
        """Or: keep this many evenly spaced layers (default: half the teacher's)."""
        intermediate_size: int | None = Field(None, ge=1)
        """Narrow each feed-forward block to this many neurons (default: keep its width)."""
        temperature: float = Field(2.0, gt=0)
        """Softmax temperature of the distillation term."""
        alpha: float = Field(0.5, ge=0, le=1)
        """Weight of the distillation term (0: plain fine-tuning of the student)."""
        epochs: float = Field(1.0, gt=0)
        """Training epochs on the task's train split (may be fractional)."""
        layer_loss: Literal["none", "hidden", "attention", "both"] = "none"
        """Add an intermediate-layer term: student layer j vs teacher layer keep[j], on hidden states
        (MSE), attention distributions (KL) or both; the teacher then runs on every batch."""
        layer_weight: float = Field(1.0, ge=0)
        """Weight of the intermediate-layer term (with layer_loss)."""

        @field_validator("layers")
        @classmethod
        def _distinct(cls, layers: list[int] | None) -> list[int] | None:
            if layers is None:
                return None
            if min(layers) < 0 or len(set(layers)) != len(layers):
                raise ValueError("layer indices must be distinct and >= 0")
            return sorted(layers)

        @model_validator(mode="after")
        def _one_choice(self) -> Any:
            if self.layers is not None and self.num_layers is not None:
                raise ValueError("give layers or num_layers, not both")
            return self

        @model_serializer(mode="wrap")
        def _key(self, handler: Any) -> Any:  # without layer_loss, cache keys as before it existed
            data = handler(self)
            if self.layer_loss == "none":
                data.pop("layer_loss", None)
                data.pop("layer_weight", None)
            return data

    params: Params
    #: the train split tokenised, and the task's recipe (a task without them is skipped)
    requires = ("train-features",)

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("distill", ctx.device)

    def keep(self, n: int) -> list[int]:
        if self.params.layers is not None:
            bad = [i for i in self.params.layers if i >= n]
            if bad:
                raise PluginError(f"distill: layers {bad} do not exist: the teacher has {n} layers (0..{n - 1})")
            return list(self.params.layers)
        return even_layers(n, self.params.num_layers if self.params.num_layers is not None else max(1, (n + 1) // 2))

    @staticmethod
    def _training(task: Task) -> tuple[Any, Any]:
        recipe, features = getattr(task, "recipe", None), getattr(task, "train_features", None)
        if not callable(recipe) or not callable(features) or not callable(getattr(task, "train_hash", None)):
            raise PluginError(f"distill: task {task.name!r} offers no training features (it needs the "
                              "recipe(), train_hash() and train_features() of harness.toolkit.FineTunedTask)")
        return recipe, features

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, dict[str, Any]]:
        """The trained student (on the CPU) and what to record about it."""
        recipe_fn, features_fn = self._training(task)
        recipe = recipe_fn(ctx.seed)
        found = discover(model.module, "distill")
        keep = self.keep(found.layer_count)
        student = make_student(model.module, keep, self.params.intermediate_size)
        label2id = {label: i for i, label in enumerate(model.head.labels)}
        train_len = min(recipe.max_length, model.max_length)
        features, examples = features_fn(model.tokenizer, label2id, train_len)
        if not features:
            raise PluginError(f"distill: task {task.name!r} has no training examples")
        table, hit = None, None  # alpha 0: no teacher pass at all; layer_loss: the live teacher's
        layer = None if self.params.layer_loss == "none" else layer_teacher(
            model.module, student, keep, found.layer_count, self.params.layer_loss, self.params.layer_weight)
        if self.params.alpha > 0 and layer is None:
            key = hash_text("teacher-logits", model.identity, module_fingerprint(model.module),
                            task.name, task.version, task.train_hash(), train_len)  # type: ignore[attr-defined]
            path = Path(ctx.cache_dir) / TEACHER_DIR / f"{key}.safetensors"
            table, hit = teacher_logits(model, features, path, recipe.batch_size, ctx)  # type: ignore[assignment]
        wrapped = _wrapper()(student, table, self.params.alpha, self.params.temperature, layer)
        carrier = LoadedModel(module=wrapped, tokenizer=model.tokenizer, head=model.head,
                              identity=f"{model.identity}+distill", source=model.source,
                              trained_for_task=True, max_length=model.max_length)
        trained = finetune(carrier, lambda: (features, examples), recipe, ctx,
                           data_hash=task.train_hash(), task=task.name,  # type: ignore[attr-defined]
                           task_version=task.version, epochs=self.params.epochs, resume=True)
        run = trained.info.get("recovery", {})  # what the loop reports for a resumed run
        student = trained.module.student.to("cpu").eval()
        extra = {} if layer is None else layer.release(student)
        return student, {**extra, "teacher_layers": found.layer_count, "kept_layers": keep,
                "teacher_intermediate_size": found.intermediate_size,
                "teacher_logits_cached": hit, "distill_train_time_s": round(run.get("train_time_s", 0.0), 3),
                "distill_train_loss": run.get("train_loss"), "distill_steps": run.get("optimizer_steps"),
                "train_features": len(features)}

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        """The trained student. Used alone (``apply``, the ``Transform`` default) its artifact is
        a plain checkpoint of the student (safetensors + config), cached by the core like any
        chain step's output, so ``distill`` alone and a chain starting with the same ``distill``
        train one student."""
        student, extra = self._compute(model, task, ctx)  # checks the task and layers first
        width = extra.pop("teacher_intermediate_size")
        extra.update(
            kept_layers=json.dumps(extra["kept_layers"]),
            student_layers=len(extra["kept_layers"]),
            student_intermediate_size=self.params.intermediate_size or width,
            distill_alpha=self.params.alpha, distill_temperature=self.params.temperature,
            params_vs_source=params_vs_source(student, model.module),
        )
        return dataclasses.replace(model, module=student, info={**model.info, **extra})

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """The cached student: its structure rebuilt from the teacher ``model`` and this plugin's
        parameters (the kept layers, the FFN width), as ``transform`` built it, and the saved
        tensors loaded into it. Nothing but tensors is read from the cache."""
        keep = self.keep(discover(model.module, "distill").layer_count)
        student = make_student(model.module, keep, self.params.intermediate_size)
        return load_tensors(student, Path(folder) / WEIGHTS_FILE)


@harness.hookimpl
def register_compressions(register):
    register(Distill)


__all__ = ["Distill", "distill_loss", "even_layers", "make_student"]
