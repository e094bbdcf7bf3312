"""CapeFormer keypoint head (``TwoStageHead`` + ``TwoStageSupportRefineTransformer``).

Official: ``flyinglynx/CapeFormer@4ead46b``, ``capeformer/models/keypoint_heads/two_stage_head.py``
and ``capeformer/models/utils/two_stage_support_refine_transformer.py``; config
``configs/mp100/capeformer/1shots/two_stage_split1_config.py``. The implementation is the shared
lineage head (:mod:`baselines.common.lineage_head`) with CapeFormer's switches: image support
tokens (``query_proj``), fixed sine support-order embedding over the 100 padded slots, plain
FFN in the decoder (``linear1``/``linear2``), σ = 2 support heatmaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from baselines.common.lineage_head import LineageHead, LineageHeadConfig


@dataclass(frozen=True)
class CapeFormerConfig(LineageHeadConfig):
    """CapeFormer head configuration; defaults = official split-1 config (ResNet-50 input)."""

    in_channels: int = 2048
    token_source: str = "image"
    support_order: str = "sine"
    d_model: int = 256
    nhead: int = 8
    dim_feedforward: int = 2048
    similarity_proj_dim: int = 256
    dynamic_proj_dim: int = 128
    decoder_ffn: str = "linear"
    target_sigma: int = 2


class CapeFormerHead(LineageHead):
    """CapeFormer head; state-dict keys = official ``keypoint_head.*`` keys without the prefix.

    Args:
        cfg: configuration (official sizes by default).
    """

    def __init__(self, cfg: CapeFormerConfig | None = None):
        super().__init__(cfg or CapeFormerConfig())

    def predict_from_support(self, query_feats: torch.Tensor, support_feats: Sequence[torch.Tensor],
                             support_kpts: torch.Tensor, support_visible: torch.Tensor,
                             factorized: bool = True) -> torch.Tensor:
        """Predict query keypoints from S support shots.

        Args:
            query_feats: float32[B, C, h, w] query backbone features.
            support_feats: S tensors float32[B, C, h, w] support backbone features.
            support_kpts: float32[S, B, K, 2] support keypoints, normalised crop coords.
            support_visible: bool/float[S, B, K] support visibility.
            factorized: cheap but equivalent support pooling (see ``pool_support_tokens``);
                False = the official operation order.

        Returns:
            float32[B, K, 2] query keypoints, normalised crop coords.
        """
        tokens, mask = self.image_support_tokens(support_feats, support_kpts, support_visible, factorized)
        return self.predict(query_feats, tokens, mask)
