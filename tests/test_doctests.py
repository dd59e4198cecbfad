"""The examples in the docstrings run and give what they show, and the public functional API carries one
for every function and class it defines (camera, shading, rasterize, grid, metrics, losses)."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

#: The public functional API: every function and class defined there carries an example.
FUNCTIONAL_API = (
    "unsup3d.renderer.camera",
    "unsup3d.renderer.shading",
    "unsup3d.renderer.rasterize",
    "unsup3d.renderer.grid",
    "unsup3d.metrics",
    "unsup3d.losses",
    "unsup3d.core",
)
#: Other modules whose examples run too.
WITH_EXAMPLES = FUNCTIONAL_API + (
    "unsup3d.shape_check",
    "unsup3d.inference",
    "unsup3d.files.atomic",
    "unsup3d.evaluation",
    "unsup3d.evaluator",
    "unsup3d.training.threads",
)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_examples_run(name, capsys):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, capsys.readouterr().out


@pytest.mark.parametrize("name", FUNCTIONAL_API)
def test_every_public_function_has_an_example(name):
    module = importlib.import_module(name)
    own = [getattr(module, n) for n in module.__all__]
    own = [obj for obj in own if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name]
    assert own, f"{name} defines nothing public"
    missing = [obj.__name__ for obj in own if ">>>" not in (inspect.getdoc(obj) or "")]
    assert missing == [], f"{name}: no example in {missing}"
