"""Name -> factory registry of tokenizers.

Our own families and third-party plug-ins are found the same way: through the
entry-point group ``tokbench.tokenizers`` (name -> a factory callable returning a
`Tokenizer`). `register` adds one at run time (a notebook, a test). A factory may
carry a ``variants`` attribute, a dict of named option sets (``tiny``, ``small``,
``base``) that `tokbench list` shows.

Spec strings name a tokenizer with options: ``"jpeg:q=5"``, ``"vq:size=tiny,codebook_size=1024"``.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

import yaml

ENTRY_POINT_GROUP = "tokbench.tokenizers"

_registered: dict[str, Callable[..., Any]] = {}


def register(name: str, factory: Callable[..., Any] | None = None):
    """Register ``factory`` under ``name``; usable as a decorator."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        _registered[name] = fn
        return fn

    return add if factory is None else add(factory)


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """All registered tokenizer names, sorted."""
    return sorted(set(_entry_point_factories()) | set(_registered))


def get_factory(name: str) -> Callable[..., Any]:
    if name in _registered:
        return _registered[name]
    eps = _entry_point_factories()
    if name not in eps:
        known = ", ".join(names()) or "none"
        raise KeyError(f"unknown tokenizer {name!r}; registered: {known}")
    factory = eps[name].load()
    _registered[name] = factory
    return factory


def _split_options(text: str) -> list[str]:
    """Split ``a=1,b=[1,2],c=x`` on the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[(" 
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"jpeg:q=5"`` -> ``("jpeg", {"q": 5})``; values are read as YAML scalars/lists."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in _split_options(rest):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"tokenizer option {item!r} in {spec!r} is not of the form key=value")
        options[key.strip()] = yaml.safe_load(value)
    return name.strip(), options


def with_weights(spec: str, weights: str | None) -> str:
    """``spec`` with a ``weights=PATH`` option added (the CLI's ``--tokenizer NAME --weights PATH``)."""
    if not weights:
        return spec
    name, options = parse_spec(spec)
    if "weights" in options:
        raise ValueError(f"weights given twice: in {spec!r} and as {weights!r}")
    return f"{spec}{',' if ':' in spec else ':'}weights={weights}"


def create(spec: str, **overrides: Any):
    """Build a tokenizer from a spec string such as ``"vq:size=tiny"``."""
    name, options = parse_spec(spec)
    options.update(overrides)
    factory = get_factory(name)
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options for tokenizer {name!r}: {err}") from err


def variants(name: str) -> dict[str, dict[str, Any]]:
    """Named option sets of a registered tokenizer (empty when it has none)."""
    return dict(getattr(get_factory(name), "variants", {}) or {})
