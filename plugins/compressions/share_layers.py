"""The ``share-layers`` compression: cross-layer weight sharing (as in ALBERT).

Groups of encoder layers run one set of weights: ``groups: [[0, 1], [2, 3], [4, 5]]``, or
``every: k`` (consecutive groups of ``k``; the last may be shorter). Layers in no group keep their
own weights. The shared layer starts from the element-wise mean of the group's layers
(``init: mean``, the default) or from its first layer (``init: first``). Sharing is real: the
encoder's layer list holds the *same module object* at every position of a group, so the model
has fewer parameters, recovery training (``recovery_epochs``, the task's recipe) updates one set
of weights per group, and the artifact stores each shared tensor once (safetensors of the
non-repeated layers plus a JSON spec of the groups); loading it ties the layers again (the groups
from the parameters, not from the file).

Sharing saves parameters and bytes, not compute: every position still runs a full layer. The
layers are found in any transformers encoder (``plugins/_lib/arch.py``); a model whose layers are
already shared (ALBERT runs one layer ``num_hidden_layers`` times) is skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

import harness
from harness.api import CellContext, LoadedModel, Task
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, load_tensors, task_key

from .._lib.arch import check_unshared, discover, share_blocks
from .._lib.layers import RecoveringTransform, device_reason, recover, torch_predictor
from .._lib.torch_utils import WEIGHTS_FILE, CompressedTorchPredictor, check_fits, cpu_copy

SPEC_FILE = "share_spec.json"


def resolve_groups(groups: list[list[int]] | None, every: int | None, n_layers: int) -> list[list[int]]:
    """The groups of more than one layer, for a model of ``n_layers`` layers."""
    if groups is None:
        k = int(every or 2)
        groups = [list(range(i, min(i + k, n_layers))) for i in range(0, n_layers, k)]
    bad = [i for g in groups for i in g if i >= n_layers]
    if bad:
        raise PluginError(f"share-layers: groups name layer(s) {bad}, but the model has {n_layers} "
                          f"layers (0..{n_layers - 1})")
    return [g for g in groups if len(g) > 1]


def tie(layers: Any, groups: list[list[int]]) -> None:
    """Make every layer of each group the group's first layer object (in place)."""
    for g in groups:
        for i in g[1:]:
            layers[i] = layers[g[0]]


def blocks(module: Any) -> tuple[Any, int]:
    """The discovered structure of ``module`` and its layer count; ``UnsupportedModel`` (a skip)
    when it has none, or when its layers are already shared (ALBERT)."""
    found = discover(module, "share-layers")
    check_unshared(module, found, "share-layers")
    return found, len(found.blocks)


def save_shared(module: Any, prefix: str, groups: list[list[int]], path: Path) -> None:
    """safetensors of ``module``'s state without the repeated layers of each group."""
    from safetensors.torch import save_file

    repeats = tuple(f"{prefix}.{i}." for g in groups for i in g[1:])
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()
             if not k.startswith(repeats)}
    save_file(state, str(path), metadata={"harness_shared_groups": json.dumps(groups)})


class ShareLayers(RecoveringTransform):
    """Cross-layer weight sharing: groups of encoder layers use one set of weights."""

    name = "share-layers"
    version = "1"
    description = "cross-layer weight sharing (ALBERT-style): groups of layers run one set of weights"

    class Params(harness.Params):
        groups: list[list[int]] | None = Field(None, min_length=1)
        """Lists of layer indices that share weights, e.g. [[0, 1], [2, 3], [4, 5]]; give this or every."""
        every: int | None = Field(None, ge=2)
        """Or: consecutive groups of this many layers (2 when neither is given)."""
        init: Literal["mean", "first"] = "mean"
        """The shared weights start as the element-wise mean of the group's layers, or its first layer."""
        recovery_epochs: float = Field(0, ge=0)
        """Fine-tune after sharing with the task's recipe (0: none)."""

        @field_validator("groups")
        @classmethod
        def _disjoint(cls, groups: list[list[int]] | None) -> list[list[int]] | None:
            if groups is None:
                return None
            if any(not g or min(g) < 0 for g in groups):
                raise ValueError("each group must be a non-empty list of layer indices >= 0")
            flat = [i for g in groups for i in g]
            if len(set(flat)) != len(flat):
                raise ValueError("a layer index may appear once across groups")
            return [sorted(g) for g in groups]

        @model_validator(mode="before")
        @classmethod
        def _default_every(cls, data: Any) -> Any:
            if isinstance(data, dict) and data.get("groups") is None and data.get("every") is None:
                return {**data, "every": 2}
            return data

        @model_validator(mode="after")
        def _one_grouping(self) -> Any:
            if self.groups is not None and self.every is not None:
                raise ValueError("give groups or every, not both")
            return self

    params: Params


    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("share-layers", ctx.device)

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, str, list[list[int]], int, str]:
        """(module with shared layers, layer-list name, groups, layer count, recovery note)."""
        module = cpu_copy(model.module).float().eval()
        found, n = blocks(module)
        groups = resolve_groups(self.params.groups, self.params.every, n)
        share_blocks(module, found, groups, init=self.params.init, plugin="share-layers")
        note = "no recovery"
        if self.params.recovery_epochs > 0:
            module, note = recover(model, module, task, ctx, self.params.recovery_epochs, "share-layers")
            layers = module.get_submodule(found.stack_path)
            if any(layers[i] is not layers[g[0]] for g in groups for i in g):  # pragma: no cover
                raise PluginError("share-layers: recovery training untied the shared layers")
        return module, found.stack_path, groups, n, note

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        module, _, groups, n, note = self._compute(model, task, ctx)
        info = {"share_groups": json.dumps(groups), "layers": n,
                "distinct_layers": n - sum(len(g) - 1 for g in groups), "recovery": note}
        return dataclasses.replace(model, module=module, info={**model.info, **info})

    def _build(self, model: LoadedModel, task: Task, ctx: CellContext, folder: Path) -> dict[str, Any]:
        module, prefix, groups, n, note = self._compute(model, task, ctx)
        save_shared(module, prefix, groups, folder / WEIGHTS_FILE)
        (folder / SPEC_FILE).write_text(json.dumps({"prefix": prefix, "groups": groups, "layers": n}))
        module.config.to_json_file(str(folder / "config.json"))
        return {"recovery": note}

    def _tied(self, model: LoadedModel) -> tuple[Any, str, list[list[int]], int]:
        """(a copy of ``model.module`` with this plugin's groups tied, layer-list name, groups,
        layer count): the structure ``_compute`` makes, from the model and the parameters."""
        module = cpu_copy(model.module).float().eval()
        found, n = blocks(module)
        groups = resolve_groups(self.params.groups, self.params.every, n)
        tie(module.get_submodule(found.stack_path), groups)
        return module, found.stack_path, groups, n

    def load(self, model: LoadedModel, folder: Path) -> tuple[Any, dict[str, Any]]:
        """The shared-weight module back from an artifact folder (layers tied again), and its
        spec: the groups come from this plugin's parameters (the spec file is for people;
        nothing but tensors is read from the folder)."""
        from safetensors.torch import load_file

        module, prefix, groups, n = self._tied(model)
        missing, unexpected = module.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=False)
        repeats = tuple(f"{prefix}.{i}." for g in groups for i in g[1:])
        check_fits([k for k in missing if not k.startswith(repeats)], unexpected, folder, "share-layers")
        return module.eval(), {"prefix": prefix, "groups": groups, "layers": n}

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """``transform``'s cached output: this plugin's groups tied, the unique tensors loaded."""
        module, _, _, _ = self._tied(model)
        return load_tensors(module, Path(folder) / WEIGHTS_FILE)

    def apply(self, model: LoadedModel, task: Task, ctx: CellContext) -> CompressedTorchPredictor:
        _, n = blocks(model.module)  # a skip (with the reason) or a clear error before any work
        resolve_groups(self.params.groups, self.params.every, n)
        extra_key = task_key(task) if self.params.recovery_epochs > 0 else ""
        folder, meta, hit, (module, spec) = cached_load(
            ctx, model, self, lambda f: self._build(model, task, ctx, f),
            lambda f: self.load(model, f), extra_key=extra_key,
        )
        info = base_info(self, "torch", meta, hit)
        groups = spec["groups"]
        info["share_groups"] = json.dumps(groups)
        info["layers"] = spec["layers"]
        info["distinct_layers"] = spec["layers"] - sum(len(g) - 1 for g in groups)
        info["share_init"] = self.params.init
        info["recovery"] = meta.get("recovery", "no recovery")
        return torch_predictor(module, model, ctx, info, folder)


@harness.hookimpl
def register_compressions(register):
    register(ShareLayers)


__all__ = ["ShareLayers", "resolve_groups", "tie"]
