"""The public API is what ``__all__`` says, in every public module, and nothing is missing."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import tidings

PUBLIC_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(tidings.__path__, "tidings.")
    if not any(part.startswith("_") for part in info.name.split("."))
)


@pytest.mark.parametrize("name", ["tidings", *PUBLIC_MODULES])
def test_every_public_module_declares_all_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def test_top_level_exports_the_everyday_names() -> None:
    for name in ("Event", "Topology", "Listener", "ListenerRuntime", "Outbox", "Relay", "connect"):
        assert name in tidings.__all__
