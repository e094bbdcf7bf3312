"""CAPE-Synth: a procedurally generated category-agnostic pose benchmark in the MP-100 format.

Objects are articulated parametric shapes (quadrupeds, animal faces, birds, humanoids, hands,
insects, furniture, vehicles, garments: 100 categories in 9 supercategories) rendered with
numpy + PIL. The two phenomena CapeNext targets are knobs (:class:`Knobs`): polysemous
keypoint names shared across supercategories, and intra-category variation (pose,
proportions, viewpoint, rotation, appearance, clutter, occlusion, truncation).

Entry points: :func:`generate` writes a dataset, :func:`show` draws a sample sheet.
"""

from cape_bench.synth.dataset import (
    DEFAULT_IMAGE_SIZE, DEFAULT_INSTANCES, SYNTH_VERSION, dataset_summary, generate, plan_categories, plan_splits,
)
from cape_bench.synth.knobs import Knobs
from cape_bench.synth.show import show
from cape_bench.synth.templates import catalog

__all__ = [
    "DEFAULT_IMAGE_SIZE", "DEFAULT_INSTANCES", "SYNTH_VERSION", "Knobs", "catalog", "dataset_summary", "generate",
    "plan_categories", "plan_splits", "show",
]
