"""A tiny document model rendered to Markdown and to self-contained HTML (figures embedded as data URIs,
so report.html shows every figure wherever it is opened; report.md links figures/ relatively)."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .tables import _fmt, to_markdown


@dataclass
class H:
    level: int
    text: str


@dataclass
class P:
    text: str


@dataclass
class Table:
    df: pd.DataFrame


@dataclass
class Img:
    rel: str        # path relative to the report folder (figures/x.png)
    caption: str


@dataclass
class Pre:
    text: str


@dataclass
class Ul:
    items: list


def to_md(blocks: list) -> str:
    """Markdown text of the document."""
    out = []
    for b in blocks:
        if isinstance(b, H):
            out.append("#" * b.level + " " + b.text + "\n")
        elif isinstance(b, P):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out.append(to_markdown(b.df))
        elif isinstance(b, Img):
            out.append(f"![{b.caption}]({b.rel})\n\n*{b.caption}*\n")
        elif isinstance(b, Pre):
            out.append("```\n" + b.text.rstrip("\n") + "\n```\n")
        elif isinstance(b, Ul):
            out.append("\n".join(f"- {x}" for x in b.items) + "\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then the two bits of inline Markdown we use: `code` and **bold**."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
div.table{max-width:100%;overflow-x:auto}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border-bottom:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #444}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}code{background:#f3f3f3;padding:0 .2em;overflow-wrap:anywhere}
li,p{overflow-wrap:anywhere}"""


def to_html(blocks: list, title: str, base: Path) -> str:
    """Self-contained HTML; images under ``base`` are embedded as base64 PNG data URIs."""
    return embed_images(html_parts(blocks, title), base)


def html_parts(blocks: list, title: str) -> list:
    """The HTML document as text pieces, with each figure left as its :class:`Img` block: everything but
    the image bytes, so the report lays it out while the figures are still being drawn."""
    out: list = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, H):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, P):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            # long column names (best_top1_pct) may break after an underscore: tables fit the page
            head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in b.df.columns)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(x))}</td>" for x in row) + "</tr>"
                           for row in b.df.itertuples(index=False))
            out.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif isinstance(b, Img):
            out.append(b)
        elif isinstance(b, Pre):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Ul):
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.items) + "</ul>")
    out.append("</body></html>")
    return out


def embed_images(parts: list, base: Path) -> str:
    """:func:`html_parts`' pieces joined, each figure read from ``base`` and embedded as a PNG data URI."""
    out = []
    for b in parts:
        if isinstance(b, Img):
            data = base64.b64encode((base / b.rel).read_bytes()).decode()
            b = (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}" '
                 f'data-file="{html.escape(b.rel)}"><figcaption>{_inline(b.caption)}</figcaption></figure>')
        out.append(b)
    return "\n".join(out) + "\n"
