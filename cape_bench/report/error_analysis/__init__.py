"""Why methods fail: the error-analysis tables of ``cape-bench score`` (``RUN_DIR/analysis/*.csv``).

Read only; nothing is recomputed from predictions except the CAPE-Synth polysemy-knob table, which
:func:`cape_bench.analysis.polysemy_knob_table` builds across runs. Shown:

* the error taxonomy (good / jitter / inversion / swap / miss) per method, as stacked bars, and per
  supercategory (one panel per method and shots), plus a sortable per-category table;
* the polysemy gap (``ambiguity.csv``);
* text-probe ΔPCK (:func:`cape_bench.analysis.probe_table` between runs, or between a method and its
  probe variant inside one run; the rules are :func:`probe_run_pairs` and :func:`probe_variants`);
* spread and sensitivity (``variation_by_category.csv``), PCK against pose dissimilarity
  (``pose_quartiles.csv``) and the CAPE-Synth factor trends (``trends.csv``).

Every number is a mean over the splits a method ran (the headline's averaging); per category it is the
category's own split. Methods with every scored keypoint good in every cell (``oracle``) are left out
of everything but the per-method bars: they have no errors to analyse.
"""

from __future__ import annotations

from cape_bench.report.error_analysis.loading import (  # noqa: F401
    _MAX_TREND_PANELS,
    _RUN_ONLY_KEYS,
    CELL,
    ERROR_COLORS,
    ERROR_ORDER,
    PROBE_METRIC,
    PROBE_OPTIONS,
    SHOWN_TABLES,
    _mean,
    _num,
    _pct,
    _pd,
    load_analysis,
    perfect_labels,
)
from cape_bench.report.error_analysis.polysemy import (  # noqa: F401
    _knob_table,
    _polysemy_rows,
)
from cape_bench.report.error_analysis.probes import (  # noqa: F401
    _flatten,
    _is_probe_key,
    _is_probe_method,
    _probe_flags,
    _probe_rows,
    _probes,
    probe_run_pairs,
    probe_variants,
)
from cape_bench.report.error_analysis.section import (  # noqa: F401
    build,
)
from cape_bench.report.error_analysis.taxonomy import (  # noqa: F401
    _bar_segments,
    _category_table,
    _legend,
    _method_figure,
    _supercategory_figure,
    _taxonomy_rows,
)
from cape_bench.report.error_analysis.variation import (  # noqa: F401
    _quartile_figure,
    _quartiles,
    _spread_rows,
    _trend_figure,
    _trends,
)
