"""BENCHMARKS.md holds one section per benchmark script, each rewritten by its own script only:
a section is the text between `<!-- begin NAME -->` and `<!-- end NAME -->`."""

from __future__ import annotations

from pathlib import Path


def write_section(path: str | Path, name: str, lines: list[str]) -> None:
    """Replace section `name` of the file at `path` with `lines` (appended if it has none)."""
    path = Path(path)
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = path.read_text() if path.exists() else ""
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)
