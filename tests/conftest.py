"""Shared pytest fixtures: paths to the repository and the built book."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"


@pytest.fixture(scope="session")
def built_html() -> Path:
    """The built HTML book; a test of the book fails (not skips) when it is missing."""
    if not (HTML / "index.html").exists():
        pytest.fail("_build/html is missing: run `make book` first (make test does).")
    return HTML
