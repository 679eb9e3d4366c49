"""Tests of the page helpers: progress policy, glue without side effects, plot style."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from storyopt_lib import notebook


@pytest.mark.parametrize(
    ("env", "flag", "expected"),
    [
        (None, None, True),
        ("0", None, False),
        ("1", None, True),
        ("0", True, True),
        (None, False, False),
    ],
)
def test_progress_policy(monkeypatch, env, flag, expected):
    if env is None:
        monkeypatch.delenv("STORYOPT_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("STORYOPT_PROGRESS", env)
    assert notebook.progress_enabled(flag) is expected


def test_glue_stores_plain_numbers_and_returns_none(monkeypatch):
    stored = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=False: stored.update({name: (value, display)})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert notebook.glue("a", np.float64(0.25)) is None
    notebook.glue("b", torch.tensor(3))
    notebook.glue("c", [1, 2])
    assert stored["a"] == (0.25, False) and type(stored["a"][0]) is float
    assert stored["b"] == (3, False) and type(stored["b"][0]) is int
    assert stored["c"] == ([1, 2], False)


def test_glue_without_myst_nb_is_a_no_op(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import raises ImportError
    assert notebook.glue("x", 1.0) is None


def test_setup_plots_uses_a_bundled_font():
    import matplotlib as mpl

    notebook.setup_plots()
    assert mpl.rcParams["font.family"] == ["DejaVu Sans"]
    assert mpl.rcParams["axes.grid"] is True
