"""The public toolkit for plugin authors: what the built-in plugins are made of.

Importing it is cheap: torch and transformers are imported inside the functions that use them.

Running a model (``harness.toolkit.predictor``)
    ``TorchPredictor`` (a transformers module on eager PyTorch), ``pad_batch`` (dynamic
    padding), ``input_names``, ``count_parameters``.
Caching and measuring artifacts (``harness.toolkit.artifacts``)
    ``cached_or_build`` (the atomic compressed-artifact cache), ``cached_load`` (the same, with
    the artifact loaded, a corrupt entry rebuilt; ``CorruptCacheEntry``), ``cache_key``, ``cache_dir``,
    ``task_key``, ``plugin_params``, ``module_fingerprint``, ``copy_artifact``, ``base_info``
    (the ``describe()`` columns every compression reports), ``dir_bytes`` (how sizes are
    measured), ``hash_text``, ``sha256_files``, ``missing_packages_reason``.
Weights as data (``harness.toolkit.weights``)
    ``save_module`` (unique tensors as safetensors + config.json), ``load_tensors`` (a
    safetensors file into a module the caller built, strictly: what a cache hit reads).
Features shared across cells (``harness.toolkit.features``)
    ``cached_json`` (a JSON cache of what a task derives from its data, e.g. subword ids),
    ``tokenizer_fingerprint`` (a tokenizer named by what it does), ``cached_tokens`` (the two
    together: a task's tokenised data keyed by tokenizer and examples).
Fine-tuning (``harness.toolkit.recipe``, ``.finetune``, ``.tasks``)
    ``Recipe`` (the recipe, declared once), ``finetune`` (the cached training loop),
    ``FineTunedTask`` (the base of the built-in tasks),
    ``EvalSetup``, ``model_eval_length``.
"""

from __future__ import annotations

from .artifacts import (
    CorruptCacheEntry,
    base_info,
    cache_dir,
    cache_key,
    cached_load,
    cached_or_build,
    copy_artifact,
    dir_bytes,
    hash_text,
    missing_packages_reason,
    module_fingerprint,
    plugin_params,
    sha256_files,
    task_key,
)
from .features import FEATURES_VERSION, cached_json, cached_tokens, tokenizer_fingerprint
from .finetune import FINETUNE_VERSION, finetune, finetune_key
from .predictor import TorchPredictor, count_parameters, input_names, pad_batch
from .recipe import MIXED_PRECISION, Recipe, RecipeParams, effective_precision, model_eval_length
from .tasks import EvalSetup, FineTunedTask
from .weights import load_tensors, save_module

__all__ = [
    "FEATURES_VERSION",
    "FINETUNE_VERSION",
    "CorruptCacheEntry",
    "MIXED_PRECISION",
    "EvalSetup",
    "FineTunedTask",
    "Recipe",
    "RecipeParams",
    "TorchPredictor",
    "base_info",
    "cache_dir",
    "cache_key",
    "cached_load",
    "cached_json",
    "cached_tokens",
    "cached_or_build",
    "copy_artifact",
    "count_parameters",
    "dir_bytes",
    "effective_precision",
    "finetune",
    "finetune_key",
    "hash_text",
    "input_names",
    "load_tensors",
    "missing_packages_reason",
    "model_eval_length",
    "module_fingerprint",
    "pad_batch",
    "plugin_params",
    "save_module",
    "sha256_files",
    "task_key",
    "tokenizer_fingerprint",
]
