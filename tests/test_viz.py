"""Tests of storyopt_lib.viz: trajectories over contours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from storyopt_lib.surfaces import Quadratic, Rosenbrock
from storyopt_lib.viz import plot_trajectories


def test_draws_one_line_per_path_and_fits_limits() -> None:
    surf = Rosenbrock()
    paths = {
        "SGD": surf.trajectory("sgd", steps=20, lr=1e-3),
        "Adam": surf.trajectory("adam", steps=20, lr=0.1),
    }
    ax = plot_trajectories(surf, paths, title="t")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "SGD" in labels and "Adam" in labels
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for p in paths.values():
        assert x0 <= p[:, 0].min() and p[:, 0].max() <= x1
        assert y0 <= p[:, 1].min() and p[:, 1].max() <= y1
    assert x0 <= 1.0 <= x1 and y0 <= 1.0 <= y1  # the minimum is shown
    plt.close("all")


def test_uses_given_axes_and_limits() -> None:
    surf = Quadratic(condition=10.0)
    fig, ax = plt.subplots()
    out = plot_trajectories(surf, {"p": surf.trajectory("sgd", steps=5, lr=0.05)}, ax=ax,
                            xlim=(-5, 5), ylim=(-3, 3))  # fmt: skip
    assert out is ax
    assert ax.get_xlim() == (-5, 5) and ax.get_ylim() == (-3, 3)
    plt.close(fig)


@pytest.mark.parametrize("paths", [{}, {"bad": np.zeros((5, 3))}, {"bad": np.zeros(4)}])
def test_rejects_bad_paths(paths: dict) -> None:
    with pytest.raises(ValueError, match="Invalid paths"):
        plot_trajectories(Quadratic(), paths)
