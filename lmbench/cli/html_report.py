"""The comparison as one self-contained HTML page (`report.html`): tables, notes and the plots
inlined as PNG data URIs, no script and nothing fetched from elsewhere, so that the page reads the
same opened from disk, mailed, or in the MLflow UI's artifact view (which shows an HTML artifact in
a sandboxed frame). What goes on the page is report.py's choice; this module only writes HTML.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

# Narrow and dense: in the MLflow UI the page gets the artifact view's pane, a third of a laptop's
# window; text cells wrap rather than hide columns off to the right.
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 8px 12px; color: #1f2328; }
h1 { font-size: 17px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 18px 0 6px; }
p.sub { margin: 0 0 8px; color: #59636e; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #d1d9e0; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
p.verdict { margin: 8px 0; }
ul.notes { padding-left: 18px; margin: 8px 0; }
ul.notes li { margin: 3px 0; }
p.error { margin: 2px 0 8px 18px; color: #59636e; font-size: 13px; }
img { display: block; max-width: 100%; margin: 6px 0 14px; }
"""


def table(headers: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    """A table of text cells; numeric columns right-aligned."""
    def cell(tag: str, text: str, num: bool) -> str:
        return f"<{tag}{' class=num' if num else ''}>{escape(text)}</{tag}>"

    head = "".join(cell("th", h, n) for h, n in zip(headers, numeric))
    body = "".join("<tr>" + "".join(cell("td", c, n) for c, n in zip(row, numeric)) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def notes(lines: list[str]) -> str:
    return '<ul class="notes">' + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>" if lines else ""


def verdict(head: str, sentence: str) -> str:
    """The sentence that ends a comparison, after its head in bold."""
    return f"<p class=verdict><b>{escape(head)}:</b> {escape(sentence)}</p>"


def explained(items: list[tuple[str, str]]) -> str:
    """(what happened, the paragraph a run's user was shown) per item."""
    return "".join(f"<p>{escape(what)}</p><p class=error>{escape(why)}</p>" for what, why in items)


def images(paths: list[Path]) -> str:
    return "".join(
        f'<img alt="{escape(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in paths
    )


def page(title: str, subtitle: str, parts: list[str]) -> str:
    body = "\n".join(part for part in parts if part)
    return (
        f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n<p class=sub>{escape(subtitle)}</p>\n"
        f"{body}\n</body></html>\n"
    )


def heading(text: str) -> str:
    return f"<h2>{escape(text)}</h2>"
