"""Compression chains: a suite entry whose ``chain:`` lists steps run one after the other.

::

    compressions:
      - name: prune50-ft-int8
        chain:
          - {plugin: prune, params: {sparsity: 0.5}}
          - {plugin: finetune, params: {epochs: 0.2}}
          - nncf-ptq

Every step but the last is a :class:`harness.api.Transform` (torch model in, torch model out);
the last may be any compression. A step that cannot feed the next is a suite error found when
the suite is validated. The output of each transform is cached under
``<cache_dir>/transform/`` by (input model, step plugin, version, resolved parameters, task),
so chains that share a prefix compute it once, in this run and the next. Rows record the steps
(``compression_params``: ``{"chain": [...]}``) and what each step cost (``chain_steps``, a JSON
list of ``{plugin, params, time_s, build_time_s, cache_hit}``).

A cached output is tensors only (``Transform.save_output``: safetensors + config.json): on a hit
the step's own ``Transform.load_output`` rebuilds the module's structure from the input model and
its parameters and loads the tensors into it. Nothing is unpickled and no class is named by the
cache; an entry that does not load is rebuilt (``harness.toolkit.cached_load``).

A step may replace the tokenizer (``vocab-trim``): the new one is saved with the output as JSON
(``tokenizer/`` in the entry), read back on a hit with the input tokenizer's class, and handed to
the next step (its calibration and export use it); the predictor carries it
(``Predictor.tokenizer``), so the core evaluates and times the cell with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .api import (
    CellContext,
    Compression,
    LoadedModel,
    Params,
    Predictor,
    Task,
    Transform,
    _register_transform_apply,
)
from .capabilities import MODEL_PREFIX, common_kinds
from .entries import Entry, check_params, deep_merge, plugin_and_params
from .errors import BadInput, PluginError, SuiteError, Unsupported
from .registry import Registries, unknown_name_message
from .toolkit.artifacts import cached_load, plugin_params, task_key
from .toolkit.predictor import TorchPredictor
from .toolkit.weights import save_module

#: the plugin name of a chain entry in result rows (``compression_plugin``)
CHAIN = "chain"
#: where a transform's cache entry keeps the tokenizer it changed (JSON files)
TOKENIZER_DIR = "tokenizer"


# ---------------------------------------------------------------------------------------------
# Suite entries


def chain_entry(where: str, item: dict[str, Any], defaults: dict[str, Any], path: Path | None) -> Entry:
    """The ``Entry`` of a ``{name, chain: [step, ...]}`` item (``where``: ``compressions[i]``).

    A step is a plugin name or ``{plugin, params}``; the suite's ``defaults.compressions`` apply
    to each step by its plugin. The entry's ``params`` are ``{"chain": [{plugin, params}, ...]}``
    (so the suite hash and the cell id cover every step) and its ``steps`` the step entries."""
    unknown = sorted(set(item) - {"name", "chain"})
    if unknown:
        raise SuiteError("a chain entry has 'name' and 'chain' only (parameters go on its steps)",
                         path=path, key=f"{where}.{unknown[0]}")
    raw = item["chain"]
    if not isinstance(raw, list) or not raw:
        raise SuiteError("must be a non-empty list of steps (plugin names or {plugin, params})",
                         path=path, key=f"{where}.chain")
    steps = []
    for j, step in enumerate(raw):
        at = f"{where}.chain[{j}]"
        if isinstance(step, str):
            step = {"plugin": step}
        if not isinstance(step, dict):
            raise SuiteError("must be a plugin name or a mapping with 'plugin'", path=path, key=at)
        plugin, params = plugin_and_params(step, {"plugin", "params"}, "a chain step", at, path)
        params = deep_merge(defaults.get(plugin) or {}, params)
        steps.append(Entry("compression", plugin, plugin, params, at))
    name = item.get("name") or "+".join(s.plugin for s in steps)
    if not isinstance(name, str):
        raise SuiteError("must be a string", path=path, key=f"{where}.name")
    params = {"chain": [{"plugin": s.plugin, "params": s.params} for s in steps]}
    return Entry("compression", CHAIN, name, params, where, steps=tuple(steps))


def validate_chain(entry: Entry, registries: Registries, path: Path | None) -> None:
    """Step names and parameters, and that each step but the last is a ``Transform``."""
    reg = registries.compressions
    for step in entry.steps:
        if step.plugin not in reg:
            raise SuiteError(unknown_name_message("compression", step.plugin, reg.classes),
                             path=path, key=f"{step.where}.plugin")
        check_params(reg.classes[step.plugin], step, path)
    for j, (step, nxt) in enumerate(zip(entry.steps, entry.steps[1:])):
        cls = reg.classes[step.plugin]
        if not issubclass(cls, Transform):
            transforms = sorted(n for n, c in reg.classes.items() if issubclass(c, Transform))
            raise SuiteError(
                f"step {j + 1} {step.plugin!r} cannot feed step {j + 2} {nxt.plugin!r}: "
                f"{step.plugin!r} does not output a torch model (it is not a harness.api."
                f"Transform), so it can only be a chain's last step. Steps that can come "
                f"before another: {', '.join(transforms) or '(none installed)'}",
                path=path, key=f"{step.where}.plugin",
            )


# ---------------------------------------------------------------------------------------------
# Running


def run_transform(step: Transform, model: LoadedModel, task: Task,
                  ctx: CellContext) -> tuple[LoadedModel, dict[str, Any]]:
    """``step.transform(model)``, cached with the artifact cache (``cached_load``) under
    ``<cache_dir>/transform/``: keyed by the input model (identity, head, weights), the step
    (name, version, resolved parameters, and its class), the task and the seed (training steps
    shuffle with it). The output is written with ``step.save_output`` and read back, on a hit,
    with ``step.load_output(model, folder)``. Returns the output, whose identity is that key,
    and the step's record."""
    cls = type(step)
    before = dict(model.info)  # the step may change the core's copy in place
    source = dataclasses.replace(model, info=before)  # what load_output rebuilds from
    built: dict[str, Any] = {}

    def build(folder: Path) -> dict[str, Any]:
        out = step.transform(model, task, ctx)
        if not isinstance(out, LoadedModel):
            raise PluginError(f"compression plugin {step.name!r}: transform() returned "
                              f"{type(out).__name__}, not a harness.api.LoadedModel")
        built["module"] = out.module.to("cpu").eval()
        step.save_output(built["module"], folder)
        if out.tokenizer is not source.tokenizer:  # a new vocabulary (vocab-trim): saved with it
            out.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR), legacy_format=False)
            built["tokenizer"] = out.tokenizer
        added = {k: v for k, v in out.info.items()  # what this step recorded (plain values)
                 if isinstance(v, (str, int, float, bool, type(None))) and before.get(k, ...) != v}
        return {"info": added}

    def load(folder: Path) -> tuple[Any, Any]:
        if "module" in built:  # built just now: the module in memory is the one saved
            return built["module"], built.get("tokenizer")
        module = step.load_output(source, folder).to("cpu").eval()
        return module, load_tokenizer(source.tokenizer, folder / TOKENIZER_DIR, module)

    # "out=tensors": entries of the earlier pickled-module format are never read (rebuilt once)
    extra = f"{cls.__module__}.{cls.__qualname__}|{task_key(task)}|seed={ctx.seed}|out=tensors"
    folder, meta, hit, (module, tokenizer) = cached_load(ctx, model, step, build, load,
                                                         extra_key=extra, kind="transform")
    spent = float(meta.get("compression_time_s", 0.0))
    info: dict[str, Any] = meta["info"] if isinstance(meta.get("info"), dict) else {}
    record = {"plugin": step.name, "params": plugin_params(step), "time_s": 0.0 if hit else spent,
              "build_time_s": spent, "cache_hit": hit, "info": info}
    result = dataclasses.replace(
        model, module=module, tokenizer=source.tokenizer if tokenizer is None else tokenizer,
        identity=f"t-{folder.name}", trained_for_task=True, info={**before, **info},
    )
    return result, record


def load_tokenizer(like: Any, folder: Path, module: Any) -> Any:
    """The tokenizer a transform saved in its cache entry (``folder``), or None when it kept the
    input's. Read from its JSON files with the input tokenizer's class (``like``; no class named
    by the cache is loaded); a ``ValueError`` when it has ids beyond the module's embedding table
    (the cache then rebuilds the entry)."""
    if not folder.is_dir():
        return None
    tokenizer = type(like).from_pretrained(str(folder), trust_remote_code=False)
    emb = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    rows = getattr(emb, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(f"{folder}: the tokenizer has {len(tokenizer)} ids, the embedding table {rows} rows")
    return tokenizer


class TransformedPredictor(TorchPredictor):
    """A transform's output on eager PyTorch; its artifact is the module's unique weights
    (``safetensors.torch.save_model`` stores a tensor shared by several layers once) + config,
    and, when the transform changed the tokenizer (``tokenizer`` is not None), the tokenizer's
    JSON files in the same folder: the artifact loads as a normal transformers model."""

    def __init__(self, module: Any, *, device: str, info: dict[str, Any], tokenizer: Any = None) -> None:
        super().__init__(module, device=device)
        self.info = info
        self.tokenizer = tokenizer

    def save(self, directory: Path) -> Path:
        out = Path(directory) / "model"
        out.mkdir(parents=True, exist_ok=True)
        save_module(self.module, out)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(out), legacy_format=False)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


def transform_predictor(step: Transform, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
    """``Transform.apply``'s default: the cached transform, run as eager PyTorch."""
    out, record = run_transform(step, model, task, ctx)
    info = {"compression_time_s": record["time_s"], "compression_time_build_s": record["build_time_s"],
            "cache_hit": record["cache_hit"], **record["info"]}
    changed = out.tokenizer if out.tokenizer is not model.tokenizer else None
    return TransformedPredictor(out.module, device=ctx.device, info=info, tokenizer=changed)


class ChainPredictor(Predictor):
    """The last step's predictor, with the chain's columns added to ``describe()``."""

    def __init__(self, inner: Predictor, steps: list[dict[str, Any]], tokenizer: Any = None) -> None:
        self.inner = inner
        self.runtime, self.device, self.precision = inner.runtime, inner.device, inner.precision
        self.steps = steps
        #: the last step's own changed tokenizer, else the one an earlier step gave its input
        own = getattr(inner, "tokenizer", None)
        self.tokenizer = tokenizer if own is None else own

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        return self.inner(batch)

    def synchronize(self) -> None:
        self.inner.synchronize()

    def save(self, directory: Path) -> Path:
        return self.inner.save(directory)

    def parameter_counts(self) -> tuple[int, int]:
        return self.inner.parameter_counts()

    def bits_per_weight(self) -> float:
        return self.inner.bits_per_weight()

    def __getattr__(self, name: str) -> Any:  # e.g. a task reading the inner module
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe(self) -> dict[str, Any]:
        out = dict(self.inner.describe())
        last = self.steps[-1]
        last.update(time_s=float(out.get("compression_time_s", last.get("time_s", 0.0))),
                    build_time_s=float(out.get("compression_time_build_s",
                                               out.get("compression_time_s", 0.0))),
                    cache_hit=bool(out.get("cache_hit", False)))
        out.update(
            chain_steps=json.dumps(self.steps, sort_keys=True, default=str),
            chain_length=len(self.steps),
            compression_time_s=round(sum(s["time_s"] for s in self.steps), 3),
            compression_time_build_s=round(sum(s["build_time_s"] for s in self.steps), 3),
            cache_hit=all(s["cache_hit"] for s in self.steps),
        )
        return out


class Chain(Compression):
    """The core's compression for a ``chain:`` entry: its steps, run in order."""

    name = CHAIN
    version = "1"
    description = "a sequence of compression steps (suite 'chain:' entries)"
    Params = Params  # none of its own: each step has its own

    def __init__(self, steps: list[Compression]) -> None:
        super().__init__()
        self.steps = steps
        tasks_need = (c for s in steps for c in s.requires if not c.startswith(MODEL_PREFIX))
        self.requires = (*dict.fromkeys(tasks_need), *common_kinds(steps))

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        for i, step in enumerate(self.steps):
            reason = step.unsupported_reason(ctx)
            if reason:
                return f"chain step {i + 1} {step.name!r}: {reason}"
        return None

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> Predictor:
        records: list[dict[str, Any]] = []
        n = len(self.steps)
        given = model.tokenizer
        for i, step in enumerate(self.steps):
            try:
                if i < n - 1:
                    assert isinstance(step, Transform)  # checked when the suite was validated
                    model, record = run_transform(step, model, task, ctx)
                    records.append(record)
                else:
                    predictor = step.apply(model, task, ctx)
                    records.append({"plugin": step.name, "params": plugin_params(step), "time_s": 0.0})
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:
                message = f"chain step {i + 1}/{n} {step.name!r}: {type(exc).__name__}: {exc}"
                if isinstance(exc, BadInput):  # still the input's fault, not a crash
                    raise BadInput(message, entry=exc.entry) from exc
                if isinstance(exc, Unsupported):  # still a skip: this step cannot take the model
                    raise Unsupported(message) from exc
                raise PluginError(message) from exc
        changed = model.tokenizer if model.tokenizer is not given else None  # an earlier step's
        return ChainPredictor(predictor, records, tokenizer=changed)


_register_transform_apply(transform_predictor)  # Transform.apply's default (see harness.api)
