"""PoseAnything / GraphCape keypoint head (``PoseHead`` + ``EncoderDecoder``).

Official: ``orhir/PoseAnything@7f1253f``, ``models/models/keypoint_heads/head.py`` and
``models/models/utils/encoder_decoder.py``; config ``configs/1shots/graph_split1_config.py``.
Same lineage head as CapeFormer (:mod:`baselines.common.lineage_head`) with PoseAnything's
switches: support-order embedding disabled (zeros), graph decoder ``'pre'`` (GCN ``ffn1`` over
the support skeleton, Linear ``ffn2``; ``graph_none`` for the ``base_*`` configs), σ = 1
support heatmaps, SwinV2 input (768 channels, 16×16 after the ×2 upsample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from baselines.common.lineage_head import LineageHead, LineageHeadConfig


@dataclass(frozen=True)
class GraphCapeConfig(LineageHeadConfig):
    """GraphCape head configuration; defaults = official ``graph_split1_config`` (SwinV2-T)."""

    in_channels: int = 768
    token_source: str = "image"
    support_order: str = "zeros"
    d_model: int = 256
    nhead: int = 8
    dim_feedforward: int = 768
    similarity_proj_dim: int = 256
    dynamic_proj_dim: int = 128
    decoder_ffn: str = "graph_pre"
    target_sigma: int = 1


class GraphCapeHead(LineageHead):
    """GraphCape head; state-dict keys = official ``keypoint_head.*`` keys without the prefix.

    Args:
        cfg: configuration (official sizes by default).
    """

    def __init__(self, cfg: GraphCapeConfig | None = None):
        super().__init__(cfg or GraphCapeConfig())

    def predict_from_support(self, query_feats: torch.Tensor, support_feats: Sequence[torch.Tensor],
                             support_kpts: torch.Tensor, support_visible: torch.Tensor,
                             skeleton=None, factorized: bool = True) -> torch.Tensor:
        """Predict query keypoints from S support shots and the category skeleton.

        Args:
            query_feats: float32[B, C, h, w] query backbone features.
            support_feats: S tensors float32[B, C, h, w] support backbone features.
            support_kpts: float32[S, B, K, 2] support keypoints, normalised crop coords.
            support_visible: bool/float[S, B, K] support visibility.
            factorized: cheap but equivalent support pooling (see ``pool_support_tokens``);
                False = the official operation order.
            skeleton: 0-based edges: int[E, 2] shared by the batch, padded int[B, E, 2] (-1
                padding) or a list of B edge lists. None or empty = no edges.

        Returns:
            float32[B, K, 2] query keypoints, normalised crop coords.
        """
        tokens, mask = self.image_support_tokens(support_feats, support_kpts, support_visible, factorized)
        return self.predict(query_feats, tokens, mask, skeleton)
