"""pytest plugin for `make nbval`: ignore MyST-NB glue records when comparing outputs.

The book build saves each executed page to _build/jupyter_execute without its glue outputs
(`application/papermill.record/...`, data for the prose, never shown as output). A fresh execution
under nbval produces them again, so they are dropped before nbval compares. Every output a reader
sees is still compared.
"""

from __future__ import annotations

from typing import Any

import nbval.plugin

GLUE_MIME_PREFIX = "application/papermill.record/"
_compare_outputs = nbval.plugin.IPyNbCell.compare_outputs


def _is_glue_record(output: Any) -> bool:
    data = output.get("data", {}) if hasattr(output, "get") else {}
    return bool(data) and all(key.startswith(GLUE_MIME_PREFIX) for key in data)


def compare_outputs(self: Any, test: list, ref: list, skip_compare: Any = None) -> bool:
    test = [out for out in test if not _is_glue_record(out)]
    ref = [out for out in ref if not _is_glue_record(out)]
    return _compare_outputs(self, test, ref, skip_compare)


nbval.plugin.IPyNbCell.compare_outputs = compare_outputs
