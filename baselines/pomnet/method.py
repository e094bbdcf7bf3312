"""``pomnet``: POMNet (Xu et al., Pose for Everything, ECCV 2022) as a cape-bench method.

Official: ``luminxu/Pose-for-Everything@ea9c039``, ``pomnet/models/detectors/transformer_pose.py``
(``TransformerPose``: ``encoder_sample`` for the supports and ``encoder_query`` for the query, two independent
ResNet-50s) and ``pomnet/models/keypoint_heads/transformer_head.py`` (``TransformerHead``, here
:class:`~baselines.pomnet.model.TransformerHead`); config ``configs/mp100/pomnet/pomnet_mp100_split1_256x256_1shot.py``.

* Training: support heatmaps (σ = 2) pool the support features into keypoint tokens, the head predicts one
  heatmap per keypoint slot, loss = official ``get_loss`` (``JointsMSELoss(use_target_weight=True)`` with weights
  ``target_weight_q * mask_s``).
* Inference: support tokens from the support crops and their σ = 2 MSRA heatmaps, then :func:`pomnet_predict` on
  the category's real keypoints only (padded slots cannot change them, see ``baselines/pomnet/model.py``), decoded
  with the official heatmap decoding (argmax + quarter offset) to crop px and, by the plug-in, to image px
  (``transform_preds``; identical to decoding with the heatmap-sized output frame).
* Sizes: three stride-2 deconvolutions give heatmaps 8x the feature map; the feature map is kept at
  ``input_size / 32`` cells (resized bilinearly if a backbone gives another size), so the heatmaps are
  ``input_size / 4``: 64² at 256 px (official), 32² at 128 px (quick) — the size of the training targets.

Presets: ``official`` (spec §2.3; two ResNet-50 encoders, every keypoint slot padded to the official 100 as the
released code runs them) and ``quick``, sized for CAPE-Synth on a 2-core CPU, with three deviations, all recorded
in the provenance:

* the two encoders are genuine ImageNet MobileNetV2s cut at stride 16 (``mobilenetv2_s16``), fine-tuned, at 128²
  crops (a frozen backbone is shared by support and query: frozen ImageNet features are the same for both);
* keypoint slots padded only to the batch's largest category: no real keypoint's output or loss changes, but the
  per-keypoint branch skips the empty slots;
* deconvolution width 64 instead of 256 (option ``deconv_width``): the per-keypoint relation/deconv branch is
  ~90 % of the training cost (≈0.37 GMAC per keypoint and image at 128 px with width 256, ≈0.045 with 64); at the
  official width a quick-preset step takes ~8x longer.

Instance cache (harness, :class:`cape_bench.api.InstanceCachedMethod`): the encoders run once per distinct
instance of a split — stage ``"image"`` for the shared encoder, ``"support_image"`` / ``"query_image"`` for the
official two (each instance is encoded only by the encoder(s) of the roles it plays); support tokens are pooled
once per episode, and the head runs on the queries of several episodes at once, on the category's K real keypoint
slots only (:meth:`POMNet.predict_normalized_cached`, same slots as :func:`pomnet_predict` without ``pad_to``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common.backbones import FEATURES_AT, build_backbone, features_at, resize_features
from baselines.common.convert import load_official_pomnet
from baselines.common.heatmaps import keypoints_from_heatmaps_crop
from baselines.common.plugin import TorchMethod
from baselines.common.support_tokens import msra_support_targets
from baselines.common.trainer import Preset
from baselines.pomnet.model import MAX_KEYPOINTS, POMNetHeadConfig, TransformerHead, pomnet_predict
from cape_bench.api import InstanceView, MethodInfo, RunContext

#: deconvolution width of the per-keypoint branch per preset (official ``num_deconv_filters`` = (256, 256, 256))
DECONV_WIDTH = {"quick": 64, "budget": 32}
OFFICIAL_DECONV_WIDTH = 256

PRESETS = {
    # configs/mp100/pomnet/pomnet_mp100_split1_256x256_1shot.py: Adam 5e-4, no weight decay, one param group incl.
    # both backbones; linear warm-up 500 iters (ratio 0.001); x0.1 at epochs 170 and 200 of 210; batch 16 per GPU;
    # ResNet-50 x 2 at 256², σ = 2
    "official": Preset("official", iterations=0, epochs=210, milestones=(170, 200), batch_size=16, lr=5e-4,
                       warmup_iters=500, input_size=256, backbone="resnet50", checkpoint_every=500),
    # CAPE-Synth on a 2-core CPU (CapeFormer's quick shape): the official two encoders, each a genuine ImageNet
    # MobileNetV2 cut at stride 16 and fine-tuned, 128² crops (features resized to 4x4 -> 32x32 heatmaps), deconv
    # width 64 (DECONV_WIDTH), the official Adam 5e-4
    "quick": Preset("quick", iterations=800, batch_size=8, lr=5e-4, warmup_iters=50, milestones=(640,),
                    input_size=128, backbone="mobilenetv2_s16"),
    # the default job's preset (baselines.common.budget): one frozen MobileNetV2 shared by support and query, the
    # transformer at half width (E 128, 4 heads, FFN 256) without dropout, deconv width 32, 800 iterations
    "budget": Preset("budget", iterations=800, batch_size=8, lr=5e-4, warmup_iters=50, milestones=(640,),
                     input_size=128, backbone="mobilenetv2_s16", freeze_backbone=True,
                     head={"embed_dims": 128, "num_heads": 4, "feedforward_channels": 256, "dropout": 0.0}),
}


class POMNetEncoders(nn.Module):
    """POMNet's image encoders: ``query`` (official ``encoder_query``) and ``support`` (``encoder_sample``).

    Args:
        query: backbone of the query image.
        support: backbone of the support images, or None to share ``query`` (quick preset).
    """

    def __init__(self, query: nn.Module, support: nn.Module | None = None) -> None:
        super().__init__()
        self.query = query
        self.support = support

    @property
    def shared(self) -> bool:
        return self.support is None

    def support_encoder(self) -> nn.Module:
        return self.query if self.support is None else self.support


class POMNetModel(nn.Module):
    """Encoders + :class:`TransformerHead` (``TransformerPose`` of transformer_pose.py).

    Args:
        backbone: the encoders.
        head: the keypoint head.
        feature_size: side (cells) the backbone maps are resized to (``input_size / 32``).
    """

    def __init__(self, backbone: POMNetEncoders, head: TransformerHead, feature_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_size = feature_size

    def query_features(self, images: torch.Tensor) -> torch.Tensor:
        """float32[B, 3, S, S] -> float32[B, C, S/32, S/32] (``encoder_query``)."""
        return features_at(self.backbone.query, images, self.feature_size)

    def support_features(self, images: torch.Tensor) -> torch.Tensor:
        """float32[B, 3, S, S] -> float32[B, C, S/32, S/32] (``encoder_sample``)."""
        return features_at(self.backbone.support_encoder(), images, self.feature_size)

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Official ``TransformerPose.forward_train`` + ``TransformerHead.get_loss``.

        Args:
            batch: the trainer's batch (:class:`~baselines.common.episodic_data.EpisodeBatch` fields as tensors):
                ``img_s`` [B, S, 3, H, W], ``img_q`` [B, 3, H, W], ``target_s`` [B, S, K, h, w], ``target_q``
                [B, K, h, w], ``weight_q`` [B, K], ``mask_s`` [B, K].

        Returns:
            ``{"mse_loss": scalar}``.
        """
        shots = batch["img_s"].shape[1]
        feat_q = self.query_features(batch["img_q"])
        feat_s = [self.support_features(batch["img_s"][:, j]) for j in range(shots)]
        target_s = [batch["target_s"][:, j] for j in range(shots)]
        mask_s = batch["mask_s"][..., None]
        heatmaps = self.head(feat_q, feat_s, target_s, mask_s)
        if heatmaps.shape[-2:] != batch["target_q"].shape[-2:]:
            raise ValueError(f"POMNet heatmaps {tuple(heatmaps.shape[-2:])} do not match the targets "
                             f"{tuple(batch['target_q'].shape[-2:])}: input size must be a multiple of 32")
        weight = (batch["weight_q"] * batch["mask_s"])[..., None]
        return self.head.get_loss(heatmaps, batch["target_q"], weight)


class POMNet(TorchMethod):
    """POMNet: support images + keypoints, per-keypoint heatmaps.

    Options (``[methods.pomnet.options]``): ``backbone_weights`` (``"random"`` or a file; default: genuine
    weights found offline), ``shared_backbone`` (default: true for a frozen backbone, false otherwise, i.e. the
    official two encoders), ``deconv_width`` (default 256, quick preset 64), ``allow_pickle`` (trust an official
    ``.pth`` whose ``meta`` holds pickled objects).
    """

    info = MethodInfo(name="pomnet", needs_images=True,
                      paper="Xu et al., Pose for Everything: Towards Category-Agnostic Pose Estimation, ECCV 2022")
    presets = PRESETS
    sigma = 2.0

    _seed = 1
    _log: Any = print

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.preset.input_size % 32:
            raise ValueError(f"pomnet: input size must be a multiple of 32, got {self.preset.input_size}")

    @property
    def pad_to(self) -> int | None:  # type: ignore[override]
        """Training keypoint slots: the official 100 in the official preset, else the batch's largest K."""
        return MAX_KEYPOINTS if self.preset.name == "official" else None

    @property
    def shared_backbone(self) -> bool:
        return bool(self.options.get("shared_backbone", self.preset.freeze_backbone))

    @property
    def deconv_width(self) -> int:
        return int(self.options.get("deconv_width", DECONV_WIDTH.get(self.preset.name, OFFICIAL_DECONV_WIDTH)))

    def head_config(self, in_channels: int) -> POMNetHeadConfig:
        """Official ``TransformerHead`` sizes for ``in_channels`` backbone channels and the deconv width."""
        return self.sized_head(POMNetHeadConfig(in_channels=in_channels, num_deconv_filters=(self.deconv_width,) * 3))

    def prepare(self, ctx: RunContext) -> None:
        self._seed, self._log = ctx.seed, ctx.log
        super().prepare(ctx)

    def build_model(self) -> nn.Module:
        """Encoders (one or two) + head with the official init (``TransformerHead.init_weights``), seeded."""
        size = self.preset.input_size
        weights = self.options.get("backbone_weights")
        with torch.random.fork_rng():
            torch.manual_seed(self._seed)
            query, info = build_backbone(self.backbone_name, weights, input_size=size)
            support = None if self.shared_backbone else build_backbone(self.backbone_name, weights,
                                                                       input_size=size)[0]
            head = TransformerHead(self.head_config(info.out_channels))
            head.init_weights()
        self.backbone_info = info
        return POMNetModel(POMNetEncoders(query, support), head, size // 32)

    def support_state(self, crops: torch.Tensor, kpts_norm: torch.Tensor, visible: torch.Tensor,
                      support: InstanceView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Support features float32[S, C, h, w], σ = 2 MSRA heatmaps float32[S, K, H, W] and mask float32[K].

        Mirrors the official test pipeline (``TopDownGenerateTargetFewShot``, then ``mask_s`` = product of the
        shots' target weights).
        """
        return self._support_from_features(self.model.support_features(crops), kpts_norm, visible)

    def _support_from_features(self, feats, kpts_norm, visible):
        size = self.preset.input_size
        heatmaps, weights = msra_support_targets(kpts_norm * size, visible, int(self.sigma), size, size // 4)
        return feats, heatmaps, weights.prod(dim=0)

    def predict_normalized(self, state, crops: torch.Tensor, queries: InstanceView) -> torch.Tensor:
        """float32[Q, K, 2] normalised crop coords: :func:`pomnet_predict` on the K real keypoints."""
        feats_s, heatmaps_s, mask = state
        size = self.preset.input_size
        pred = pomnet_predict(self.model.head, self.model.query_features(crops), feats_s, heatmaps_s, mask,
                              input_size=size)
        return torch.from_numpy(pred.keypoints_crop) / size

    # ------------------------------------------------------------------ per-instance stages
    def instance_stages(self) -> dict[str, str]:
        if self.shared_backbone:
            return {"support": "image", "query": "image"}
        return {"support": "support_image", "query": "query_image"}

    def shared_stage(self, stage: str) -> tuple[str, nn.Module]:
        """Every stage is one encoder's map at its own size (``features_at`` without a resize): the frozen shared
        encoder of the budget preset is the lineage methods' network at the size they use, so one computation
        serves all; the head's ``input_size / 32`` cells are resized from it at use, as ``features_at`` would."""
        encoder = self.model.backbone.support_encoder() if stage == "support_image" else self.model.backbone.query
        return FEATURES_AT.format(size=self.backbone_info.out_size), encoder

    def stage_features(self, stage: str, crops: torch.Tensor, view: InstanceView) -> dict[str, torch.Tensor]:
        """``encoder_query`` (stages ``image`` and ``query_image``) or ``encoder_sample`` (``support_image``), at the
        encoder's own output size (see :meth:`shared_stage`)."""
        _, encoder = self.shared_stage(stage)
        return {"feat": features_at(encoder, crops, self.backbone_info.out_size)}

    def support_state_cached(self, feats, kpts_norm, visible, support):
        """(tokens float32[1, K, C], mask float32[1, K, 1]): :func:`pomnet_predict`'s support tokens of the K real
        keypoint slots, pooled once per episode."""
        feats_s, heatmaps_s, mask = self._support_from_features(
            resize_features(feats["feat"], self.model.feature_size), kpts_norm, visible)
        shots, k = heatmaps_s.shape[:2]
        mask = mask.reshape(1, k, 1).to(feats_s.dtype)
        tokens = self.model.head.support_tokens([feats_s[s : s + 1] for s in range(shots)],
                                                [heatmaps_s[s : s + 1] for s in range(shots)], mask)
        return tokens, mask

    def predict_normalized_cached(self, states, feats, queries, episode):
        """Several episodes' queries in one head forward, on the K real keypoints only (no padded slot)."""
        size = self.preset.input_size
        k = queries.category.num_keypoints
        tokens = torch.cat([s[0] for s in states])[episode]
        mask = torch.cat([s[1] for s in states])[episode]
        if tokens.shape[1] != k:
            raise ValueError(f"pomnet: support state has {tokens.shape[1]} keypoint slots, the category {k}")
        query = resize_features(feats["feat"], self.model.feature_size)
        heatmaps = self.model.head.forward_tokens(query, tokens, mask).heatmaps
        peaks = keypoints_from_heatmaps_crop(heatmaps.float().cpu().numpy(), size)
        return torch.from_numpy(peaks.coords) / size

    def load_official_checkpoint(self, path: Path) -> dict:
        """An official POMNet checkpoint (``encoder_query.*``, ``encoder_sample.*``, ``keypoint_head.*``)."""
        if (self.backbone_name != "resnet50" or self.preset.input_size != 256 or self.shared_backbone
                or self.deconv_width != OFFICIAL_DECONV_WIDTH):
            raise ValueError(f"pomnet: official checkpoints need the official model (two resnet50 encoders at "
                             f"256 px, deconv width 256: preset 'official'); got {self.backbone_name} at "
                             f"{self.preset.input_size} px{', shared' if self.shared_backbone else ''}, "
                             f"deconv width {self.deconv_width}")
        out = load_official_pomnet(self.model, path, allow_pickle=bool(self.options.get("allow_pickle")),
                                   log=self._log)
        self._official_loaded = str(path)
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        info = getattr(self, "backbone_info", None)
        if getattr(self, "_official_loaded", None):
            out["backbone_weights"] = f"from the official checkpoint {self._official_loaded}"
        elif info is not None:
            out["backbone_weights"] = info.weights
        out["encoders"] = ("one backbone shared by support and query (deviation: official POMNet has two)"
                           if self.shared_backbone else "two (official encoder_query / encoder_sample)")
        if self.deconv_width != OFFICIAL_DECONV_WIDTH:
            out["head"] = f"TransformerHead with deconv width {self.deconv_width} (deviation: official 256)"
        return out
