"""``cape-bench report``: one self-contained HTML file per run directory (or per set of runs).

Rendered only from what a run stored (run.json, cells/, predictions/, scores/ and the score tables);
no model runs. Each section is a small module here with its own template in ``templates/``:

=================  ====================  ===============================================================
section            module                template
=================  ====================  ===============================================================
provenance         ``provenance.py``     ``templates/provenance.html.j2``
headline table     ``headline.py``       ``templates/headline.html.j2`` (+ ``published.csv``)
PCK vs threshold   ``thresholds.py``     ``templates/thresholds.html.j2``
per category       ``categories.py``     ``templates/categories.html.j2``
per keypoint       ``keypoints.py``      ``templates/keypoints.html.j2``
qualitative        ``qualitative.py``    ``templates/qualitative.html.j2``
CapeNext's claims  ``capenext_claims.py`` ``templates/capenext_claims.html.j2``
page frame         (this file)           ``templates/base.html.j2`` (styles, navigation, sort script)
=================  ====================  ===============================================================

Nothing heavy (pandas, matplotlib, jinja2) is imported until :func:`build_report` runs.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from cape_bench.report.runs import ReportError

__all__ = ["ReportError", "build_report", "default_report_path", "render_html", "SECTIONS"]

# (anchor id, navigation title, module name); the template of each is ``templates/<module>.html.j2``.
SECTIONS = (
    ("provenance", "Provenance", "provenance"),
    ("headline", "Headline table", "headline"),
    ("thresholds", "PCK vs threshold", "thresholds"),
    ("categories", "Per category", "categories"),
    ("keypoints", "Per keypoint", "keypoints"),
    ("error-analysis", "Error analysis", "error_analysis"),
    ("capenext-claims", "CapeNext's claims", "capenext_claims"),
    ("qualitative", "Qualitative", "qualitative"),
    ("speed", "Speed", "speed"),
)


def reports_dir() -> Path:
    """The checkout's top-level ``reports/`` folder when running from a checkout, else ``./reports``."""
    in_checkout = Path(__file__).resolve().parents[2] / "reports"
    return in_checkout if in_checkout.is_dir() else Path.cwd() / "reports"


def default_report_path(labels: list[str]) -> Path:
    """``reports/<run name>.html``, or a combined name (``a+b.html``; shortened with a hash when long)."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", label) for label in labels]
    name = "+".join(safe)
    if len(name) > 100:
        digest = hashlib.sha256("\n".join(labels).encode()).hexdigest()[:8]
        name = f"{safe[0][:60]}+{len(safe) - 1}-more-{digest}"
    return reports_dir() / f"{name}.html"


def render_html(runs) -> str:
    """The whole report of loaded runs (:func:`cape_bench.report.runs.load_runs`) as one HTML string."""
    import importlib  # noqa: PLC0415

    from jinja2 import Environment, PackageLoader, StrictUndefined  # noqa: PLC0415
    from markupsafe import Markup  # noqa: PLC0415

    from cape_bench import __version__  # noqa: PLC0415
    from cape_bench.report.figures import method_colors  # noqa: PLC0415
    from cape_bench.report.runs import method_rows  # noqa: PLC0415

    env = Environment(loader=PackageLoader("cape_bench.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    colors = method_colors([label for _, _, label in method_rows(runs)])
    sections = []
    for anchor, title, module_name in SECTIONS:
        module = importlib.import_module(f"cape_bench.report.{module_name}")
        context = module.build(runs, colors)
        html = env.get_template(f"{module_name}.html.j2").render(s=context)
        sections.append({"id": anchor, "title": title, "html": Markup(html)})
    labels = [r.label for r in runs]
    datasets = sorted({r.dataset for r in runs})
    title = f"cape-bench report: {', '.join(labels)}"
    subtitle = f"dataset {', '.join(datasets)} · {len(labels)} run{'s' if len(labels) > 1 else ''}"
    return env.get_template("base.html.j2").render(
        title=title, subtitle=subtitle, sections=sections, version=__version__,
        rendered=time.strftime("%Y-%m-%d %H:%M"), run_args=" ".join(str(r.path) for r in runs),
    )


def build_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Render the HTML report of one or more run directories and write it.

    Args:
        run_dirs: scored run directories. Several are combined into one report when they share the
            protocol version, metric version and dataset; a method present in several runs gets the
            run name appended.
        out: output file, or a folder to put ``<run name>.html`` in; default ``reports/<run name>.html``
            (see :func:`default_report_path`).

    Returns:
        The path written.

    Raises:
        ReportError: runs that cannot be combined. FileNotFoundError: not a (scored) run directory.
    """
    from cape_bench.report.runs import load_runs  # noqa: PLC0415
    from cape_bench.store import atomic_write_text  # noqa: PLC0415

    runs = load_runs([Path(p) for p in run_dirs])
    html = render_html(runs)
    path = default_report_path([r.label for r in runs])
    if out is not None:
        path = Path(out) / path.name if Path(out).is_dir() else Path(out)
    atomic_write_text(path, html)
    return path
