"""The structure of a transformers encoder, found from its module tree, shapes and one probe
forward pass rather than assumed from one family's attribute names.

``discover(module)`` returns a ``Structure``: the stack of repeated transformer blocks (the
longest ``nn.ModuleList`` of structurally identical blocks that hold ``nn.Linear`` layers; on a
tie the deepest), each block's Linear layers by role, the word embeddings and the
embedding -> hidden projection, and the config field that holds the layer count. It works on
BERT, RoBERTa, ELECTRA, MPNet, DeBERTa-v2, DistilBERT and ALBERT with no per-family table.

How the roles are found, inside one block (``H`` = the most common ``in_features`` there):

- the *attention sub-module* is the child holding the most Linears that read ``H`` (at least two;
  single-child wrappers are descended first); with none, the Linears ``H -> H`` (or ``H -> 3H``)
  are the attention's. Every other Linear of the block belongs to the feed-forward part.
- ``qkv``: an attention Linear ``H -> 3H`` (a fused projection); otherwise ``query``, ``key``,
  ``value`` are the first three attention Linears reading ``H`` in registration order. Name
  fragments are only a tie-breaker: when the last name parts single out one Linear per role
  (``q``/``query``/``q_lin``/``q_proj``/``query_proj``, likewise for k and v) those are used.
- ``attn_out``: the last attention Linear ``H -> H`` that is none of the above.
- ``ffn_in``: the feed-forward Linear reading ``H`` with the widest output; ``ffn_out``: another
  feed-forward Linear writing ``H``, preferring one that reads ``ffn_in``'s width.
Linears with no role (DeBERTa's ``pos_key_proj``/``pos_query_proj``) are listed in ``others``.

How often each block runs is counted by forward hooks during one no-grad pass on a few token
ids: ALBERT's single layer runs ``num_hidden_layers`` times (``applied_times``), and positions
that hold the same module object (after ``share_blocks``) are ``tied``. The layer-count field is
the integer config field equal to the number of block applications (fields named like
``*layer*`` first). torch is imported lazily.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import Unsupported

ROLES = ("query", "key", "value", "qkv", "attn_out", "ffn_in", "ffn_out")
#: last name parts that hint a role; used only to order Linears the shapes cannot tell apart
HINTS = {
    "query": ("q", "query", "q_lin", "q_proj", "query_proj", "wq"),
    "key": ("k", "key", "k_lin", "k_proj", "key_proj", "wk"),
    "value": ("v", "value", "v_lin", "v_proj", "value_proj", "wv"),
}
PROBE_TOKENS = 8


class UnsupportedModel(Unsupported):
    """The module lacks a structure a method needs; the message names what was not found. A
    ``harness.errors.Unsupported``: the core records the cell ``skipped`` with it."""


@dataclass(frozen=True)
class Block:
    """One position of the stack. ``linears``: role -> dotted name relative to the block."""

    index: int
    path: str
    linears: Mapping[str, str] = field(hash=False)
    others: tuple[str, ...] = ()
    same_as: int | None = None  # the first position holding the same module object, if tied


@dataclass(frozen=True)
class Structure:
    stack_path: str
    blocks: tuple[Block, ...]
    shared: bool  # a block's weights run at more than one depth (ALBERT, or tied positions)
    applied_times: int  # how many times each position runs per forward (ALBERT: num_hidden_layers)
    layer_count_field: str
    layer_count: int  # the field's value: len(blocks) * applied_times
    hidden_size: int
    intermediate_size: int  # ffn_out's input width (ffn_in's output is twice it in a gated FFN)
    word_embeddings_path: str
    embedding_projection_path: str | None  # embedding size -> hidden (ALBERT, ELECTRA-small)

    @property
    def tied(self) -> list[list[int]]:
        """Groups of positions holding one module object (``share_blocks``), each sorted."""
        groups: dict[int, list[int]] = {}
        for b in self.blocks:
            groups.setdefault(b.index if b.same_as is None else b.same_as, []).append(b.index)
        return [g for g in groups.values() if len(g) > 1]

    def linear_paths(self, roles: Sequence[str] | None = None) -> list[str]:
        """Full dotted names of the blocks' role Linears (``roles``: all when None), each tied
        module once."""
        return [f"{b.path}.{name}" for b in self.blocks if b.same_as is None
                for role, name in b.linears.items() if roles is None or role in roles]


def _fail(plugin: str, module: Any, what: str) -> UnsupportedModel:
    prefix = f"{plugin}: " if plugin else ""
    return UnsupportedModel(f"{prefix}{type(module).__name__}: {what}")


def set_sub(root: Any, dotted: str, value: Any) -> None:
    parent, _, last = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, value)


def _linears(mod: Any) -> list[tuple[str, Any]]:
    import torch

    return [(n, m) for n, m in mod.named_modules() if isinstance(m, torch.nn.Linear)]


def _signature(mod: Any) -> tuple:
    """What makes blocks "structurally identical": their Linears' names and shapes (norms may
    differ, e.g. ModernBERT's first layer has no attention norm)."""
    return tuple((n, m.in_features, m.out_features) for n, m in _linears(mod))


def find_stack(module: Any, plugin: str = "") -> tuple[str, Any]:
    """``(dotted path, ModuleList)`` of the repeated blocks: the longest ModuleList of structurally
    identical modules holding Linears, the deepest on a tie."""
    import torch

    best: tuple[int, int, str, Any] | None = None
    for name, mod in module.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or not len(mod) or not _linears(mod[0]):
            continue
        if len({_signature(b) for b in mod}) != 1:
            continue
        key = (len(mod), name.count(".") + bool(name), name, mod)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise _fail(plugin, module, "no stack of repeated transformer blocks (a ModuleList of identical "
                                    "modules with Linear layers) found")
    return best[2], best[3]


def _core(block: Any) -> tuple[str, Any]:
    """Descend through single children that hold all of the block's Linears."""
    prefix, mod, total = "", block, len(_linears(block))
    while True:
        holders = [(n, c) for n, c in mod.named_children() if _linears(c)]
        if len(holders) != 1 or len(_linears(holders[0][1])) != total or not list(holders[0][1].children()):
            return prefix, mod
        prefix, mod = f"{prefix}{holders[0][0]}.", holders[0][1]


def _split(core: Any, hidden: int) -> tuple[list, list]:
    """(attention Linears, feed-forward Linears) of a block core, each in registration order."""
    counts = [(sum(lin.in_features == hidden for _, lin in _linears(c)), n) for n, c in core.named_children()]
    best = max(counts, default=(0, ""))
    if best[0] >= 2:
        att = [(f"{best[1]}.{n}", m) for n, m in _linears(core.get_submodule(best[1]))]
    else:
        att = [(n, m) for n, m in _linears(core)
               if m.in_features == hidden and m.out_features in (hidden, 3 * hidden)]
    names = {n for n, _ in att}
    return att, [(n, m) for n, m in _linears(core) if n not in names]


def _hinted(cands: list[tuple[str, Any]]) -> list[str] | None:
    """[query, key, value] names when the name hints single out exactly one each."""
    out = []
    for role in ("query", "key", "value"):
        hits = [n for n, _ in cands if n.rpartition(".")[2].lower() in HINTS[role]]
        if len(hits) != 1:
            return None
        out.append(hits[0])
    return out


def _attention_roles(att: list, hidden: int) -> dict[str, str]:
    reading = [(n, m) for n, m in att if m.in_features == hidden]
    fused = [n for n, m in reading if m.out_features == 3 * hidden]
    if fused:
        roles = {"qkv": fused[0]}
    else:
        qkv = _hinted(reading) or [n for n, _ in reading[:3]]
        if len(qkv) < 3:
            return {}
        roles = dict(zip(("query", "key", "value"), qkv))
    taken = set(roles.values())
    outs = [n for n, m in att if n not in taken and m.out_features == hidden]
    if outs:
        roles["attn_out"] = outs[-1]
    return roles


def _ffn_roles(ffn: list, hidden: int) -> dict[str, str]:
    ins = [(m.out_features, -i, n) for i, (n, m) in enumerate(ffn) if m.in_features == hidden]
    if not ins:
        return {}
    width, _, ffn_in = max(ins)
    outs = [(m.in_features == width, i, n) for i, (n, m) in enumerate(ffn)
            if m.out_features == hidden and n != ffn_in]
    return {"ffn_in": ffn_in, "ffn_out": max(outs)[2]} if outs else {"ffn_in": ffn_in}


def block_roles(block: Any) -> tuple[dict[str, str], tuple[str, ...], int]:
    """``(role -> dotted name, names of Linears with no role, hidden size)`` of one block."""
    hidden = Counter(m.in_features for _, m in _linears(block)).most_common(1)[0][0]
    prefix, core = _core(block)
    att, ffn = _split(core, hidden)
    roles = {r: prefix + n for r, n in {**_attention_roles(att, hidden), **_ffn_roles(ffn, hidden)}.items()}
    named = set(roles.values())
    others = tuple(n for n, _ in _linears(block) if n not in named)
    return roles, others, hidden


def _probe(module: Any, stack: Any) -> Counter:
    """Calls per module object of ``stack`` during one no-grad forward pass on a few token ids."""
    import torch

    calls: Counter = Counter()
    uniq = {id(b): b for b in stack}
    handles = [b.register_forward_hook(lambda m, a, o, k=k: calls.update([k])) for k, b in uniq.items()]
    modes = [(m, m.training) for m in module.modules()]
    emb = module.get_input_embeddings()
    ids = torch.arange(PROBE_TOKENS, device=emb.weight.device).unsqueeze(0) % emb.num_embeddings
    inputs = {"input_ids": ids}
    if "attention_mask" in inspect.signature(module.forward).parameters:
        inputs["attention_mask"] = torch.ones_like(ids)
    try:
        module.eval()
        with torch.no_grad():
            module(**inputs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return calls


def _applied_times(module: Any, stack: Any, plugin: str) -> int:
    try:
        calls = _probe(module, stack)
    except Exception as e:  # a foreign forward: any failure is the model's
        raise _fail(plugin, module, f"a probe forward pass on input_ids failed ({type(e).__name__}: {e})") from e
    places = Counter(id(b) for b in stack)
    per_place = {calls[k] / n for k, n in places.items()}
    if len(per_place) != 1 or not next(iter(per_place)).is_integer() or 0 in per_place:
        raise _fail(plugin, module, "its stack's blocks do not each run the same whole number of times")
    return int(per_place.pop())


def layer_count_field(config: Any, count: int) -> str | None:
    """The integer config field equal to ``count`` (the block applications), fields named like
    ``*layer*`` first (``num_hidden_layers`` before others); None when none or several others."""
    fields = [k for k, v in config.to_dict().items() if type(v) is int and v == count]
    named = [k for k in fields if "layer" in k.lower()]
    if "num_hidden_layers" in named:
        return "num_hidden_layers"
    if named:
        return named[0]
    return fields[0] if len(fields) == 1 else None


def _projection(module: Any, stack_path: str, emb_dim: int, hidden: int) -> str | None:
    if emb_dim == hidden:
        return None
    return next((n for n, m in _linears(module) if not n.startswith(stack_path + ".")
                 and m.in_features == emb_dim and m.out_features == hidden), None)


def _embeddings(module: Any, plugin: str) -> tuple[str, Any]:
    import torch

    try:
        emb = module.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    path = (next((n for n, m in module.named_modules() if m is emb), None)
            if isinstance(emb, torch.nn.Embedding) else None)
    if path is None:
        raise _fail(plugin, module, "no nn.Embedding word-embedding table (get_input_embeddings)")
    return path, emb


def _blocks(module: Any, stack_path: str, stack: Any, plugin: str) -> tuple[list[Block], int]:
    first: dict[int, int] = {}
    blocks = []
    roles, others, hidden = block_roles(stack[0])
    missing = [r for r in ("attn_out", "ffn_in", "ffn_out") if r not in roles]
    if "qkv" not in roles and "query" not in roles:
        missing.insert(0, "query/key/value")
    if missing:
        raise _fail(plugin, module, f"no {', '.join(missing)} Linear found in the blocks of {stack_path}")
    for i, b in enumerate(stack):
        same = first.setdefault(id(b), i)
        blocks.append(Block(i, f"{stack_path}.{i}", dict(roles), others, None if same == i else same))
    return blocks, hidden


def discover(module: Any, plugin: str = "") -> Structure:
    """The ``Structure`` of ``module`` (a transformers encoder with a classification head).

    Raises ``UnsupportedModel`` (prefixed with ``plugin``) naming what was not found."""
    stack_path, stack = find_stack(module, plugin)
    blocks, hidden = _blocks(module, stack_path, stack, plugin)
    emb_path, emb = _embeddings(module, plugin)
    times = _applied_times(module, stack, plugin)
    config = getattr(module, "config", None)
    count = len(stack) * times
    name = layer_count_field(config, count) if config is not None else None
    if name is None:
        raise _fail(plugin, module, f"no single integer config field equals its {count} block applications")
    ffn_out = stack[0].get_submodule(blocks[0].linears["ffn_out"])
    return Structure(
        stack_path=stack_path, blocks=tuple(blocks), shared=times > 1 or any(b.same_as is not None for b in blocks),
        applied_times=times, layer_count_field=name, layer_count=count, hidden_size=hidden,
        intermediate_size=ffn_out.in_features, word_embeddings_path=emb_path,
        embedding_projection_path=_projection(module, stack_path, emb.embedding_dim, hidden),
    )


def linear(module: Any, structure: Structure, index: int, role: str) -> Any:
    """The ``nn.Linear`` of ``role`` in block ``index``; ``KeyError`` for a role the block lacks."""
    block = structure.blocks[index]
    return module.get_submodule(f"{block.path}.{block.linears[role]}")


def set_layer_count(config: Any, structure: Structure, keep: Sequence[int]) -> Any:
    """Update ``config`` in place for keeping the block applications ``keep`` (sorted indices):
    the layer-count field, and per-layer lists (config fields named like ``*layer*`` whose length
    is the old count, e.g. ``layer_types``) subset to ``keep``. Returns ``config``."""
    for k, v in config.to_dict().items():
        if "layer" in k.lower() and isinstance(v, list) and len(v) == structure.layer_count:
            setattr(config, k, [v[i] for i in keep])
    setattr(config, structure.layer_count_field, len(keep))
    return config


def _renumber(block: Any, old: int, new: int) -> None:
    """Per-layer indices the kept block carries (``layer_idx``), as a rebuilt model numbers them."""
    for m in block.modules():
        if getattr(m, "layer_idx", None) == old:
            m.layer_idx = new


def keep_blocks(module: Any, structure: Structure, keep: Sequence[int], plugin: str = "") -> Structure:
    """Keep only the blocks ``keep`` (in place; copy the module first to keep the original) and
    update ``module.config`` so that ``save_pretrained``/``from_config`` rebuild the same
    structure. On a stack of one block applied N times (ALBERT) ``keep`` indexes the N
    applications and only the config changes. Returns the new ``Structure``."""
    import torch

    keep = sorted(set(keep))
    if not keep or keep[0] < 0 or keep[-1] >= structure.layer_count:
        raise ValueError(f"{plugin or 'keep_blocks'}: keep must name some of 0..{structure.layer_count - 1}, "
                         f"got {keep!r}")
    if structure.applied_times > 1 and len(structure.blocks) > 1:
        raise _fail(plugin, module, "dropping layers from several blocks each applied several times")
    if structure.applied_times == 1:
        stack = module.get_submodule(structure.stack_path)
        for new, old in enumerate(keep):
            _renumber(stack[old], old, new)
        set_sub(module, structure.stack_path, torch.nn.ModuleList([stack[i] for i in keep]))
    set_layer_count(module.config, structure, keep)
    return discover(module, plugin)


def check_unshared(module: Any, structure: Structure, plugin: str = "") -> None:
    """``UnsupportedModel`` when the stack's weights already run at several depths."""
    if structure.shared:
        where = (f"one block applied {structure.applied_times} times" if structure.applied_times > 1
                 else f"tied blocks {structure.tied}")
        raise _fail(plugin, module, f"its layers are already shared ({structure.stack_path}: {where})")


def _mean_into(blocks: list[Any]) -> None:
    import torch

    states = [b.state_dict() for b in blocks]
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point() else v) for k, v in states[0].items()}
    blocks[0].load_state_dict(mean)


def share_blocks(module: Any, structure: Structure, groups: Sequence[Sequence[int]],
                 init: str = "first", plugin: str = "") -> Structure:
    """Make the blocks of each group one module object (in place): the group's first block, or
    (``init="mean"``) the first holding the element-wise mean of the group. The config is
    unchanged (same layer count; a rebuild from it is untied). Raises ``UnsupportedModel`` when
    the stack is already shared (ALBERT runs one layer N times). Returns the new ``Structure``."""
    check_unshared(module, structure, plugin)
    flat = [i for g in groups for i in g]
    if len(set(flat)) != len(flat) or any(not 0 <= i < len(structure.blocks) for i in flat):
        raise ValueError(f"{plugin or 'share_blocks'}: groups must name distinct blocks of "
                         f"0..{len(structure.blocks) - 1}, got {groups!r}")
    if init not in ("first", "mean"):
        raise ValueError(f"{plugin or 'share_blocks'}: init must be 'first' or 'mean', got {init!r}")
    stack = module.get_submodule(structure.stack_path)
    for g in (list(g) for g in groups if len(g) > 1):
        if init == "mean":
            _mean_into([stack[i] for i in g])
        for i in g[1:]:
            stack[i] = stack[g[0]]
    return discover(module, plugin)
