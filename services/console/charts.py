"""Bar charts drawn on the server as SVG: no script, no chart library to load, readable offline
and by a screen reader (a title, and every bar's value as text; the page shows the same figures
in a table beside it)."""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from markupsafe import Markup

ROW, LABEL_W, BAR_W, VALUE_W = 26, 150, 300, 150


def bars(rows: list[tuple[str, int]], fmt: Callable[[int], str], title: str,
         limit: int = 20) -> Markup:
    rows = sorted(rows, key=lambda r: -(r[1] or 0))[:limit]
    if not rows:
        return Markup("")
    top = max((v or 0) for _, v in rows) or 1
    height = ROW * len(rows) + 8
    width = LABEL_W + BAR_W + VALUE_W
    parts = [f'<svg class="chart" role="img" aria-labelledby="c-{abs(hash(title))}" '
             f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="c-{abs(hash(title))}">{escape(title)}</title>']
    for i, (label, value) in enumerate(rows):
        y = 4 + i * ROW
        w = max(1, round(BAR_W * (value or 0) / top))
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 17}" text-anchor="end" class="chart-label">'
            f'{escape(str(label)[:22])}</text>'
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{w}" height="{ROW - 8}" class="chart-bar">'
            f'<title>{escape(str(label))}: {escape(fmt(value))}</title></rect>'
            f'<text x="{LABEL_W + w + 6}" y="{y + 17}" class="chart-value">'
            f'{escape(fmt(value))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
