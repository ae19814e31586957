"""Name -> protocol preset, found through the entry-point group ``tokbench.protocols``.

As for tasks (`tokbench.task_registry`): tokbench's own presets are entry points too, one
module each under ``tasks/protocols/``, each exposing a `tokbench.protocol.Protocol`; a plug-in
adds its own the same way, or `register_protocol` adds one at run time (notebooks, tests).
"""
from __future__ import annotations

from tokbench.entry_point_registry import EntryPointRegistry
from tokbench.protocol import Protocol

ENTRY_POINT_GROUP = "tokbench.protocols"


def _adopt(name: str, protocol: object) -> Protocol:
    if not isinstance(protocol, Protocol) or protocol.name != name:
        raise ValueError(f"protocol entry point {name!r} must load a Protocol named {name!r}, got {protocol!r:.100}")
    return protocol


_protocols: EntryPointRegistry[Protocol] = EntryPointRegistry(ENTRY_POINT_GROUP, "protocol", _adopt)


def register_protocol(protocol: Protocol) -> Protocol:
    """Register a preset at run time."""
    return _protocols.register(protocol.name, protocol)


def protocol_names() -> list[str]:
    """Every available preset: entry points and run-time registrations."""
    return _protocols.names()


def get_protocol(name: str) -> Protocol:
    """The preset registered as ``name``; ``ValueError`` naming the available ones otherwise."""
    return _protocols.get(name)
