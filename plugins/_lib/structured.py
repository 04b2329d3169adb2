"""Structured shrinking of a discovered encoder (:mod:`.arch`): attention heads and feed-forward
neurons scored by weight magnitude and removed by physically narrower Linears. Used by
``prune`` (``method: heads`` / ``ffn``) and ``distill`` (``intermediate_size``).

Heads: a head's score is the L2 norm of its query/key/value rows and attention-output columns.
The head size is the config's (``attention_head_size``, else ``hidden_size`` over
``num_attention_heads``: transformers maps each family's own names to these, e.g. DistilBERT's
``dim``/``n_heads``); the heads a block has now are its query width over it. Removing heads
shrinks the query/key/value rows, every other Linear beside them writing the same width
(DeBERTa's relative-position projections) and the attention-output columns, and updates the
block's integer attributes named like ``*head*`` that hold the head count or the total head
width (``num_attention_heads``, ``n_heads``, ``all_head_size``). A per-head table outside the
stack (an ``nn.Embedding`` whose width is the head count, MPNet's relative-position bias shared
by every layer) makes the same heads go in every block, and loses those columns too.

FFN: a neuron's score is ``|W_in row| * |W_out column|``; ``ffn_in`` loses rows and ``ffn_out``
columns. A gated feed-forward (``ffn_in`` twice as wide as ``ffn_out`` reads) or a fused qkv
projection is ``UnsupportedModel``. torch is imported lazily.
"""

from __future__ import annotations

from typing import Any

from .arch import Structure, UnsupportedModel, linear, set_sub


def shrink_linear(lin: Any, keep: Any, dim: int) -> Any:
    """A new Linear keeping ``keep`` indices of its output (dim 0) or input (dim 1) features."""
    import torch

    w = lin.weight.detach().index_select(dim, keep).clone()
    out_f, in_f = w.shape
    new = torch.nn.Linear(in_f, out_f, bias=lin.bias is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, keep))
    new.train(lin.training)
    return new


def _unsupported(plugin: str, module: Any, what: str) -> UnsupportedModel:
    return UnsupportedModel(f"{plugin}: {type(module).__name__}: {what}")


def head_size(module: Any, structure: Structure, plugin: str) -> int:
    """The size of one attention head (see the module docstring)."""
    if "query" not in structure.blocks[0].linears:
        raise _unsupported(plugin, module, "a fused qkv projection (the head layout inside it is unknown)")
    config = getattr(module, "config", None)
    d = getattr(config, "attention_head_size", None)
    if not isinstance(d, int):
        n, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
        if not isinstance(n, int) or not isinstance(hidden, int) or n < 1 or hidden % n:
            raise _unsupported(plugin, module, "no num_attention_heads / hidden_size in its config")
        d = hidden // n
    widths = {linear(module, structure, b.index, "query").out_features for b in structure.blocks}
    if any(w % d for w in widths):
        raise _unsupported(plugin, module, f"query widths {sorted(widths)} are not whole heads of {d}")
    return d


def head_scores(module: Any, structure: Structure, index: int, d: int) -> Any:
    """Magnitude score of every head of block ``index``: L2 norm of its q/k/v rows and
    attention-output columns."""
    import torch

    h = linear(module, structure, index, "query").out_features // d
    s = torch.zeros(h)
    for role in ("query", "key", "value"):
        s += linear(module, structure, index, role).weight.detach().float().view(h, d, -1).pow(2).sum(dim=(1, 2))
    out = linear(module, structure, index, "attn_out").weight.detach().float()
    s += out.view(-1, h, d).pow(2).sum(dim=(0, 2))
    return s.sqrt()


def ffn_scores(module: Any, structure: Structure, index: int) -> Any:
    """``|W_in row| * |W_out column|`` of every feed-forward neuron of block ``index``."""
    w_in = linear(module, structure, index, "ffn_in").weight.detach().float()  # (inter, hidden)
    w_out = linear(module, structure, index, "ffn_out").weight.detach().float()  # (hidden, inter)
    if w_in.shape[0] != w_out.shape[1]:
        raise UnsupportedModel(f"a gated feed-forward ({w_in.shape[0]} -> {w_out.shape[1]}): its neurons "
                               "are not one row of ffn_in each")
    return w_in.norm(dim=1) * w_out.norm(dim=0)


def head_tables(module: Any, structure: Structure, heads: int) -> list[str]:
    """Names of the per-head tables outside the stack: ``nn.Embedding``s ``heads`` wide (not the
    word embeddings)."""
    import torch

    inside = structure.stack_path + "."
    return [n for n, m in module.named_modules()
            if isinstance(m, torch.nn.Embedding) and m.embedding_dim == heads and n != structure.word_embeddings_path
            and not n.startswith(inside)]


def _kept(scores: Any, sparsity: float) -> list[int]:
    import torch

    n = scores.numel()
    drop = min(round(sparsity * n), n - 1)  # keep at least one head/neuron
    return torch.argsort(scores, descending=True)[: n - drop].sort().values.tolist()


def structured_spec(module: Any, structure: Structure, method: str, sparsity: float,
                    plugin: str = "prune") -> dict[str, list[int]]:
    """{block path: kept head (or neuron) indices}, the same count removed in every block (each
    tied block once); the same heads in every block when a per-head table is shared by all."""
    blocks = [b for b in structure.blocks if b.same_as is None]
    if method == "ffn":
        return {b.path: _kept(ffn_scores(module, structure, b.index), sparsity) for b in blocks}
    d = head_size(module, structure, plugin)
    scores = {b.path: head_scores(module, structure, b.index, d) for b in blocks}
    if head_tables(module, structure, next(iter(scores.values())).numel()):
        if len({s.numel() for s in scores.values()}) != 1:
            raise _unsupported(plugin, module, "blocks with different head counts share a per-head table")
        keep = _kept(sum(scores.values()), sparsity)
        return dict.fromkeys(scores, keep)
    return {path: _kept(s, sparsity) for path, s in scores.items()}


def _set_head_attrs(mod: Any, old: dict[int, int], d: int) -> None:
    """Integer attributes named like ``*head*`` holding a count (or width) in ``old``: updated."""
    for name, value in vars(mod).items():
        if type(value) is int and "head" in name.lower() and value in old:
            if value == d and name.lower().endswith(("size", "dim")):
                continue  # the size of one head (equal to the head count by chance)
            setattr(mod, name, old[value])


def _prune_heads(module: Any, structure: Structure, index: int, kept: list[int], d: int) -> None:
    import torch

    block = structure.blocks[index]
    q = linear(module, structure, index, "query")
    n = q.out_features // d
    idx = torch.tensor([h * d + i for h in kept for i in range(d)], dtype=torch.long)
    parent = block.linears["query"].rpartition(".")[0]
    beside = [o for o in block.others if o.rpartition(".")[0] == parent
              and module.get_submodule(f"{block.path}.{o}").out_features == n * d]
    for sub in [block.linears[r] for r in ("query", "key", "value")] + beside:
        set_sub(module, f"{block.path}.{sub}", shrink_linear(module.get_submodule(f"{block.path}.{sub}"), idx, 0))
    out = f"{block.path}.{block.linears['attn_out']}"
    set_sub(module, out, shrink_linear(module.get_submodule(out), idx, 1))
    for mod in module.get_submodule(block.path).modules():
        _set_head_attrs(mod, {n: len(kept), n * d: len(kept) * d}, d)


def _prune_tables(module: Any, structure: Structure, kept: list[int]) -> None:
    import torch

    for name in head_tables(module, structure, structure_heads(module, structure)):
        emb = module.get_submodule(name)
        new = torch.nn.Embedding(emb.num_embeddings, len(kept), padding_idx=emb.padding_idx,
                                 dtype=emb.weight.dtype, device=emb.weight.device)
        with torch.no_grad():
            new.weight.copy_(emb.weight.detach()[:, kept])
        set_sub(module, name, new)
        owner = module.get_submodule(name.rpartition(".")[0])
        _set_head_attrs(owner, {emb.embedding_dim: len(kept)}, -1)


def structure_heads(module: Any, structure: Structure) -> int:
    """The heads of the first block now (its query width over the head size)."""
    return linear(module, structure, 0, "query").out_features // head_size(module, structure, "prune")


def apply_structured(module: Any, structure: Structure, method: str, spec: dict[str, list[int]]) -> None:
    """Shrink the blocks of ``module`` in place to the kept heads/neurons of ``spec`` (keyed by
    block path, as :func:`structured_spec` makes it)."""
    import torch

    index = {b.path: b.index for b in structure.blocks}
    if method == "heads":
        d = head_size(module, structure, "prune")
        if spec and head_tables(module, structure, structure_heads(module, structure)):
            _prune_tables(module, structure, next(iter(spec.values())))
        for path, kept in spec.items():
            _prune_heads(module, structure, index[path], kept, d)
        return
    for path, kept in spec.items():
        b = structure.blocks[index[path]]
        idx = torch.tensor(kept, dtype=torch.long)
        for role, dim in (("ffn_in", 0), ("ffn_out", 1)):
            name = f"{b.path}.{b.linears[role]}"
            set_sub(module, name, shrink_linear(module.get_submodule(name), idx, dim))


def intermediate_field(config: Any, size: int) -> str | None:
    """The config field holding the feed-forward width ``size``: the one integer field of that
    value, else the first such whose name says so (``intermediate_size``, DistilBERT's
    ``hidden_dim``); None when none does."""
    fields = [k for k, v in config.to_dict().items() if type(v) is int and v == size]
    if len(fields) == 1:
        return fields[0]
    hints = ("intermediate", "ffn", "inner", "hidden_dim", "d_ff")
    return next((k for k in fields if any(h in k.lower() for h in hints)), None)


__all__ = ["apply_structured", "ffn_scores", "head_scores", "intermediate_field", "shrink_linear",
           "structured_spec"]
