"""Weights on disk as data: safetensors files written from a module and loaded back into a
module whose structure the caller built. Nothing here unpickles or names a class: the loader
fills tensors into the caller's structure, strictly (docs/reliability.md, "Trust model of a
shared cache")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["WEIGHTS_FILE", "load_into_copy", "load_tensors", "save_module"]

WEIGHTS_FILE = "model.safetensors"


def save_module(module: Any, folder: Path) -> None:
    """``Transform.save_output``'s default: the module's unique tensors (``safetensors.torch.
    save_model`` stores a tensor shared by several layers once) + its config.json (for people:
    nothing reads it back)."""
    from safetensors.torch import save_model

    save_model(module, str(Path(folder) / WEIGHTS_FILE))
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_json_file"):
        # what save_pretrained records, taken from the module itself, so that the file has the
        # same bytes whatever saved or loaded this config object before (a module trained here
        # and the same module rebuilt from the cache: harness.replay compares artifact hashes)
        config.architectures = [type(module).__name__]
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            config.dtype = dtype
        config.to_json_file(str(Path(folder) / "config.json"))


def load_tensors(module: Any, path: Path) -> Any:
    """Load a safetensors file into ``module`` (already in the saved structure), strictly: every
    tensor of the file is one of the module's, with its shape, and every tensor of the module is
    in the file or shares its storage with one that is (tied weights). Floating tensors take the
    file's dtype when the file has one. Raises ``ValueError`` (or the loader's error) otherwise."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    floats = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(floats) == 1:
        module.to(next(iter(floats)))
    missing, unexpected = module.load_state_dict(state, strict=False)  # shapes are checked
    own = module.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    return module


def load_into_copy(module: Any, folder: Path) -> Any:
    """``Transform.load_output``'s default (the output has the input's structure): a copy of
    ``module`` on the CPU with the tensors of :func:`save_module`'s file in ``folder`` loaded
    into it strictly."""
    import copy

    return load_tensors(copy.deepcopy(module).to("cpu"), Path(folder) / WEIGHTS_FILE)
