"""Intermediate-layer ("layer-wise") distillation terms, as MiniLM and TinyBERT add them to the
logit loss: the student's layer ``j`` is taught by the teacher's layer ``keep[j]`` (the layer it
was initialised from), on

- ``hidden``: the mean squared error between the two layers' output hidden states (position
  ``j + 1`` and ``keep[j] + 1`` of ``output_hidden_states``, whose first entry is the
  embeddings), over the hidden size and the non-padding tokens;
- ``attention``: ``KL(teacher || student)`` of their attention distributions
  (``output_attentions``) over the non-padding key positions, averaged over heads and
  non-padding query tokens;

each averaged over the mapped layers; ``both`` adds the two. Widths are equal (the student is a
copy of the teacher; a narrower FFN leaves the hidden size as it is), so no projection is
learnt. Nothing here names an architecture's attributes: hidden states and attentions are what
every transformers encoder returns, and the attention modules are found by
``plugins/_lib/arch.py``.

Hidden states are too big to cache, so the teacher runs on every training batch:
:func:`layer_teacher` returns a module holding a frozen copy of it (moved with the student,
always in eval mode) whose ``step`` computes the whole loss. Attentions need the eager
attention implementation (SDPA returns none): teacher copy and student run eager while training,
and :meth:`release` gives the student its own implementation back. Attention dropout is applied
to the probabilities that models return, so in the attention modes the student's attention
modules (those holding query/key/value) train without dropout. torch is imported lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from harness.errors import PluginError

from .arch import discover
from .torch_utils import cpu_copy

MODES = ("none", "hidden", "attention", "both")
#: the smallest student probability a log is taken of (a masked or underflowed entry)
EPS = 1e-12


def hidden_loss(student: Sequence[Any], teacher: Sequence[Any], mask: Any) -> Any:
    """Mean over layer pairs of the MSE between ``student[i]`` and ``teacher[i]`` (B, S, H),
    averaged over the hidden size and the tokens where ``mask`` (B, S) is nonzero."""
    import torch

    m = mask.to(student[0].device, torch.float32).unsqueeze(-1)
    n = m.sum().clamp_min(1.0)
    terms = [((s.float() - t.float()) ** 2).mean(-1, keepdim=True).mul(m).sum() / n
             for s, t in zip(student, teacher, strict=True)]
    return sum(terms) / len(terms)


def attention_loss(student: Sequence[Any], teacher: Sequence[Any], mask: Any) -> Any:
    """Mean over layer pairs of ``KL(teacher || student)`` of attention distributions
    (B, heads, S, S), summed over the key positions where ``mask`` (B, S) is nonzero and
    averaged over heads and the query positions where it is nonzero."""
    import torch

    keys = mask.to(student[0].device).bool()[:, None, None, :]
    queries = mask.to(student[0].device, torch.float32)[:, None, :]
    terms = []
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float()
        kl = torch.where(keys, torch.xlogy(t, t) - t * torch.log(s.clamp_min(EPS)), 0.0).sum(-1)
        terms.append((kl * queries).sum() / (queries.sum() * s.shape[1]).clamp_min(1.0))
    return sum(terms) / len(terms)


def _mapped(states: Any, count: int, offset: int, what: str, layers: Sequence[int]) -> list[Any]:
    """``states[offset + i]`` for ``i`` in ``layers``, after checking that the model returned
    ``count + offset`` of them (one per layer application, plus the embeddings for hidden states)."""
    if not states or len(states) != count + offset or any(s is None for s in states):
        got = 0 if not states else len(states)
        raise PluginError(f"distill: layer_loss needs {what} of every layer ({count + offset} expected): "
                          f"this model returned {got}")
    return [states[offset + i] for i in layers]


def layer_term(student_out: Any, teacher_out: Any, keep: Sequence[int], teacher_layers: int,
               mode: str, mask: Any) -> Any:
    """The layer term of ``mode`` ("hidden", "attention" or "both") from two model outputs run
    with ``output_hidden_states`` / ``output_attentions``: student layer ``j`` against teacher
    layer ``keep[j]``."""
    mine = range(len(keep))
    total = 0.0
    if mode in ("hidden", "both"):
        total = total + hidden_loss(
            _mapped(student_out.hidden_states, len(keep), 1, "hidden states", mine),
            _mapped(teacher_out.hidden_states, teacher_layers, 1, "hidden states", keep), mask)
    if mode in ("attention", "both"):
        total = total + attention_loss(
            _mapped(student_out.attentions, len(keep), 0, "attentions", mine),
            _mapped(teacher_out.attentions, teacher_layers, 0, "attentions", keep), mask)
    return total


def attention_modules(module: Any) -> list[Any]:
    """The modules holding each block's query/key/value projections (where attention
    probabilities are computed and dropped out), each once."""
    found = discover(module, "distill")
    out: dict[int, Any] = {}
    for b in found.blocks:
        name = b.linears.get("query") or b.linears.get("qkv")
        if name is not None:
            parent = f"{b.path}.{name}".rpartition(".")[0]
            sub = module.get_submodule(parent)
            out[id(sub)] = sub
    return list(out.values())


def _set_attention(module: Any, implementation: str) -> None:
    setter = getattr(module, "set_attn_implementation", None)
    try:
        if setter is None:
            raise AttributeError("no set_attn_implementation")
        setter(implementation)
    except (AttributeError, ValueError, ImportError) as exc:
        raise PluginError(f"distill: layer_loss with attentions needs the {implementation!r} attention "
                          f"implementation, which {type(module).__name__} cannot use ({exc})") from exc


@functools.cache
def _teacher_class() -> type:
    import torch

    class LayerTeacher(torch.nn.Module):
        """A frozen copy of the teacher that runs beside the student and computes the loss."""

        def __init__(self, teacher: Any, keep: Sequence[int], teacher_layers: int, mode: str,
                     weight: float, attention: list[Any], restore: str | None):
            super().__init__()
            self.teacher = teacher
            self.keep, self.teacher_layers = list(keep), teacher_layers
            self.mode, self.weight = mode, weight
            self.attention = attention  # a plain list: the student's modules, not registered here
            self.restore = restore
            self.terms: list[float] = []

        def train(self, mode: bool = True) -> Any:
            super().train(mode)
            self.teacher.eval()  # always: no dropout, and no gradient (frozen parameters)
            return self

        def steady(self) -> None:
            """After the student's ``train()``: its attention modules without dropout."""
            for m in self.attention:
                m.eval()

        def step(self, student: Any, labels: Any, inputs: dict[str, Any],
                 logit_loss: Callable[[Any, Any, Any], Any]) -> Any:
            from types import SimpleNamespace

            flags = {"output_hidden_states": self.mode in ("hidden", "both"),
                     "output_attentions": self.mode in ("attention", "both")}
            out = student(**inputs, **flags)
            with torch.no_grad():
                ref = self.teacher(**inputs, **flags)
            term = layer_term(out, ref, self.keep, self.teacher_layers, self.mode, inputs["attention_mask"])
            self.terms.append(float(term.detach()))
            loss = logit_loss(out.logits.float(), ref.logits.detach().float(), labels)
            return SimpleNamespace(loss=loss + self.weight * term, logits=out.logits)

        def release(self, student: Any) -> dict[str, Any]:
            """Give the student back its attention implementation; what to record."""
            if self.restore is not None:
                _set_attention(student, self.restore)
            k = max(1, len(self.terms) // 10)  # the first and the last tenth of the forward passes
            first, last = self.terms[:k], self.terms[-k:]
            return {"distill_layer_loss": self.mode, "distill_layer_weight": self.weight,
                    "distill_layer_term_first": float(f"{sum(first) / max(1, len(first)):.6g}"),
                    "distill_layer_term_last": float(f"{sum(last) / max(1, len(last)):.6g}")}

    return LayerTeacher


def layer_teacher(teacher: Any, student: Any, keep: Sequence[int], teacher_layers: int, mode: str,
                  weight: float) -> Any:
    """The module that trains ``student`` against a frozen copy of ``teacher`` (the caller's
    module is not touched) on the logit loss plus ``weight`` x the ``mode`` layer term. With
    attentions, the copy and the student are switched to eager attention (``release`` switches
    the student back)."""
    if mode not in MODES[1:]:
        raise PluginError(f"distill: layer_loss must be one of {', '.join(MODES[1:])} here, got {mode!r}")
    copy = cpu_copy(teacher).float().eval().requires_grad_(False)
    attention, restore = [], None
    if mode in ("attention", "both"):
        restore = getattr(student.config, "_attn_implementation", None) or "eager"
        _set_attention(copy, "eager")
        _set_attention(student, "eager")
        attention = attention_modules(student)
    return _teacher_class()(copy, keep, teacher_layers, mode, weight, attention,
                            restore if restore != "eager" else None)


__all__ = ["attention_loss", "attention_modules", "hidden_loss", "layer_teacher", "layer_term"]
