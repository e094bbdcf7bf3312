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

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from baselines.capex.model import CapeXConfig, CapeXHead
from baselines.common.lineage_head import LineageOutputs
from capenext.fuse import FuseConfig, SimpleMultiModalModule

#: encode_text: N strings → float[N, D] raw (un-normalised or normalised) embeddings.
EncodeText = Callable[[list[str]], "np.ndarray | torch.Tensor"]


def category_prompt(category_name: str) -> str:
    """Official class prompt: ``'a photo of ' + name`` with ``_`` → space (``antelope_body`` → ``antelope body``)."""
    return "a photo of " + category_name.replace("_", " ")


def _l2_rows(x: torch.Tensor) -> torch.Tensor:
    # Official ``x / x.norm(dim=1, keepdim=True)`` (no epsilon: a zero embedding would be NaN there too).
    return x / x.norm(dim=1, keepdim=True)


def joint_text_embeddings(descriptions: Sequence[Sequence[str]], mask_s: torch.Tensor, encode_text: EncodeText,
                          num_shots: int = 1) -> torch.Tensor:
    """Official ``extract_text_features``: keypoint-text tokens of a batch.

    Args:
        descriptions: B lists of the category's keypoint descriptions (n_b ≤ K strings each).
        mask_s: float/bool[B, K] or [B, K, 1] support mask of shot 0.
        encode_text: the text tower (one call per shot with all visible strings of the batch, as officially).
        num_shots: S; every shot repeats shot 0's strings and mask (official behaviour), so the mean is a no-op.

    Returns:
        float32[B, K, D]: unit rows at visible slots, zero rows elsewhere.
    """
    mask = mask_s.reshape(mask_s.shape[0], -1) > 0
    bs, slots = mask.shape
    for b, descs in enumerate(descriptions):
        if mask[b, len(descs):].any():
            raise ValueError(f"sample {b}: support mask set on slots beyond its {len(descs)} keypoints")
    per_shot = []
    for _ in range(num_shots):
        strings, where = [], []
        for b, descs in enumerate(descriptions):
            n = len(descs)
            for k in range(n):
                if mask[b, k]:
                    strings.append(descs[k])
                    where.append((b, k))
        feats = _l2_rows(torch.as_tensor(np.asarray(encode_text(strings)), dtype=torch.float32))
        out = feats.new_zeros(bs, slots, feats.shape[1])
        if where:
            idx = torch.tensor(where)
            out[idx[:, 0], idx[:, 1]] = feats
        per_shot.append(out)
    return torch.stack(per_shot).mean(0)


def category_text_embeddings(category_names: Sequence[str], encode_text: EncodeText) -> torch.Tensor:
    """``e_cls`` float32[B, D]: L2-normalised embedding of :func:`category_prompt` of each query's category."""
    feats = encode_text([category_prompt(n) for n in category_names])
    return _l2_rows(torch.as_tensor(np.asarray(feats), dtype=torch.float32))


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
