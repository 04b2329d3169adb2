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

Sharing saves parameters and bytes, not compute: every position still runs a full layer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import harness
from harness.api import CellContext, LoadedModel, Task, Transform
from harness.errors import PluginError
from harness.toolkit import base_info, cached_load, load_tensors, task_key

from .._lib.layers import check_recovery_epochs, device_reason, encoder_layers, recover, torch_predictor
from .._lib.torch_utils import WEIGHTS_FILE, CompressedTorchPredictor, check_fits, cpu_copy

SPEC_FILE = "share_spec.json"
INITS = ("mean", "first")


def _check_groups(groups: Any) -> list[list[int]]:
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(f"share-layers: groups must be a non-empty list of lists of layer indices, got {groups!r}")
    seen: set[int] = set()
    out = []
    for g in groups:
        if (not isinstance(g, (list, tuple)) or not g
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in g)):
            raise ValueError(f"share-layers: each group must be a non-empty list of layer indices >= 0, got {g!r}")
        if len(set(g)) != len(g) or seen & set(g):
            raise ValueError(f"share-layers: layer indices must appear once across groups, got {groups!r}")
        seen |= set(g)
        out.append(sorted(int(i) for i in g))
    return out


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


def share(layers: Any, groups: list[list[int]], init: str) -> None:
    """Initialise each group's first layer (``mean`` of the group, or itself) and tie the group."""
    import torch

    for g in groups:
        if init == "mean":
            states = [layers[i].state_dict() for i in g]
            mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                        if v.is_floating_point() else v) for k, v in states[0].items()}
            layers[g[0]].load_state_dict(mean)
    tie(layers, groups)


def save_shared(module: Any, prefix: str, groups: list[list[int]], path: Path) -> None:
    """safetensors of ``module``'s state without the repeated layers of each group."""
    from safetensors.torch import save_file

    repeats = tuple(f"{prefix}.{i}." for g in groups for i in g[1:])
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()
             if not k.startswith(repeats)}
    save_file(state, str(path), metadata={"harness_shared_groups": json.dumps(groups)})


class ShareLayers(Transform):
    """Cross-layer weight sharing: groups of encoder layers use one set of weights.

    :param groups: lists of layer indices that share weights, e.g. ``[[0, 1], [2, 3], [4, 5]]``.
    :param every: or: consecutive groups of this many layers (default 2 when no ``groups``).
    :param init: "mean" (element-wise mean of the group's layers) or "first".
    :param recovery_epochs: fine-tune after sharing with the task's recipe (0: none).
    """

    name = "share-layers"
    version = "1"
    description = "cross-layer weight sharing (ALBERT-style): groups of layers run one set of weights"

    def __init__(
        self,
        *,
        groups: list[list[int]] | None = None,
        every: int | None = None,
        init: str = "mean",
        recovery_epochs: float = 0,
    ) -> None:
        super().__init__()
        if groups is not None and every is not None:
            raise ValueError("share-layers: give groups or every, not both")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 2):
            raise ValueError(f"share-layers: every must be an integer >= 2, got {every!r}")
        if init not in INITS:
            raise ValueError(f"share-layers: init must be one of {INITS}, got {init!r}")
        self.groups = None if groups is None else _check_groups(groups)
        self.every = every if groups is not None or every is not None else 2
        if groups is not None:
            self.every = None
        self.init = init
        self.recovery_epochs = check_recovery_epochs("share-layers", recovery_epochs)
        # recovery trains through the task: a task that is not Finetunable gives a skipped cell
        self.requires = ("finetune",) if self.recovery_epochs > 0 else ()

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("share-layers", ctx.device)

    def _compute(self, model: LoadedModel, task: Task, ctx: CellContext) -> tuple[Any, str, list[list[int]], int, str]:
        """(module with shared layers, layer-list name, groups, layer count, recovery note)."""
        module = cpu_copy(model.module).float().eval()
        prefix, layers = encoder_layers(module, "share-layers")
        groups = resolve_groups(self.groups, self.every, len(layers))
        share(layers, groups, self.init)
        note = "no recovery"
        if self.recovery_epochs > 0:
            module, note = recover(model, module, task, ctx, self.recovery_epochs, "share-layers")
            prefix, layers = encoder_layers(module, "share-layers")
            if any(layers[i] is not layers[g[0]] for g in groups for i in g):  # pragma: no cover
                raise PluginError("share-layers: recovery training untied the shared layers")
        return module, prefix, groups, len(layers), note

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
        prefix, layers = encoder_layers(module, "share-layers")
        groups = resolve_groups(self.groups, self.every, len(layers))
        tie(layers, groups)
        return module, prefix, groups, len(layers)

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
        _, layers = encoder_layers(model.module, "share-layers")  # a clear error before any work
        resolve_groups(self.groups, self.every, len(layers))
        extra_key = task_key(task) if self.recovery_epochs > 0 else ""
        folder, meta, hit, (module, spec) = cached_load(
            ctx, model, self, lambda f: self._build(model, task, ctx, f),
            lambda f: self.load(model, f), extra_key=extra_key,
        )
        info = base_info(self, "torch", meta, hit)
        groups = spec["groups"]
        info["share_groups"] = json.dumps(groups)
        info["layers"] = spec["layers"]
        info["distinct_layers"] = spec["layers"] - sum(len(g) - 1 for g in groups)
        info["share_init"] = self.init
        info["recovery"] = meta.get("recovery", "no recovery")
        return torch_predictor(module, model, ctx, info, folder)


@harness.hookimpl
def register_compressions(register):
    register(ShareLayers)


__all__ = ["ShareLayers", "resolve_groups", "share"]
