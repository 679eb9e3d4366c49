"""Join hard-wrapped lines of Chinese prose in MyST pages, in place.

A line break between two Chinese characters shows as a space in Jupyter, Colab and most browsers
(the book build removes it with _ext/book_fixes.py, but notebooks cannot). This tool joins such
lines outside code: fenced code blocks, code cells and literalincludes are left as they are.

Usage: .venv/bin/python tools/unwrap_cjk.py chapters/*.md   (then `make notebooks`)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
ENDS_CJK = re.compile(f"[{CJK}]$")
STARTS_CJK = re.compile(f"^[{CJK}]")
# Lines that start a new block and must never be joined onto the previous line.
BLOCK_START = re.compile(r"^\s*(#|[-*+] |\d+[.)] |\||:::|```|~~~|\$\$|>|\(|\{|:\w)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
PROSE_DIRECTIVES = re.compile(
    r"^\{(admonition|note|warning|tip|important|caution|exercise|solution|margin|dropdown|"
    r"seealso|hint|attention|danger|error)\b"
)


def unwrap(text: str) -> str:
    out: list[str] = []
    fences: list[tuple[str, bool]] = []  # (marker, is_code)
    for line in text.split("\n"):
        fence = FENCE.match(line)
        in_code = any(is_code for _, is_code in fences)
        if fence:
            marker, info = fence.group(1), fence.group(2).strip()
            if fences and marker == fences[-1][0] and not info:
                fences.pop()
            elif not in_code:
                fences.append((marker, not PROSE_DIRECTIVES.match(info)))
            out.append(line)
            continue
        if (
            not in_code
            and out
            and STARTS_CJK.match(line.lstrip())
            and not BLOCK_START.match(line)
            and ENDS_CJK.search(out[-1])
            and not BLOCK_START.match(out[-1])
            and not FENCE.match(out[-1])
            and not out[-1].lstrip().startswith(":")
        ):
            out[-1] += line.lstrip()
            continue
        if (
            not in_code
            and out
            and STARTS_CJK.match(line.lstrip())
            and line.startswith(" ")
            and ENDS_CJK.search(out[-1])
            and re.match(r"^\s*([-*+]|\d+[.)]) ", out[-1])
        ):
            out[-1] += line.lstrip()  # continuation line of a list item
            continue
        out.append(line)
    return "\n".join(out)


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        new = unwrap(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"unwrapped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
