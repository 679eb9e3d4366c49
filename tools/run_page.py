"""Execute one MyST page the way the book build does, and report time, errors and warnings.

Usage: .venv/bin/python tools/run_page.py chapters/07_3_gradient_descent.md [--save out.ipynb]

Runs in the page's own folder (as Jupyter Book does) with STORYOPT_PROGRESS=0, prints the slowest
cells, and exits non-zero on a cell error or on a Python warning in any output.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

WARNING_RE = re.compile(r"\b\w*Warning\b:")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("page", type=Path)
    parser.add_argument("--save", type=Path, default=None, help="write the executed notebook here")
    parser.add_argument("--timeout", type=int, default=180, help="per-cell timeout in seconds")
    args = parser.parse_args()

    os.environ["STORYOPT_PROGRESS"] = "0"
    os.environ["OMP_NUM_THREADS"] = "1"  # as the Makefile sets for the build and nbval
    nb = jupytext.read(args.page)
    client = NotebookClient(
        nb,
        timeout=args.timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.page.parent.resolve())}},
    )
    times: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    status = 0
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            except Exception as exc:  # report any cell failure and stop
                print(f"cell {index} FAILED:\n{cell.source[:400]}\n{exc}")
                status = 1
                break
            times.append((time.perf_counter() - start, index))
    total = time.perf_counter() - t0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") or "".join(
                str(v) for k, v in out.get("data", {}).items() if k == "text/plain"
            )
            if WARNING_RE.search(text):
                print(f"WARNING in output: {text[:300]}")
                status = 1
    print(f"total {total:.1f} s; slowest cells:")
    for seconds, index in sorted(times, reverse=True)[:5]:
        print(f"  cell {index}: {seconds:.1f} s  {nb.cells[index].source.splitlines()[0][:70]!r}")
    if args.save:
        nbformat.write(nb, args.save)
    return status


if __name__ == "__main__":
    sys.exit(main())
