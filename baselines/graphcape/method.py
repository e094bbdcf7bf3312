"""``graphcape``: PoseAnything / GraphCape (Hirschorn & Avidan, ECCV 2024) as a cape-bench method.

Official: ``orhir/PoseAnything@7f1253f``, ``models/models/detectors/pam.py`` (``PoseAnythingModel``: one SwinV2
backbone for support and query, ``forward_features`` + bilinear x2), ``models/models/keypoint_heads/head.py``
(``PoseHead``) and ``models/models/utils/encoder_decoder.py`` (graph decoder ``'pre'``); configs
``configs/1shots/graph_split{1..5}_config.py`` (SwinV2-T) and ``configs/1shot-swin/...`` (SwinV2-S). The head is
:class:`~baselines.graphcape.model.GraphCapeHead`; the plug-in is CapeFormer's (support *images*, tokens pooled
once per episode) with PoseAnything's differences:

* σ = 1 support/target heatmaps (``TopDownGenerateTargetFewShot`` sigma in the config);
* the category skeleton feeds the graph decoder: ``batch["skeletons"]`` in training (``img_metas[b]
  ['sample_skeleton'][0]`` officially) and ``support.category.skeleton`` at inference, used as 0-based indices
  exactly as the official ``adj_from_skeleton`` does (spec §4.2 step 5: check the index base of the annotation
  files; an index ≥ K falls into a masked padding slot and is dropped, as officially);
* feature map 16 x 16 at 256 px (SwinV2 stride 32, bilinear x2): the head runs on ``input_size / 16`` cells, a
  CNN backbone's map is bilinearly resized to that size.

Presets: ``official`` (spec §4.3) and ``quick`` (CapeFormer's quick shape — genuine ImageNet MobileNetV2 cut at
stride 16, fine-tuned, 128² crops, 8 x 8 features, Adam 1e-4 — for 1,600 iterations; sized for CAPE-Synth on a
2-core CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.capeformer.method import LineageImageMethod
from baselines.common.convert import load_official_graphcape
from baselines.common.budget import LINEAGE_BUDGET
from baselines.common.trainer import Preset
from baselines.graphcape.model import GraphCapeConfig, GraphCapeHead
from cape_bench.api import MethodInfo, RunContext

PRESETS = {
    # configs/1shots/graph_split1_config.py: Adam 1e-5 (backbone included), warm-up 1000 iters (ratio 0.001),
    # x0.1 at epochs 160 and 180 of 200, batch 16 (SwinV2-T 1-shot; the SwinV2-S and 5-shot configs use 8),
    # SwinV2-T at 256², σ = 1
    "official": Preset("official", iterations=0, epochs=200, milestones=(160, 180), batch_size=16, lr=1e-5,
                       warmup_iters=1000, input_size=256, backbone="swinv2_tiny", checkpoint_every=500),
    # CAPE-Synth on a 2-core CPU, CapeFormer's quick shape: genuine ImageNet MobileNetV2 cut at stride 16 (8x8
    # features at 128²), fine-tuned with the head, Adam 1e-4, for twice CapeFormer's iterations: without the
    # support-order embedding a keypoint token is only its pooled feature (CAPE-Synth split 1, 1-shot, 20 episodes:
    # 57.5 % at 800 iterations, below support-copy + 10)
    "quick": Preset("quick", iterations=1600, batch_size=8, lr=1e-4, warmup_iters=50, milestones=(1280,),
                    input_size=128, backbone="mobilenetv2_s16"),
    # the default job's preset (baselines.common.budget): frozen backbone, half-width head, 800 iterations at 3e-4
    "budget": LINEAGE_BUDGET,
}

#: backbones of the released PoseAnything checkpoints (tiny / small)
OFFICIAL_BACKBONES = ("swinv2_tiny", "swinv2_small")


class GraphCape(LineageImageMethod):
    """PoseAnything / GraphCape: support images + keypoints + the category skeleton.

    Options (``[methods.graphcape.options]``): ``backbone_weights`` (``"random"`` or a file; default: genuine
    weights found offline), ``allow_pickle`` (trust an official ``.pth`` whose ``meta`` holds pickled objects).
    """

    info = MethodInfo(name="graphcape", needs_images=True, extra_inputs=("category skeleton",),
                      paper="Hirschorn & Avidan, Pose Anything: A Graph-Based Approach for Category-Agnostic Pose "
                            "Estimation, ECCV 2024")
    presets = PRESETS
    sigma = 1.0
    head_class = GraphCapeHead
    config_class = GraphCapeConfig
    uses_skeleton = True
    # training batches pad to their widest category only (collate keeps a slot for an out-of-range skeleton index,
    # which lands in a masked slot as officially): padded slots are masked everywhere (self-attention keys, GCN
    # rows/columns, losses), so the losses equal those of the official 100-slot layout to float rounding
    # (tests/integration/test_graphcape_pomnet_methods.py) at about half the cost of a training step
    pad_to = None

    _log: Any = print

    @property
    def feature_size(self) -> int:  # type: ignore[override]
        """Head feature side (cells): 16 at 256 px (official SwinV2 8x8 upsampled x2), 8 at 128 px."""
        return self.preset.input_size // 16

    def prepare(self, ctx: RunContext) -> None:
        self._log = ctx.log
        super().prepare(ctx)

    def load_official_checkpoint(self, path: Path) -> dict:
        """A released PoseAnything checkpoint (``backbone.*`` SwinV2, ``keypoint_head.*``), strictly loaded."""
        if self.backbone_name not in OFFICIAL_BACKBONES or self.preset.input_size != 256:
            raise ValueError(f"graphcape: official checkpoints need the official model (backbone swinv2_tiny or "
                             f"swinv2_small at 256 px, preset 'official'); got {self.backbone_name} at "
                             f"{self.preset.input_size} px")
        out = load_official_graphcape(self.model, path, allow_pickle=bool(self.options.get("allow_pickle")),
                                      log=self._log)
        self._official_loaded = str(path)
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        if getattr(self, "_official_loaded", None):
            out["backbone_weights"] = f"from the official checkpoint {self._official_loaded}"
        return out
