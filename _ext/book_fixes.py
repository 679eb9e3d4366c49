"""Small Sphinx fixes for this book (loaded through `sphinx.local_extensions` in _config.yml).

1. Soft line breaks inside Chinese prose. MyST keeps a source line break as a newline, which the
   browser shows as a space between two Chinese characters ("从哪里 出发"). Chinese has no spaces
   between words, so a newline with a CJK character on both sides is removed.
2. Duplicate inline scripts. With this Jupyter Book 1 stack, sphinx-thebe's configuration script
   (`const THEBE_JS_URL = ...`) is registered twice, and the second `const` declaration is an
   uncaught SyntaxError on every page. Identical script entries are kept once.
3. Merged stream outputs. MyST-NB 1.4 merges a cell's stdout pieces for display by appending to
   the first piece in place, so the notebook it saves to _build/jupyter_execute holds the merged
   text and the pieces again: nbval then sees every printed line twice. The merge is made to work
   on a copy, so the saved notebook keeps the outputs exactly as the kernel sent them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from docutils import nodes
from myst_nb.core import render as _mystnb_render

CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
CJK_CHAR = re.compile(CJK)
SOFT_BREAK = re.compile(rf"({CJK})\n({CJK})")
SKIP = (nodes.literal_block, nodes.literal, nodes.math, nodes.math_block, nodes.raw)


def join_cjk_soft_breaks(app: Any, doctree: nodes.document) -> None:
    # MyST emits a soft break as its own Text node "\n" between the two lines' text nodes.
    for text in list(doctree.findall(nodes.Text)):
        parent = text.parent
        if parent is None or isinstance(parent, SKIP) or "\n" not in text:
            continue
        if str(text).strip() == "":
            i = parent.index(text)
            before = parent[i - 1] if i > 0 else None
            after = parent[i + 1] if i + 1 < len(parent) else None
            if (
                before is not None
                and after is not None
                and CJK_CHAR.match(before.astext()[-1:] or " ")
                and CJK_CHAR.match(after.astext()[:1] or " ")
            ):
                parent.replace(text, nodes.Text(""))
            continue
        joined = SOFT_BREAK.sub(r"\1\2", str(text))
        if joined != str(text):
            parent.replace(text, nodes.Text(joined))


def dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for js in scripts:
        attributes = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""), str(attributes.get("body", "")))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: later handlers (MathJax) add to this same list


_coalesce_streams = _mystnb_render.coalesce_streams


def coalesce_streams_on_a_copy(outputs: list) -> list:
    return _coalesce_streams(copy.deepcopy(outputs))


def setup(app: Any) -> dict:
    _mystnb_render.coalesce_streams = coalesce_streams_on_a_copy
    app.connect("doctree-read", join_cjk_soft_breaks)
    # Before other handlers: html-page-context stops at the first handler that returns a value.
    app.connect("html-page-context", dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
