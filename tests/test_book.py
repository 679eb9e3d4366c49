"""Checks of the book as built: every page exists, no warnings in outputs, Chinese search,
paired notebooks in sync with their pages, and launch links that open those notebooks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from .conftest import BUILD, ROOT

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
WARNING_RE = re.compile(r"\b[A-Z]\w*Warning\b")


def toc_files() -> list[str]:
    """Every document named in _toc.yml, root first (paths without suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            walk(entry.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def notebook_pages() -> list[Path]:
    """Pages that execute (MyST-NB pages with a kernelspec): each must have a paired notebook."""
    pages = []
    for name in toc_files():
        md = ROOT / f"{name}.md"
        text = md.read_text(encoding="utf-8") if md.exists() else ""
        front_matter = text.split("---")[1] if text.startswith("---") else ""
        if "kernelspec:" in front_matter:
            pages.append(md)
    return pages


def test_toc_has_pages_and_each_has_html(built_html: Path) -> None:
    files = toc_files()
    assert len(files) >= 3
    for name in files:
        assert (ROOT / f"{name}.md").exists(), f"_toc.yml names {name}, which has no source"
        assert (built_html / f"{name}.html").exists(), f"no HTML page for {name}"


def test_executed_outputs_hold_no_python_warning(built_html: Path) -> None:
    executed = sorted((BUILD / "jupyter_execute").rglob("*.ipynb"))
    assert executed, "the build executed no notebook"
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
                assert not WARNING_RE.search(text), f"{path.name}: warning in output: {text[:300]}"


def _search_index(built_html: Path) -> dict:
    raw = (built_html / "searchindex.js").read_text(encoding="utf-8")
    return json.loads(raw[raw.index("(") + 1 : raw.rindex(")")])


@pytest.mark.parametrize("word", ["优化", "学习"])
def test_search_index_finds_chinese_words(built_html: Path, word: str) -> None:
    index = _search_index(built_html)
    html_lang = re.search(
        r'<html[^>]*lang="([^"]+)"', (built_html / "chapters/index.html").read_text()
    )
    assert html_lang and html_lang.group(1).startswith("zh"), "the book is not built as zh_CN"
    terms = index["terms"]
    assert word in terms, f"{word!r} is not a search term: is jieba installed?"
    hits = terms[word] if isinstance(terms[word], list) else [terms[word]]
    docnames = [index["docnames"][i] for i in hits]
    # The page must really hold the word in its source prose.
    for doc in docnames:
        assert word in (ROOT / f"{doc}.md").read_text(encoding="utf-8")
    assert "chapters/07_00_chapter" in docnames or "chapters/index" in docnames


@pytest.mark.parametrize("page", notebook_pages(), ids=lambda p: p.stem)
def test_paired_notebook_is_in_sync(page: Path) -> None:
    ipynb = page.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks`"
    on_disk = nbformat.read(ipynb, as_version=4)
    expected = jupytext.read(page)
    assert len(on_disk.cells) == len(expected.cells), f"{ipynb.name} drifted: run `make notebooks`"
    for got, want in zip(on_disk.cells, expected.cells, strict=True):
        assert got.cell_type == want.cell_type
        assert got.source == want.source, f"{ipynb.name} drifted: run `make notebooks`"
        assert got.get("metadata", {}).get("tags") == want.get("metadata", {}).get("tags")
        assert not got.get("outputs"), f"{ipynb.name} carries outputs; pair notebooks have none"
    assert on_disk.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("page", notebook_pages(), ids=lambda p: p.stem)
def test_first_code_cell_installs_from_the_configured_repository(page: Path) -> None:
    nb = jupytext.read(page)
    first = next(c for c in nb.cells if c.cell_type == "code")
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    assert 'find_spec("storyopt_lib") is None' in first.source
    assert f"git+{url}@{branch}" in first.source


@pytest.mark.parametrize("page", notebook_pages(), ids=lambda p: p.stem)
def test_launch_and_download_buttons(built_html: Path, page: Path) -> None:
    rel = page.relative_to(ROOT).with_suffix("")
    html = (built_html / f"{rel}.html").read_text(encoding="utf-8")
    org_repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    colab = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{rel}.ipynb"
    assert colab in html, f"no Colab link to {rel}.ipynb"
    assert f"https://mybinder.org/v2/gh/{org_repo}/{branch}" in html
    assert f"_sources/{rel}" in html, "no download button for the page source"


def test_mathjax_is_served_by_the_book(built_html: Path) -> None:
    html = (built_html / "chapters/07_00_chapter.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in html
    assert (built_html / "_static/mathjax/tex-chtml.js").exists()
    assert "cdn.jsdelivr" not in html and "cdnjs" not in html


def test_every_reference_is_cited_and_every_citation_exists() -> None:
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))
    cited: set[str] = set()
    for page in (ROOT / "chapters").glob("*.md"):
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text(encoding="utf-8")):
            cited.update(key.strip() for key in group.split(","))
    assert cited - keys == set(), f"cited but not in references.bib: {sorted(cited - keys)}"
    assert keys - cited == set(), f"in references.bib but cited nowhere: {sorted(keys - cited)}"
