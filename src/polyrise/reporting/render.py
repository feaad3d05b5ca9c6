"""The report's one document model (headings, paragraphs, `Table`s, images), rendered to Markdown and to a
self-contained HTML page by one renderer each. Every text reaches the page escaped, and the page's own script and
style run under a Content-Security-Policy that allows them by their sha256 hashes and nothing else."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from polyrise.reporting.tables import Table


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Image:
    """A PNG, linked from report.md (`plots/<name>`) and embedded in report.html."""

    path: Path


Block = Paragraph | Table | Image


def markdown(title: str, blocks: list[Block]) -> str:
    """report.md: the title, then each block, separated by blank lines."""
    parts = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Image):
            parts.append(f"![{block.path.stem}](plots/{block.path.name})")
        else:
            if block.title:
                parts.append(f"## {block.title}")
            if block.rows:
                if block.caption:
                    parts.append(block.caption)
                lines = ["| | " + " | ".join(block.columns) + " |", "|---" * (len(block.columns) + 1) + "|"]
                lines += ["| " + " | ".join([row.header, *map(str, row.cells)]) + " |" for row in block.rows]
                parts.append("\n".join(lines))
            parts += block.notes
    return "\n\n".join(parts) + "\n"


def _text(text: str, tag: str) -> str:
    return f"<{tag}>{html.escape(text)}</{tag}>"


def html_body(blocks: list[Block]) -> str:
    """The scores tab of report.html: each block as HTML, every text escaped."""
    parts = []
    for block in blocks:
        if isinstance(block, Paragraph):
            parts.append(_text(block.text, "p"))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f'<img alt="{html.escape(block.path.stem, quote=True)}" src="data:image/png;base64,{data}">')
        else:
            if block.title:
                parts.append(_text(block.title, "h2"))
            if block.rows:
                if block.caption:
                    parts.append(_text(block.caption, "p"))
                head = "".join(_text(c, "th") for c in ["", *block.columns])
                rows = "".join(
                    "<tr>" + _text(row.header, "th") + "".join(_text(str(c), "td") for c in row.cells) + "</tr>"
                    for row in block.rows
                )
                parts.append(f"<table><tr>{head}</tr>{rows}</table>")
            parts += [_text(note, "p") for note in block.notes]
    return "".join(parts)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>` and `&` escaped, so no text can close it or open a comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256(text: str) -> str:
    """A CSP source allowing exactly this inline script or style."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def html_page(title: str, blocks: list[Block], data: Any) -> str:
    """report.html: one self-contained file (the scores, plots, styles, script and per-sample `data` embedded; no
    network), allowing only its own script and style by hash (no inline handler, no injected script can run)."""
    assets = resources.files("polyrise") / "data"
    page = (assets / "report.html").read_text(encoding="utf-8")
    style = (assets / "report.css").read_text(encoding="utf-8")
    script = (assets / "report.js").read_text(encoding="utf-8")
    parts = {
        "title": html.escape(title),
        "style": style,
        "style_hash": _sha256(style),
        "scores": html_body(blocks),
        "data": _script_json(data),
        "script": script,
        "script_hash": _sha256(script),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], page)  # one pass: no part is rescanned
