"""``capeformer``: CapeFormer (Shi et al., CVPR 2023) as a cape-bench method.

Backbone (ResNet-50 officially) → :class:`~baselines.capeformer.model.CapeFormerHead`, trained with
the common episodic trainer. Support tokens are computed once per episode and reused for every
query of that episode; with the harness's instance cache the backbone runs once per distinct instance of a
split (one shared backbone: support and query share the ``"image"`` stage) and the head runs on the queries of
several episodes at once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from baselines.common.backbones import FEATURES_AT, build_backbone, features_at
from baselines.common.budget import LINEAGE_BUDGET
from baselines.common.plugin import TorchMethod
from baselines.common.support_tokens import pool_support_tokens
from baselines.common.trainer import Preset
from baselines.capeformer.model import CapeFormerConfig, CapeFormerHead
from cape_bench.api import MethodInfo

PRESETS = {
    # configs/mp100/capeformer/1shots/two_stage_split1_config.py: Adam 1e-5, warm-up 1000 iters,
    # ×0.1 at epochs 160 and 180 of 200, batch 16, ResNet-50 at 256², σ = 2
    "official": Preset("official", iterations=0, epochs=200, milestones=(160, 180), batch_size=16, lr=1e-5,
                       warmup_iters=1000, input_size=256, backbone="resnet50", checkpoint_every=500),
    # CAPE-Synth on a 2-core CPU: genuine ImageNet MobileNetV2 cut at stride 16 (8×8 features at 128², the
    # official token count), fine-tuned with the head, Adam 1e-4 (a frozen backbone does not learn CAPE-Synth:
    # docs/results.md), ×0.1 at 1,280 of 1,600 iterations (CAPE-Synth split 1, 1-shot, 20 episodes: 57.2 % at 800
    # iterations with the official head initialisation, below support-copy + 10; 63.0 % at 1,600)
    "quick": Preset("quick", iterations=1600, batch_size=8, lr=1e-4, warmup_iters=50, milestones=(1280,),
                    input_size=128, backbone="mobilenetv2_s16"),
    # the default job's preset (baselines.common.budget): frozen backbone, half-width head, 800 iterations at 3e-4
    "budget": LINEAGE_BUDGET,
}


class LineageImageModel(nn.Module):
    """Backbone + a CapeFormer-lineage head fed with support *images* (CapeFormer, GraphCape)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_size = feature_size

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return features_at(self.backbone, images, self.feature_size)

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        shots = batch["img_s"].shape[1]
        feat_q = self.features(batch["img_q"])
        feat_s = [self.features(batch["img_s"][:, j]) for j in range(shots)]
        target_s = [batch["target_s"][:, j] for j in range(shots)]
        mask_s = batch["mask_s"]
        # factorised pooling: the heatmaps go through the (linear) bilinear resize instead of resizing every
        # feature channel to the heatmap size — the same tokens up to float rounding, at a fraction of the cost
        tokens = pool_support_tokens(feat_s, target_s, factorized=True)
        outputs = self.head(feat_q, tokens, mask_s[..., None], skeleton=batch["skeletons"])
        weight = (batch["weight_q"] * mask_s)[..., None]
        return self.head.get_loss(outputs, batch["kpts_q"], batch["target_q"], weight)


class LineageImageMethod(TorchMethod):
    """Shared plug-in logic of CapeFormer and GraphCape (support images, lineage head)."""

    head_class: type
    config_class: type
    feature_size = 8
    # batches pad to their largest K only: the head takes the support-order embedding from the official
    # 100-slot grid, so fewer slots give the official result (tests/golden/test_capeformer_golden.py)
    pad_to = None
    _seed = 1  # the run seed (prepare): the head's initial weights follow it

    def prepare(self, ctx) -> None:
        self._seed = ctx.seed
        super().prepare(ctx)

    def head_config(self, in_channels: int):
        size = self.preset.input_size
        return self.sized_head(self.config_class(in_channels=in_channels, input_size=size, heatmap_size=size // 4))

    def build_model(self) -> nn.Module:
        """Backbone + head with the official training initialisation (``TwoStageHead.init_weights`` /
        ``PoseHead.init_weights``: xavier, the last ``kpt_branch`` layers zeroed), seeded by the run seed."""
        backbone, info = build_backbone(self.backbone_name, self.options.get("backbone_weights"),
                                        input_size=self.preset.input_size)
        self.backbone_info = info
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            head = self.head_class(self.head_config(info.out_channels))
            head.init_weights()
        return LineageImageModel(backbone, head, self.feature_size)

    def _support_from_features(self, feats, kpts_norm, visible, support):
        shots = feats.shape[0]  # feats [S, C, h, w]
        tokens, mask = self.model.head.image_support_tokens(
            [feats[j : j + 1] for j in range(shots)], kpts_norm[:, None], visible[:, None])
        return tokens, mask, support.category.skeleton

    def support_state(self, crops, kpts_norm, visible, support):
        return self._support_from_features(self.model.features(crops), kpts_norm, visible, support)

    def predict_normalized(self, state, crops, queries):
        tokens, mask, skeleton = state
        q = crops.shape[0]
        feats = self.model.features(crops)
        return self.model.head.predict(feats, tokens.expand(q, -1, -1), mask.expand(q, -1),
                                       skeleton=[skeleton] * q if self.uses_skeleton else None)

    # per-instance stages: one backbone for support and query
    def instance_stages(self) -> dict[str, str]:
        return {"support": "image", "query": "image"}

    def stage_features(self, stage, crops, view):
        return {"feat": self.model.features(crops)}

    def shared_stage(self, stage):
        return FEATURES_AT.format(size=self.model.feature_size), self.model.backbone

    def support_state_cached(self, feats, kpts_norm, visible, support):
        return self._support_from_features(feats["feat"], kpts_norm, visible, support)

    def predict_normalized_cached(self, states, feats, queries, episode):
        tokens = torch.cat([s[0] for s in states])[episode]  # [Q, K, C]: each query its episode's tokens
        mask = torch.cat([s[1] for s in states])[episode]
        q = tokens.shape[0]
        skeleton = states[0][2]  # one category per call
        return self.model.head.predict(feats["feat"], tokens, mask,
                                       skeleton=[skeleton] * q if self.uses_skeleton else None)

    uses_skeleton = False

    def provenance(self) -> dict:
        info = getattr(self, "backbone_info", None)
        out = super().provenance()
        if info is not None:
            out["backbone_weights"] = info.weights
        return out


class CapeFormer(LineageImageMethod):
    info = MethodInfo(name="capeformer", needs_images=True,
                      paper="Shi et al., Matching is not Enough: A Two-Stage Framework for CAPE, CVPR 2023")
    presets = PRESETS
    sigma = 2.0
    head_class = CapeFormerHead
    config_class = CapeFormerConfig

    def load_official_checkpoint(self, path: Path) -> dict:
        """A released CapeFormer checkpoint (GitHub release ``checkpoints-mp100``): ResNet-50 at 256² only."""
        from baselines.common.convert import load_official_capeformer  # noqa: PLC0415

        if self.backbone_name != "resnet50" or self.preset.input_size != 256:
            raise ValueError(f"capeformer: {path} is an official checkpoint (ResNet-50, 256²); use --set "
                             "methods.capeformer.preset=\"official\" (got backbone "
                             f"{self.backbone_name}, input {self.preset.input_size})")
        out = load_official_capeformer(self.model, path, allow_pickle=bool(self.options.get("allow_pickle")),
                                       log=self.log)
        return {**out, "backbone_weights": "from the official checkpoint"}
