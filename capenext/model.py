"""CapeNext = CapeX head + the HCMI/DSFR fusion module, with the official text/image token plumbing.

Mirrors ``yzrs/CapeNext@1320e4a`` ``models/models/detectors/capex.py`` (``CapeXModel.predict``,
``extract_text_features``, ``enhance_joint_text_embedding``; spec §10.1):

1. ``mask_s = target_weight_s[0]`` (shot 0 only);
2. ``e_joint``: encode the support-visible keypoint descriptions, L2-normalise, scatter into zero
   ``[K_slots, D]`` rows, mean over shots (all shots use shot 0's mask → a no-op mean);
3. ``feature_q = backbone(img_q)`` (SwinV2 ``forward_features``, 16×16);
4. ``e_img``: CLIP image tower on the bilinear 224 resize of the *ImageNet-normalised* crop, L2;
   ``e_cls``: CLIP text tower on ``"a photo of " + category name`` (``_`` → space), L2;
5. ``e'_joint = additional_module.process(e_img, e_joint, e_cls)``;
6. ``keypoint_head(feature_q, e'_joint, mask_s, skeleton)`` — the head re-masks ``e'_joint``.

The encoders (steps 2 and 4) are passed in as callables so that genuine CLIP, a random-init CLIP, the
offline MiniLM / MobileNetV2 stand-ins or a test double can be used; provenance is the caller's business.
State-dict keys of :class:`CapeNextHead` are the official ``additional_module.*`` and ``keypoint_head.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# CapeNext builds on CapeX: e_joint is CapeX's keypoint-text feature (joint_text_embeddings, re-exported here)
from baselines.capex.model import CapeXConfig, CapeXHead, EncodeText, joint_text_embeddings, l2_rows  # noqa: F401
from baselines.common.lineage_head import LineageOutputs
from capenext.fuse import FuseConfig, SimpleMultiModalModule


def category_prompt(category_name: str) -> str:
    """Official class prompt: ``'a photo of ' + name`` with ``_`` → space (``antelope_body`` → ``antelope body``)."""
    return "a photo of " + category_name.replace("_", " ")


def category_text_embeddings(category_names: Sequence[str], encode_text: EncodeText) -> torch.Tensor:
    """``e_cls`` float32[B, D]: L2-normalised embedding of :func:`category_prompt` of each query's category."""
    feats = encode_text([category_prompt(n) for n in category_names])
    return l2_rows(torch.as_tensor(np.asarray(feats), dtype=torch.float32))


class CapeNextHead(nn.Module):
    """Fusion module + CapeX head (official ``additional_module`` and ``keypoint_head``).

    Args:
        fuse_cfg: fusion module configuration (official: D = 512 CLIP width).
        head_cfg: CapeX head configuration; its ``token_in_channels`` must equal ``fuse_cfg.embed_dim``.
    """

    def __init__(self, fuse_cfg: FuseConfig | None = None, head_cfg: CapeXConfig | None = None) -> None:
        super().__init__()
        fuse_cfg = fuse_cfg or FuseConfig()
        head_cfg = head_cfg or CapeXConfig(token_in_channels=fuse_cfg.embed_dim)
        if head_cfg.token_channels != fuse_cfg.embed_dim:
            raise ValueError(f"head text_in_channels {head_cfg.token_channels} != fusion width {fuse_cfg.embed_dim}")
        self.additional_module = SimpleMultiModalModule(fuse_cfg)
        self.keypoint_head = CapeXHead(head_cfg)

    def forward(self, feature_q: torch.Tensor, e_joint: torch.Tensor, e_img: torch.Tensor | None,
                e_cls: torch.Tensor | None, mask_s: torch.Tensor, skeleton=None,
                ) -> tuple[LineageOutputs, torch.Tensor]:
        """Run module and head.

        Args:
            feature_q: float32[B, C, h, w] query backbone features.
            e_joint: float32[B, K, D] from :func:`joint_text_embeddings`.
            e_img: float32[B, D] query-image token (L2-normalised), None without the image branch.
            e_cls: float32[B, D] class-prompt token (L2-normalised), None without the class branch.
            mask_s: float[B, K] or [B, K, 1] support mask (shot 0).
            skeleton: 0-based edges (padded tensor or per-sample lists).

        Returns:
            (head outputs, refined joint embeddings float32[B, K, D]).
        """
        refined = self.additional_module(e_img, e_joint, e_cls)
        return self.keypoint_head(feature_q, refined, mask_s, skeleton), refined
