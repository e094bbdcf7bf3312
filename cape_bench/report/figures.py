"""Figure helpers: matplotlib charts as inline SVG, images as PNG data URIs.

Charts are inline SVG with text kept as text (``svg.fonttype = none``: smaller, and the page's own
fonts render it). Each figure gets its own ``svg.hashsalt`` so the ids matplotlib generates for
markers and clip paths never collide between the SVGs of one HTML page.
"""

from __future__ import annotations

import base64
import io
import itertools

from markupsafe import Markup

_counter = itertools.count()

# One colour per method, stable across every chart of a report: matplotlib's tab10 without its red (red marks a
# missed keypoint in the qualitative examples), plus a dark blue.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#e377c2",
           "#393b79")


def method_colors(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def pyplot():
    """matplotlib.pyplot on the non-interactive SVG backend, with the report's style."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("svg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update({
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#dddddd",
        "grid.linewidth": 0.6,
        "axes.axisbelow": True,
    })
    return plt


def svg(fig, title: str = "") -> Markup:
    """An inline ``<svg>`` element for ``fig`` (closed afterwards); ``title`` becomes its accessible name."""
    import matplotlib  # noqa: PLC0415

    plt = pyplot()
    with matplotlib.rc_context({"svg.hashsalt": f"cape-bench-figure-{next(_counter)}"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and the DOCTYPE (which names an external DTD)
    # responsive: let CSS scale the chart down to the column width, keeping its aspect
    head_end = text.index(">")
    head = text[:head_end]
    head = head.replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" class="chart" ', 1)
    return Markup(head + text[head_end:])


def png_data_uri(rgb) -> str:
    """``data:image/png;base64,…`` of an RGB uint8[H, W, 3] array, palette-quantised to keep it small."""
    from PIL import Image  # noqa: PLC0415

    img = Image.fromarray(rgb).convert("RGB")
    img = img.quantize(colors=128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _attr(text: str) -> str:
    return (text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;"))
