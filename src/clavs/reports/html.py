"""The report page: one self-contained `index.html` (CSS inline, figures inline as base64 PNG data
URIs, no script or font from the network) with links to each figure's PNG and SVG beside it and to
each run's files.

A small inline script writes, once the page has loaded, how many images decoded into
`<p id="load-status" data-images=.. data-loaded=.. data-height=..>`: the browser test (and
`clavs report --screenshot`) read it from Chromium's DOM dump.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from clavs.reports.figures import SavedFigure

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #1d2330; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccd; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #e3e6ee; }
figcaption { font-size: .92em; color: #3c4456; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #d5d9e3; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f1f3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff7e0; border-left: 4px solid #e0b100; padding: .4em .8em; margin: .4em 0; }
.meta { color: #5b6377; font-size: .9em; } code { background: #f1f3f8; padding: 0 .25em; }
"""

LOAD_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var s = document.getElementById('load-status');
  s.setAttribute('data-images', imgs.length);
  s.setAttribute('data-loaded', ok);
  s.setAttribute('data-height', Math.ceil(document.documentElement.scrollHeight));
  s.textContent = 'page loaded: ' + ok + ' of ' + imgs.length + ' images decoded';
});
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def relative_link(target: Path, page_dir: Path) -> str:
    """A link from the page's folder to `target` (relative, so the report and the runs can move together)."""
    return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))).as_posix()


def figure_html(fig: SavedFigure, caption: str, page_dir: Path, *, alt: str) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    links = (f'<a href="{esc(relative_link(fig.png_path, page_dir))}">PNG</a> · '
             f'<a href="{esc(relative_link(fig.svg_path, page_dir))}">SVG</a>')
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption} ({links})</figcaption></figure>")


def table_html(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """A table of already-escaped cells; columns in `numeric` are right-aligned."""
    numeric = numeric or set()
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def notes_html(notes: list[str]) -> str:
    return "".join(f'<p class="note">{esc(n)}</p>' for n in notes)


@dataclass
class Section:
    anchor: str
    title: str
    body: str  # HTML


@dataclass
class Page:
    title: str
    meta: str  # HTML: what the report covers
    sections: list[Section] = field(default_factory=list)

    def render(self) -> str:
        toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in self.sections)
        body = "".join(f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                       for s in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{esc(self.title)}</h1><div class=\"meta\">{self.meta}</div><ul>{toc}</ul>{body}"
                '<p id="load-status" class="meta" data-images="" data-loaded="" data-height="">'
                "page not loaded</p>"
                f"<script>{LOAD_SCRIPT}</script></body></html>\n")
