"""Name -> protocol preset, found through the entry-point group ``tokbench.protocols``.

As for tasks (`tokbench.task_registry`): tokbench's own presets are entry points too, one
module each under ``tasks/protocols/``, each exposing a `tokbench.protocol.Protocol`; a plug-in
adds its own the same way, or `register_protocol` adds one at run time (notebooks, tests).
"""
from __future__ import annotations

from importlib.metadata import entry_points

from tokbench.protocol import Protocol

ENTRY_POINT_GROUP = "tokbench.protocols"

_protocols: dict[str, Protocol] = {}


def _adopt(name: str, protocol: object) -> Protocol:
    if not isinstance(protocol, Protocol) or protocol.name != name:
        raise ValueError(f"protocol entry point {name!r} must load a Protocol named {name!r}, got {protocol!r:.100}")
    _protocols[name] = protocol
    return protocol


def register_protocol(protocol: Protocol) -> Protocol:
    """Register a preset at run time."""
    return _adopt(protocol.name, protocol)


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def protocol_names() -> list[str]:
    """Every available preset: entry points and run-time registrations."""
    return sorted(set(_entry_points()) | set(_protocols))


def get_protocol(name: str) -> Protocol:
    """The preset registered as ``name``; ``ValueError`` naming the available ones otherwise."""
    if name not in _protocols:
        eps = _entry_points()
        if name not in eps:
            raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(protocol_names())}")
        _adopt(name, eps[name].load())
    return _protocols[name]
