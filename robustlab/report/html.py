"""Small HTML building blocks for self-contained pages: every value escaped, styles inline, no scripts, no links
to anything outside the page."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;
  padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}th{background:#f4f4f4;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.notice{border-left:4px solid #c80;background:#fff6e5;padding:.6em 1em;margin:1em 0}
.error{border-left:4px solid #c00;background:#fdecec;padding:.6em 1em;margin:1em 0}
.published{color:#06c}.bad{color:#c00;font-weight:bold}.ok{color:#080}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
"""


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def png_img(png: bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG inline as base64 (no file, no network)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def notice(text: str, kind: str = "notice") -> str:
    """A highlighted paragraph (``notice`` or ``error``)."""
    return f'<div class="{kind}">{esc(text)}</div>'


def pre(text: str) -> str:
    """Preformatted text (configs)."""
    return f"<pre>{esc(text)}</pre>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str | None = None,
          row_attrs: Sequence[str] | None = None) -> str:
    """A table whose cells are already-escaped HTML (use :func:`cell`); ``row_attrs`` adds attributes per row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>{''.join(row)}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cell(value: object, *, num: bool = False, css: str = "", col: str | None = None) -> str:
    """One escaped ``<td>``; ``col`` names the stored column it shows (``data-col``) so tests can find it."""
    classes = " ".join(c for c in ("num" if num else "", css) if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' data-col="{esc(col)}"' if col else "")
    return f"<td{attrs}>{esc(value)}</td>"


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML5 document with inline styles."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
