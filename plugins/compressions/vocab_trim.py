"""The ``vocab-trim`` transform: drop the word-embedding rows of the word pieces that the task's
**train** split never uses, and give the model a tokenizer whose vocabulary is the pieces kept.

What is kept: every id that occurs (at least ``min_count`` times) in the task's training
features, tokenised by the model's own tokenizer exactly as fine-tuning tokenises them
(``train_features`` of ``harness.toolkit.FineTunedTask``, at the model's full input length),
plus every special and added token, the pieces named in ``keep_tokens``, every single-character
piece with ``keep_characters``, and every id up to the largest token id the model's config names
(``pad_token_id``, ...), so those keep their numbers (RoBERTa-style embeddings use the pad id as a
position offset too). The evaluation split is never read: its words would leak into the model.

The kept pieces are renumbered in their old order (``[PAD]`` stays 0), the rows of the input
embedding table are sliced to them (a new ``nn.Embedding``; ``config.vocab_size`` updated) and
the tokenizer is rebuilt with exactly that vocabulary: its ``tokenizer.json`` is edited (the
WordPiece ``model.vocab``, the ids of the added tokens, of the post-processor's special tokens and
of the padding) and loaded back with the tokenizer's own class, so ``model_input_names``,
``model_max_length`` and the special tokens are unchanged. The output is a normal, smaller
transformers model and its tokenizer: later steps (``dynamic-int8``, ONNX Runtime, OpenVINO,
NNCF) take it as it is, and the core evaluates, calibrates and times with the new tokenizer.

Words whose pieces were dropped (WordPiece, greedy longest-match-first): a word whose pieces
were all kept is tokenised exactly as before (the longest match at each position is still in
the vocabulary, and no longer one was added), so its logits are unchanged. Any other word is
segmented again with the pieces kept; where no kept piece matches at some position, the whole
word becomes one ``[UNK]`` (e.g. ``cats`` -> ``[UNK]`` when ``cat`` was kept but ``##s`` was not;
``football`` -> ``foot ##ball`` when only those two pieces were seen). ``keep_characters`` keeps
every single-character piece, so that a new word is spelt in pieces rather than lost.

Only WordPiece tokenizers (BERT, DistilBERT, ELECTRA, MPNet, MiniLM, ...) are supported; a BPE or
Unigram (SentencePiece) tokenizer raises ``harness.errors.Unsupported`` with the reason, and the
cell is ``skipped``: trimming BPE needs its merges (and the pieces they pass through) pruned
consistently, which is not done.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

import harness
from harness.api import CellContext, LoadedModel, Task, Transform
from harness.errors import ParameterError, PluginError, Unsupported
from harness.toolkit import load_tensors
from harness.toolkit.weights import WEIGHTS_FILE

from .._lib.arch import UnsupportedModel
from .._lib.layers import device_reason

#: config fields holding token ids the model's own code may use
CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
TOKENIZER_FILE = "tokenizer.json"


# ---------------------------------------------------------------------------------------------
# which pieces are kept
# ---------------------------------------------------------------------------------------------


def train_counts(task: Task, model: LoadedModel) -> Counter:
    """How often each token id occurs in ``task``'s training features for ``model``."""
    features_fn = getattr(task, "train_features", None)
    if not callable(features_fn):
        raise Unsupported(f"vocab-trim: task {task.name!r} offers no training features (the "
                          "train_features() of harness.toolkit.FineTunedTask); the vocabulary is "
                          "taken from the train split only")
    label2id = {label: i for i, label in enumerate(model.head.labels)}
    features, _ = features_fn(model.tokenizer, label2id, model.max_length)
    if not features:
        raise PluginError(f"vocab-trim: task {task.name!r} has no training examples")
    counts: Counter = Counter()
    for f in features:
        counts.update(int(i) for i in f["input_ids"])
    return counts


def backend_json(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizers`` JSON of a WordPiece fast tokenizer; ``Unsupported`` for any other."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        raise Unsupported(f"vocab-trim: {type(tokenizer).__name__} is not a fast (tokenizers) "
                          "tokenizer; only WordPiece fast tokenizers can be trimmed")
    data: dict[str, Any] = json.loads(backend.to_str())
    kind = data.get("model", {}).get("type")
    if kind != "WordPiece":
        raise Unsupported(f"vocab-trim: the tokenizer's model is {kind} ({type(tokenizer).__name__}); "
                          "only WordPiece vocabularies are trimmed (BPE merges and Unigram scores "
                          "would have to be pruned consistently)")
    return data


def _processor_ids(proc: dict[str, Any] | None) -> list[int]:
    """Token ids a post-processor inserts (``[CLS]``, ``[SEP]``, ...)."""
    if not proc:
        return []
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        return [i for v in proc.get("special_tokens", {}).values() for i in v["ids"]]
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [proc["sep"][1], proc["cls"][1]]
    if kind == "Sequence":
        return [i for p in proc.get("processors", []) for i in _processor_ids(p)]
    if kind == "ByteLevel":
        return []
    raise Unsupported(f"vocab-trim: unknown post-processor {kind!r}: its token ids cannot be renumbered")


def _remap_processor(proc: dict[str, Any] | None, new: dict[int, int]) -> None:
    """Renumber a post-processor's token ids in place (old id -> ``new[old]``)."""
    if not proc:
        return
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for v in proc.get("special_tokens", {}).values():
            v["ids"] = [new[i] for i in v["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], new[proc[key][1]]]
    elif kind == "Sequence":
        for p in proc.get("processors", []):
            _remap_processor(p, new)


def required_ids(data: dict[str, Any], tokenizer: Any) -> set[int]:
    """Ids the tokenizer itself needs: special and added tokens, the post-processor's, padding's."""
    ids = {int(t["id"]) for t in data.get("added_tokens", [])}
    ids |= {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    ids |= set(_processor_ids(data.get("post_processor")))
    if data.get("padding"):
        ids.add(int(data["padding"]["pad_id"]))
    return ids


def config_floor(module: Any, known: set[int]) -> set[int]:
    """The ids up to the largest token id the config (or the embedding's ``padding_idx``) names,
    so that each keeps its number; ``Unsupported`` when one of them is not a vocabulary id."""
    config = getattr(module, "config", None)
    named = [getattr(config, k, None) for k in CONFIG_TOKEN_IDS]
    named.append(module.get_input_embeddings().padding_idx)
    rows = module.get_input_embeddings().num_embeddings
    top = max((int(i) for i in named if isinstance(i, int) and 0 <= i < rows), default=-1)
    floor = set(range(top + 1))
    if floor - known:
        raise Unsupported(f"vocab-trim: config token id {top} cannot keep its number (ids "
                          f"{sorted(floor - known)[:5]} are not in the tokenizer's vocabulary)")
    return floor


def kept_ids(counts: Counter, data: dict[str, Any], tokenizer: Any, module: Any,
             params: Any) -> list[int]:
    """The ids kept, in old-id order (their new ids are their positions)."""
    vocab: dict[str, int] = data["model"]["vocab"]
    known = set(vocab.values()) | {int(t["id"]) for t in data.get("added_tokens", [])}
    keep = {i for i, n in counts.items() if n >= params.min_count}
    keep |= required_ids(data, tokenizer) | config_floor(module, known)
    missing = [t for t in params.keep_tokens if t not in vocab]
    if missing:
        raise ParameterError(f"vocab-trim: keep_tokens {missing[:5]} are not in the tokenizer's "
                             "vocabulary", key="keep_tokens")
    keep |= {vocab[t] for t in params.keep_tokens}
    if params.keep_characters:
        prefix = data["model"].get("continuing_subword_prefix") or "##"
        keep |= {i for p, i in vocab.items() if len(p.removeprefix(prefix)) == 1}
    unknown = sorted(keep - known)
    if unknown:
        raise PluginError(f"vocab-trim: ids {unknown[:5]} are in no vocabulary entry")
    rows = module.get_input_embeddings().num_embeddings
    if max(keep) >= rows:
        raise PluginError(f"vocab-trim: token id {max(keep)} is beyond the {rows}-row embedding table")
    return sorted(keep)


# ---------------------------------------------------------------------------------------------
# the new tokenizer and embedding table
# ---------------------------------------------------------------------------------------------


def trimmed_json(data: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """``data`` (a WordPiece tokenizer's JSON) with only the ``keep`` ids, renumbered by rank."""
    new = {old: i for i, old in enumerate(keep)}
    out = copy.deepcopy(data)
    model = out["model"]
    model["vocab"] = {p: new[i] for p, i in sorted(model["vocab"].items(), key=lambda x: x[1]) if i in new}
    if model.get("unk_token") not in model["vocab"]:
        raise Unsupported(f"vocab-trim: the unknown token {model.get('unk_token')!r} is not in the vocabulary")
    for tok in out.get("added_tokens", []):
        tok["id"] = new[int(tok["id"])]
    _remap_processor(out.get("post_processor"), new)
    if out.get("padding"):
        out["padding"]["pad_id"] = new[int(out["padding"]["pad_id"])]
    return out


def _remap_config(folder: Path, new: dict[int, int]) -> None:
    """Renumber ``added_tokens_decoder`` in the saved tokenizer_config.json, if it has one."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("added_tokens_decoder"), dict):
        cfg["added_tokens_decoder"] = {str(new[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()}
        path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def rebuild_tokenizer(tokenizer: Any, data: dict[str, Any], keep: list[int]) -> Any:
    """A tokenizer of ``tokenizer``'s class whose vocabulary is the ``keep`` ids renumbered:
    saved, its tokenizer.json replaced (and any vocab.txt dropped), loaded back."""
    new = {old: i for i, old in enumerate(keep)}
    with tempfile.TemporaryDirectory(prefix="vocab-trim-") as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(str(folder))
        for stale in folder.glob("vocab.txt"):
            stale.unlink()
        (folder / TOKENIZER_FILE).write_text(json.dumps(trimmed_json(data, keep)), encoding="utf-8")
        _remap_config(folder, new)
        out = type(tokenizer).from_pretrained(str(folder))
    if len(out) != len(keep):
        raise PluginError(f"vocab-trim: the rebuilt tokenizer has {len(out)} ids, expected {len(keep)}")
    return out


def _word_embeddings(module: Any) -> Any:
    import torch

    emb = module.get_input_embeddings()
    if not isinstance(emb, torch.nn.Embedding):
        raise UnsupportedModel(f"vocab-trim: {type(module).__name__}: no nn.Embedding input embeddings")
    out = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is emb.weight:
        raise UnsupportedModel(f"vocab-trim: {type(module).__name__}: the word embeddings are tied "
                               "to an output layer")
    return emb


def set_embeddings(module: Any, rows: int, weight: Any = None) -> Any:
    """Replace ``module``'s input embedding table by one of ``rows`` rows (``weight`` when
    given, else uninitialised) and set ``config.vocab_size``; returns ``module``."""
    import torch

    emb = _word_embeddings(module)
    pad = emb.padding_idx if emb.padding_idx is not None and emb.padding_idx < rows else None
    new = torch.nn.Embedding(rows, emb.embedding_dim, padding_idx=pad, max_norm=emb.max_norm,
                             norm_type=emb.norm_type, scale_grad_by_freq=emb.scale_grad_by_freq,
                             sparse=emb.sparse, device=emb.weight.device, dtype=emb.weight.dtype)
    if weight is not None:
        with torch.no_grad():
            new.weight.copy_(weight)
    module.set_input_embeddings(new)
    if module.get_input_embeddings() is not new:
        raise UnsupportedModel(f"vocab-trim: {type(module).__name__}: set_input_embeddings did not "
                               "replace the table")
    module.config.vocab_size = rows
    return module


def embedding_key(module: Any) -> str:
    """The state-dict key of ``module``'s input embedding weight."""
    emb = _word_embeddings(module)
    return next(f"{n}.weight" for n, m in module.named_modules() if m is emb)


# ---------------------------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------------------------


class VocabTrim(Transform):
    """Vocabulary trimming: the embedding rows (and tokenizer entries) of unused word pieces."""

    name = "vocab-trim"
    version = "1"
    description = "drop the embedding rows of word pieces the task's train split never uses (WordPiece)"

    class Params(harness.Params):
        min_count: int = Field(1, ge=1)
        """Keep a piece seen at least this many times in the train split (specials always)."""
        keep_tokens: list[str] = Field(default_factory=list)
        """Vocabulary pieces kept whatever the data, e.g. ["##s", "##ing"]."""
        keep_characters: bool = False
        """Also keep every single-character piece, so unseen words are spelt, not [UNK]."""

    params: Params
    #: the train split tokenised (a task without it is skipped before any work)
    requires = ("train-features",)

    def unsupported_reason(self, ctx: CellContext) -> str | None:
        return device_reason("vocab-trim", ctx.device)

    def transform(self, model: LoadedModel, task: Task, ctx: CellContext) -> LoadedModel:
        """The model with only the kept embedding rows, and its new tokenizer (see the module
        docstring). ``model.tokenizer`` is left as it is (the fitted model shares it)."""
        data = backend_json(model.tokenizer)  # an unsupported tokenizer: before any work
        module = model.module
        _word_embeddings(module)
        ctx.progress("compress", "vocab-trim: counting the train split's word pieces")
        counts = train_counts(task, model)
        keep = kept_ids(counts, data, model.tokenizer, module, self.params)
        tokenizer = rebuild_tokenizer(model.tokenizer, data, keep)
        before = module.get_input_embeddings().num_embeddings
        index = _index(keep, module.get_input_embeddings().weight.device)
        weight = module.get_input_embeddings().weight.detach()[index].clone()
        total_before = _weights(module)
        set_embeddings(module, len(keep), weight)
        info = {
            "vocab_before": len(model.tokenizer), "vocab_kept": len(keep),
            "embedding_rows_before": before, "train_pieces_seen": len(counts),
            "vocab_min_count": self.params.min_count,
            "params_vs_source": round(_weights(module) / total_before, 6) if total_before else None,
        }
        return dataclasses.replace(model, module=module, tokenizer=tokenizer,
                                   info={**model.info, **info})

    def load_output(self, model: LoadedModel, folder: Path) -> Any:
        """The cached output for the input ``model``: a copy of its module with an embedding
        table of as many rows as the saved one (a tensor shape read from the safetensors file,
        no class named by it), the saved tensors loaded strictly."""
        from safetensors import safe_open

        module = copy.deepcopy(model.module).to("cpu")
        path = Path(folder) / WEIGHTS_FILE
        with safe_open(str(path), framework="pt") as f:
            rows = int(f.get_slice(embedding_key(module)).get_shape()[0])
        return load_tensors(set_embeddings(module, rows), path)


def _index(ids: Iterable[int], device: Any) -> Any:
    import torch

    return torch.tensor(list(ids), dtype=torch.long, device=device)


def _weights(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


@harness.hookimpl
def register_compressions(register):
    register(VocabTrim)


__all__ = ["VocabTrim", "backend_json", "kept_ids", "rebuild_tokenizer", "set_embeddings", "trimmed_json"]
