"""Helpers for the book's pages: they must run in the book build, a local Jupyter and Colab.

- ``glue`` stores a value for ``{glue}`` references when MyST-NB is present (the book build) and
  is a no-op elsewhere (Colab has no MyST-NB), so a page never fails for lack of it.
- ``progress_enabled`` is the single policy for progress bars: readers get one, the built HTML,
  nbval and CI logs do not (the Makefile sets ``STORYOPT_PROGRESS=0``).
- ``setup_plots`` fixes a readable matplotlib style with fonts every machine has.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["glue", "progress_enabled", "setup_plots"]


def progress_enabled(flag: bool | None = None) -> bool:
    """Whether to show a progress bar.

    Args:
        flag: ``True``/``False`` forces the choice; ``None`` (the default) shows a bar unless the
            environment variable ``STORYOPT_PROGRESS`` is ``"0"``.
    """
    if flag is not None:
        return bool(flag)
    return os.environ.get("STORYOPT_PROGRESS", "1") != "0"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue}`` in the page's prose.

    In the book build this is ``myst_nb.glue``. Without MyST-NB (Colab, a bare Jupyter) nothing is
    stored, and the reader still sees the value wherever the page prints it. NumPy and 0-dim torch
    scalars are stored as plain Python numbers, so ``{glue:text}`name:.3f``` can format them.
    Returns ``None``, so a cell ending in ``glue(...)`` prints nothing.
    """
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def setup_plots() -> None:
    """A plot style that reads well in the HTML book and uses only bundled (Latin) fonts."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "font.family": "DejaVu Sans",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
