"""The ``budget`` presets: every method trained on CAPE-Synth in a few CPU-minutes, for the default job.

What makes a step cheap, each measured on this 2-core CPU (CapeX, batch 8, 128² crops; docs/results.md):

* the genuine ImageNet MobileNetV2 (cut at stride 16, 8×8 tokens) is **frozen**: no backbone backward pass;
* the lineage head at **half the official width** (:data:`LINEAGE_HEAD`: d 128, 4 heads, FFN 256) **without
  dropout**: 2.0 M head parameters instead of 8.7 M;
* with the smaller head Adam takes a 3× larger step (3e-4), so 800 iterations do what 1,600 at 1e-4 did.

A CapeX training step falls from 0.42 s (quick preset) to 0.12 s; CapeX on CAPE-Synth split 1 (1-shot, 20 episodes)
scores 71.0 % after 800 budget iterations against 71.1 % after 1,600 quick ones. The official presets are
untouched; these are deviations, recorded in every trained model's preset and provenance.
"""

from __future__ import annotations

from baselines.common.trainer import Preset

#: the lineage heads' sizes in the budget presets (``Preset.head``, :class:`~baselines.common.lineage_head.
#: LineageHeadConfig` fields)
LINEAGE_HEAD = {"d_model": 128, "nhead": 4, "dim_feedforward": 256, "similarity_proj_dim": 128,
                "dynamic_proj_dim": 64, "dropout": 0.0}

#: CapeFormer, GraphCape, CapeX (CapeNext adds its fusion module's sizes)
LINEAGE_BUDGET = Preset("budget", iterations=800, batch_size=8, lr=3e-4, warmup_iters=50, milestones=(640,),
                        input_size=128, backbone="mobilenetv2_s16", freeze_backbone=True, head=LINEAGE_HEAD)
