"""Two reference methods that need no pixels.

``support-copy`` is the no-learning floor: every query keypoint goes where the support keypoint
sits in the normalised crop frame, x_q = c_q + (s_q / s_s)(x_s − c_s), averaged over the shots
that see it. ``oracle`` returns the ground truth; under the official averaging (a pair without a
valid keypoint scores 0) it measures the protocol ceiling of a cell.
"""

from __future__ import annotations

import numpy as np

from cape_bench.api import InstanceView, MethodInfo, RunContext


class SupportCopy:
    info = MethodInfo(
        name="support-copy",
        needs_images=False,
        paper="no-learning floor: copy support keypoints in the normalised crop frame",
    )

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"support-copy takes no options, got {sorted(options)}")

    def prepare(self, ctx: RunContext) -> None:
        pass

    def encode_support(self, support: InstanceView) -> np.ndarray:
        """float64[K, 2]: mean over shots of (x_s − c_s) / s_s, over the shots where a keypoint is visible."""
        rel = (support.keypoints_px.astype(np.float64) - support.center_px[:, None, :]) / support.scale[:, None, :]
        vis = support.visible[..., None]
        count = vis.sum(axis=0)
        mean_visible = np.where(vis, rel, 0.0).sum(axis=0) / np.maximum(count, 1)
        # a keypoint no shot sees is never scored (the support mask), but still gets a finite guess
        return np.where(count > 0, mean_visible, rel.mean(axis=0))

    def predict(self, state: np.ndarray, queries: InstanceView) -> np.ndarray:
        xy = queries.center_px[:, None, :].astype(np.float64) + queries.scale[:, None, :] * state[None]
        return xy.astype(np.float32)

    def provenance(self) -> dict:
        return {"weights": "none (no parameters)"}


class Oracle:
    info = MethodInfo(
        name="oracle",
        needs_images=False,
        reads_query_ground_truth=True,
        paper="returns the ground truth: the protocol ceiling",
    )

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"oracle takes no options, got {sorted(options)}")

    def prepare(self, ctx: RunContext) -> None:
        pass

    def encode_support(self, support: InstanceView) -> None:
        return None

    def predict(self, state: None, queries: InstanceView) -> np.ndarray:
        return queries.keypoints_px.astype(np.float32)

    def provenance(self) -> dict:
        return {"weights": "none (returns the ground truth)"}
