"""Plugin parameters, declared once: a ``Params`` model per plugin class.

A plugin declares what a suite may set as a pydantic model nested in its class::

    class LowRank(Transform):
        name = "low-rank"

        class Params(harness.api.Params):
            rank: int | None = Field(None, ge=1)
            \"\"\"Rank kept in every factorised matrix (give this or ``rank_ratio``).\"\"\"
            targets: Literal["ffn", "attention", "all"] = "ffn"
            \"\"\"Which linear layers of each block are factorised.\"\"\"

        params: Params   # set by ``Plugin.__init__``: ``self.params.rank``

Everything else follows from that one declaration: validation of a suite entry with key paths
and did-you-mean (:func:`validate`), ``harness plugins --params NAME`` and the tables of
docs/plugins.md (:func:`describe`), and the cache key (:func:`as_key`, the validated values with
defaults filled in). Values are checked strictly: ``true`` is not an ``int``, ``"3"`` is not a
number, an ``int`` is a valid ``float``; a sequence parameter is a ``list[...]`` (YAML has lists).
Checks across fields are a ``@model_validator(mode="after")`` raising ``ValueError``; a default
that depends on another field is filled into the input by a ``@model_validator(mode="before")``
(so that the cache key holds the value used).

A plugin class written before ``Params`` existed (keyword arguments of ``__init__``) still
works: its ``Params`` is derived from the signature (:func:`from_signature`).
"""

from __future__ import annotations

import difflib
import inspect
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import PydanticUndefined

from .errors import ParameterError

__all__ = ["ParamInfo", "Params", "adopt_signature", "as_key", "declared", "describe",
           "from_signature", "validate"]


class Params(BaseModel):
    """Base of every plugin's parameters: unknown keys are errors, values are checked strictly,
    an instance is immutable, and the docstring under a field is its documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              use_attribute_docstrings=True, protected_namespaces=())


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as listed by ``harness plugins --params`` and docs/plugins.md."""

    name: str
    type: str
    default: str  #: the default as JSON (as a suite spells it); "(required)" when there is none
    doc: str


def _message(err: Mapping[str, Any], fields: list[str], label: str) -> tuple[str, str]:
    """(key path below ``params``, message) of one pydantic error of ``label``'s parameters."""
    loc = tuple(err.get("loc", ()))
    # a field, then list indices (a union's member names, such as "str", are not keys)
    key = ".".join(str(p) for p in loc[:1] + tuple(p for p in loc[1:] if isinstance(p, int)))
    if err.get("type") == "extra_forbidden":
        msg = f"unknown parameter {key!r} for {label}."
        close = difflib.get_close_matches(str(err["loc"][0]), fields, n=3)
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        return key, msg + f" Accepted: {', '.join(fields) or '(none)'}"
    where = f"parameter {key!r} of {label}" if key else f"parameters of {label}"
    if err.get("type") == "missing":
        return key, f"{label} needs parameter {key!r}"
    text = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    text = text.replace("Input should be", "must be", 1)
    if "input" in err and err.get("type") != "value_error":
        text += f", got {type(err['input']).__name__} {err['input']!r}"
    return key, f"{where}: {text}"


def validate(cls: type, values: Mapping[str, Any], kind: str = "",
             model: type[Params] | None = None) -> Params:
    """``cls.Params`` (or ``cls`` itself, a ``Params`` model) built from ``values``; else a
    :class:`ParameterError` whose ``key`` is the key path below ``params`` (``"rank"``; ``""``
    for a check across fields) and whose message names the plugin (``kind`` plugin
    ``cls.name``), the key and what is accepted. ``model``: validate against this model
    instead (a base's, for a class written before ``Params``)."""
    if model is None:
        model = cls if issubclass(cls, Params) else cls.Params  # type: ignore[attr-defined]
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        label = (cls.__name__ if issubclass(cls, Params) else
                 f"{kind} plugin".strip() + f" {getattr(cls, 'name', '') or cls.__qualname__!r}")
        key, msg = _message(exc.errors()[0], list(model.model_fields), label)
        more = len(exc.errors()) - 1
        tail = f" (and {more} more error{'s' * (more > 1)})" if more else ""
        raise ParameterError(msg + tail, key=key) from None


def as_key(plugin: Any) -> dict[str, Any]:
    """A plugin instance's validated parameters, defaults filled in, as JSON-able data: what
    cache keys and result provenance hold. A plugin written before ``Params`` existed and
    built outside the core holds only its base's: then its attributes named like its
    parameters."""
    params = getattr(plugin, "params", None)
    if not isinstance(params, type(plugin).Params):
        values = {n: getattr(plugin, n, None) for n in type(plugin).Params.model_fields}
        return json.loads(json.dumps(values, sort_keys=True, default=repr))
    return params.model_dump(mode="json")


def _type_text(annotation: Any) -> str:
    """``int | None``, ``"ffn" | "all"`` (a ``Literal``), ``list[str]``: a type as people read it."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return "any" if annotation in (None, Any) else str(annotation).replace("typing.", "")


def _json_text(value: Any) -> str:
    """A default as a suite file would spell it (``null``, ``"ffn"``, ``0.25``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
           ("max_length", "length <="))


def _constraints(metadata: list[Any]) -> str:
    """``">= 1, < 1"`` from a field's ``Field(ge=1, lt=1)`` metadata."""
    return ", ".join(f"{sym} {getattr(m, attr)}" for m in metadata for attr, sym in _BOUNDS
                     if getattr(m, attr, None) is not None)


def describe(cls: type) -> list[ParamInfo]:
    """The parameters of ``cls``, in declaration order."""
    out = []
    model = cls if issubclass(cls, Params) else cls.Params  # type: ignore[attr-defined]
    for name, f in model.model_fields.items():
        default = "(required)" if f.is_required() else _json_text(
            f.default_factory() if f.default_factory else f.default)  # type: ignore[call-arg]
        doc = " ".join((f.description or "").split())
        constraints = _constraints(f.metadata)
        if constraints:
            doc = f"{doc} ({constraints})".strip()
        out.append(ParamInfo(name, _type_text(f.annotation), default, doc))
    return out


def _hints(init: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is left unchecked
        return {}


def from_signature(cls: type, base: type[Params]) -> type[Params] | None:
    """A ``Params`` model from the keyword arguments of ``cls.__init__`` (a plugin written
    before ``Params`` existed), or None when ``cls`` defines no ``__init__`` with named
    parameters of its own. An ``__init__`` ending in ``**params`` that it passes on also takes
    ``base``'s fields."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return None
    sig = inspect.signature(init)
    if not any(n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
               for n, p in sig.parameters.items()):
        return None
    hints = _hints(init)
    fields: dict[str, Any] = {}
    for n, p in sig.parameters.items():
        if n == "self" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        default = PydanticUndefined if p.default is p.empty else p.default
        fields[n] = (hints.get(n, Any), default)
    passes_on = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    model = create_model(f"{cls.__qualname__}.Params", __base__=base if passes_on else Params,
                         **fields)
    if getattr(cls, "accepts_any_params", False):
        model.model_config = {**model.model_config, "extra": "allow"}
        model.model_rebuild(force=True)
    return model


def adopt_signature(cls: Any) -> None:
    """``Plugin.__init_subclass__``: a class that declares no ``Params`` but has an ``__init__``
    with named parameters (written before ``Params`` existed) gets one derived from it."""
    if "Params" in cls.__dict__:
        cls._params_from_signature = False
    elif (derived := from_signature(cls, cls.Params)) is not None:
        cls.Params, cls._params_from_signature = derived, True


def declared(cls: type) -> Any:
    """The nearest class of ``cls``'s bases (itself included) with a declared ``Params``: what
    ``Plugin.__init__`` validates against. A class written before ``Params`` passes its base
    only what it does not keep itself; the core then sets the whole derived set."""
    return next(k for k in cls.__mro__
                if "Params" in k.__dict__ and not k.__dict__.get("_params_from_signature"))
