"""Plots shared by the pages: optimizer trajectories drawn over the contours of a 2-D surface.

Text in the figures is English or math only (fonts every machine has); the pages explain in Chinese.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["plot_trajectories"]


def _limits(paths: Mapping[str, np.ndarray], surface: Any, margin: float = 0.15) -> tuple:
    pts = [np.asarray(p, dtype=float)[:, :2] for p in paths.values()]
    pts.append(np.asarray(surface.minimum, dtype=float).reshape(1, 2))
    allp = np.concatenate([p[np.all(np.isfinite(p), axis=1)] for p in pts])
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-3)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def plot_trajectories(
    surface: Any,
    paths: Mapping[str, np.ndarray],
    ax: Any = None,
    *,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    levels: int = 25,
    log_levels: bool = True,
    title: str | None = None,
    markevery: int | None = None,
) -> Any:
    """Draw each path ``(steps + 1, 2)`` over the log-spaced contours of ``surface``.

    The start is a black square, the minimum a star; the axes limits fit every path unless
    ``xlim``/``ylim`` are given. Returns the matplotlib axes.

    Args:
        surface: ``value``, ``grid`` and ``minimum`` as in ``storyopt_lib.surfaces``.
        paths: label -> array of points (e.g. from ``surface.trajectory``).
        ax: axes to draw on (default: a new figure).
        xlim, ylim: plot ranges (default: fitted to the paths and the minimum).
        levels: number of contour levels.
        log_levels: space the levels geometrically above the minimum value (good for valleys).
        title: axes title (English or math only).
        markevery: put a dot on every ``markevery``-th point (default: about 20 per path).

    Example:
        >>> from storyopt_lib.surfaces import Quadratic
        >>> q = Quadratic()
        >>> ax = plot_trajectories(q, {"SGD": q.trajectory("sgd", steps=20, lr=0.05)})
    """
    import matplotlib.pyplot as plt

    if not paths:
        raise ValueError("Invalid paths: empty (give at least one label -> points array)")
    for label, p in paths.items():
        p = np.asarray(p)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"Invalid paths[{label!r}]: shape {p.shape} (must be (steps + 1, 2))")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    fx, fy = _limits(paths, surface)
    xlim, ylim = xlim or fx, ylim or fy
    X, Y, Z = surface.grid(xlim, ylim)
    zmin = float(surface.value(np.asarray(surface.minimum, dtype=float)))
    if log_levels:
        span = Z - zmin
        lo = max(float(np.percentile(span, 1)), 1e-6 * float(span.max()), 1e-12)
        lv = zmin + np.geomspace(lo, float(span.max()), levels)
    else:
        lv = np.linspace(float(Z.min()), float(Z.max()), levels)
    ax.contour(X, Y, Z, levels=lv, colors="0.75", linewidths=0.6)
    for label, p in paths.items():
        p = np.asarray(p, dtype=float)
        every = markevery or max(1, len(p) // 20)
        ax.plot(p[:, 0], p[:, 1], "-o", ms=2.5, lw=1.2, markevery=every, label=label)
    start = np.asarray(next(iter(paths.values())), dtype=float)[0]
    ax.plot(*start, "ks", ms=6)
    ax.plot(*np.asarray(surface.minimum, dtype=float), "k*", ms=11)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return ax
