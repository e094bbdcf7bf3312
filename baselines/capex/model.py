"""CapeX keypoint head (text ``PoseHead`` + ``EncoderDecoder``).

Official: ``matanr/capex@cbb591f``, ``models/models/keypoint_heads/head.py``,
``models/models/utils/encoder_decoder.py`` (identical to PoseAnything's); configs
``configs/tiny/tiny_split{1..5}_config.py``. Same lineage head as GraphCape
(:mod:`baselines.common.lineage_head`) except that the support tokens are keypoint-text
embeddings projected by ``text_proj`` (no support image features). The support instance only
contributes its visibility: ``mask_s`` = product over shots of the support target weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from baselines.common.lineage_head import LineageHead, LineageHeadConfig
from baselines.common.support_tokens import msra_target_weights, shot_mask


@dataclass(frozen=True)
class CapeXConfig(LineageHeadConfig):
    """CapeX head configuration; defaults = official tiny config (SwinV2-T + gte-base, 768-d text)."""

    in_channels: int = 768
    token_in_channels: int | None = 768
    token_source: str = "text"
    support_order: str = "zeros"
    d_model: int = 256
    nhead: int = 8
    dim_feedforward: int = 768
    similarity_proj_dim: int = 256
    dynamic_proj_dim: int = 128
    decoder_ffn: str = "graph_pre"
    target_sigma: int = 1


class CapeXHead(LineageHead):
    """CapeX head; state-dict keys = official ``keypoint_head.*`` keys without the prefix.

    Args:
        cfg: configuration (official sizes by default).
    """

    def __init__(self, cfg: CapeXConfig | None = None):
        super().__init__(cfg or CapeXConfig())

    def support_mask(self, support_kpts: torch.Tensor, support_visible: torch.Tensor) -> torch.Tensor:
        """Support mask as the official pipeline computes it (visibility and heatmap bounds).

        Args:
            support_kpts: float32[S, B, K, 2] support keypoints, normalised crop coords.
            support_visible: bool/float[S, B, K].

        Returns:
            float32[B, K] product over shots of the MSRA target weights.
        """
        cfg = self.cfg
        weights = msra_target_weights(support_kpts * cfg.input_size, support_visible, cfg.target_sigma,
                                      cfg.input_size, cfg.heatmap_size)
        return shot_mask(weights)

    def predict_from_text(self, query_feats: torch.Tensor, text_feats: torch.Tensor,
                          support_mask: torch.Tensor, skeleton=None) -> torch.Tensor:
        """Predict query keypoints from keypoint-text embeddings.

        Args:
            query_feats: float32[B, C, h, w] query backbone features.
            text_feats: float32[B, K, D] text embeddings (official: L2-normalised CLS token,
                averaged over shots, zero rows where the support mask is 0).
            support_mask: float/bool[B, K] (see :meth:`support_mask`).
            skeleton: 0-based edges (see ``GraphCapeHead.predict_from_support``).

        Returns:
            float32[B, K, 2] query keypoints, normalised crop coords.
        """
        return self.predict(query_feats, text_feats, support_mask, skeleton)


#: encode_text: N strings → float[N, D] raw (un-normalised or normalised) embeddings.
EncodeText = Callable[[list[str]], "np.ndarray | torch.Tensor"]


def l2_rows(x: torch.Tensor) -> torch.Tensor:
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
        feats = l2_rows(torch.as_tensor(np.asarray(encode_text(strings)), dtype=torch.float32))
        out = feats.new_zeros(bs, slots, feats.shape[1])
        if where:
            idx = torch.tensor(where)
            out[idx[:, 0], idx[:, 1]] = feats
        per_shot.append(out)
    return torch.stack(per_shot).mean(0)
