"""Why methods fail: error analysis of a run directory, computed from stored arrays only.

:func:`analyze_run` reads a run's predictions, episodes and categories, plus the annotation files
recorded in ``run.json`` (for the support keypoints, which the predictions table does not hold, and
CAPE-Synth's per-instance metadata), and writes ``RUN_DIR/analysis/*.csv``. The metrics are the pure
functions of :mod:`cape_bench.metrics.taxonomy`, :mod:`~cape_bench.metrics.ambiguity` and
:mod:`~cape_bench.metrics.variation`; this module only loads, groups and writes.

Every row starts with ``analysis_version`` (:data:`ANALYSIS_VERSION`), ``alpha`` (the threshold on the
normalised distance), then ``method, split, shots``. Rates and PCKs are fractions in [0, 1]; an empty
cell is NaN ("not scored"). Error rates are shares of the *scored* keypoints (query and every support
visible), pooled over keypoints, so ``good`` is keypoint-level PCK@alpha.

Tables:

``errors_by_method.csv``
    ``scored`` (keypoints), ``good, inversion, swap, jitter, miss`` (rates summing to 1).
``errors_by_supercategory.csv`` / ``errors_by_category.csv``
    the same per ``supercategory`` / per ``category_id, category, supercategory``.
``errors_by_keypoint.csv``
    per ``category_id, category, supercategory, kpt, description``, with ``mirror_kpt`` (the
    left/right partner read from the descriptions; empty when none) and ``polysemous`` (1 / 0;
    empty for unnamed keypoints), then ``scored`` and the five rates.
``ambiguity.csv``
    one row per cell: ``n_polysemous, n_unique`` (scored keypoints), ``pck_polysemous, pck_unique,
    pck_gap`` (unique − polysemous), ``swap_rate_polysemous, swap_rate_unique,
    inversion_rate_polysemous, inversion_rate_unique``, ``swap_rate_duplicate_name`` (swap rate of
    keypoints whose description repeats within their category, e.g. the nine "left sleeve" points)
    and ``same_name_swap_share`` (share of all swaps that landed on a keypoint with the same
    description).
``variation_by_category.csv``
    ``category_id, category, supercategory, n_pairs`` (pairs with a scored keypoint), ``pck`` (mean
    per-pair PCK over them), ``n_queries, query_pck_std`` (std over queries of per-query PCK),
    ``n_multi_support_queries, support_var`` (mean over queries seen with ≥ 2 support sets of the
    variance of their PCK across sets), ``pose_slope`` (PCK per pose-dissimilarity quartile step).
``pose_quartiles.csv``
    per ``category_id, category, supercategory, quartile`` (1 = most similar support):
    ``n_pairs, dissimilarity_min, dissimilarity_max, pck``. Dissimilarity: Procrustes residual of the
    support keypoints aligned onto the query's, in normalised crop units.
``trends.csv``
    PCK against a pair factor, quantile bins formed within each category and pooled: ``factor``
    (``pose_dissimilarity``, or ``synth:<field>`` for each per-instance CAPE-Synth field: the support
    vs query difference, a mismatch share for categorical fields), ``bin`` (1..4; a factor with ties
    may fill only some bins), ``n_pairs, factor_min, factor_max, pck`` and ``slope`` (least-squares
    PCK per bin step over the filled bins, the same on every row of a factor). The value ranges of
    pooled bins overlap, because each category has its own quartile edges.
``notes.csv``
    ``analysis_version, table, note``: why a table or part of one is absent or restricted.

:func:`probe_table` (text-probe ΔPCK between two runs) and :func:`polysemy_knob_table` (PCK against
CAPE-Synth's polysemy knob over several runs) return tables and write nothing.

Cost: one vectorised pass per (cell, category) and one per (split, shots) for the method-independent
pair factors (support poses, synth metadata); Python loops run over categories and annotation
instances, never over pairs or keypoints.
"""

from __future__ import annotations

from cape_bench.analysis.across_runs import NOT_APPLICABLE, NOT_COMPARABLE, polysemy_knob_table, probe_table  # noqa: F401
from cape_bench.analysis.inputs import ANALYSIS_DIR, ANALYSIS_VERSION, POSE_FACTOR, SYNTH_PREFIX  # noqa: F401
from cape_bench.analysis.run import analyze_run  # noqa: F401
