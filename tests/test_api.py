"""The public API: every name in yolobn.__all__ resolves to what it names, also after every submodule
has been imported (a submodule named like a function would shadow it: yolobn.swap was a module)."""

from __future__ import annotations

import importlib
import pkgutil
import types

import yolobn


def test_public_names_are_not_shadowed_by_submodules():
    for m in pkgutil.walk_packages(yolobn.__path__, "yolobn."):
        if not m.name.endswith("__main__"):  # python -m entry points run when imported
            importlib.import_module(m.name)
    for name in yolobn.__all__:
        value = getattr(yolobn, name)
        assert not isinstance(value, types.ModuleType), f"yolobn.{name} is a module, not the API object"
    assert (
        callable(yolobn.swap)
        and callable(yolobn.validate)
        and callable(yolobn.track)
        and callable(yolobn.compare)
    )
