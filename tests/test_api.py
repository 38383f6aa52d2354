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


def test_a_changed_model_says_so_in_its_repr_and_notebook_view():
    m = yolobn.load()
    assert "recalibrated" not in repr(m) and "swapped" not in repr(m) and m.changes() == []
    rec = yolobn.recalibrate(m, max_images=4)
    assert repr(rec).endswith("recalibrated on 4 images)") and "recalibrated on 4 images" in rec._repr_html_()
    sw = yolobn.swap(m, "reference:eps=1e-5")
    assert f"swapped {m.meta.n_batchnorm} BN to reference:eps=1e-5" in repr(sw)
    html = m._repr_html_()
    assert "<b>BatchNorm layers</b>: 81" in html and "&lt;demo&gt;" in html  # escaped, not raw


def test_every_command_has_its_python_name():
    """The command's own word where it is free; the older names stay as aliases of the same object."""
    from yolobn.cli import build_parser

    assert yolobn.activations is yolobn.observe
    assert yolobn.experiment is yolobn.run_experiment and yolobn.frontier is yolobn.prune_frontier
    python_name = {"report": "write_report", "swap": "swap_validate"}  # yolobn.report is the package of pages
    for cmd in build_parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        assert callable(getattr(yolobn, python_name.get(cmd, cmd))), cmd


def test_python_errors_name_parameters_not_command_line_flags(tmp_path):
    import re

    import pytest

    m = yolobn.load()
    calls = [
        lambda: yolobn.swap(m, "nosuch"),
        lambda: yolobn.swap(m, "reference:eps=x"),
        lambda: yolobn.swap(m, "reference", layers=["nothing.here"]),
        lambda: yolobn.inspect(m, select=["nothing.here"]),
        lambda: yolobn.observe(m, batch=0),
        lambda: yolobn.observe(m, device="banana"),
        lambda: yolobn.validate(m, str(tmp_path / "missing.yaml")),
    ]
    for call in calls:
        with pytest.raises(yolobn.YolobnError) as e:
            call()
        assert not re.search(r"(^|\s)--[a-z]", str(e.value)), str(e.value)
