"""mmcv 1.x transformer bricks as POMNet's official code builds them (sequence-first ``[N, B, E]``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from baselines.pomnet.config import POMNetHeadConfig

# --------------------------------------------------------------------------------------------
# mmcv 1.x transformer bricks (mmcv/cnn/bricks/transformer.py), sequence-first [N, B, E]
# --------------------------------------------------------------------------------------------


class MMCVMultiheadAttention(nn.Module):
    """mmcv ``MultiheadAttention``: positions added to query/key, residual with dropout.

    Official config ``dropout=0.1`` sets both the attention-weight dropout (inside
    ``nn.MultiheadAttention``) and the residual ``dropout_layer``; ``proj_drop`` is 0.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout)
        self.dropout_layer = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attention with residual.

        Args:
            query: float32[L, B, E]; also the residual identity.
            key: float32[S, B, E].
            value: float32[S, B, E].
            query_pos: float32[L, B, E] added to the query only, or None.
            key_pos: float32[S, B, E] added to the key only, or None.
            key_padding_mask: bool[B, S], True = ignored key, or None.

        Returns:
            float32[L, B, E].
        """
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        # need_weights=True keeps the official explicit-softmax path (NaN on all-masked rows,
        # spec §9 quirk 7) instead of the fused kernel.
        out = self.attn(q, k, value, key_padding_mask=key_padding_mask, need_weights=True)[0]
        return query + self.dropout_layer(out)


class MMCVFFN(nn.Module):
    """mmcv ``FFN`` (2 fcs, ReLU, ``ffn_drop`` after both, identity added).

    Keys: ``layers.0.0`` = fc1, ``layers.1`` = fc2.
    """

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """float32[..., E] -> float32[..., E] (with residual)."""
        return x + self.layers(x)


class DetrEncoderLayer(nn.Module):
    """``BaseTransformerLayer`` with order (self_attn, norm, ffn, norm), post-norm."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        E = cfg.embed_dims
        self.attentions = nn.ModuleList([MMCVMultiheadAttention(E, cfg.num_heads, cfg.dropout)])
        self.ffns = nn.ModuleList([MMCVFFN(E, cfg.feedforward_channels, cfg.dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(E), nn.LayerNorm(E)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x, pos float32[HW, B, E] -> float32[HW, B, E]; q = k = x + pos, v = x."""
        x = self.norms[0](self.attentions[0](x, x, x, query_pos=pos, key_pos=pos))
        return self.norms[1](self.ffns[0](x))


class DetrDecoderLayer(nn.Module):
    """``DetrTransformerDecoderLayer``: (self_attn, norm, cross_attn, norm, ffn, norm).

    No query positional embedding (POMNet passes none); the cross-attention key is
    ``memory + pos``, its value ``memory``.
    """

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        E = cfg.embed_dims
        self.attentions = nn.ModuleList(
            [MMCVMultiheadAttention(E, cfg.num_heads, cfg.dropout) for _ in range(2)]
        )
        self.ffns = nn.ModuleList([MMCVFFN(E, cfg.feedforward_channels, cfg.dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(E) for _ in range(3)])

    def forward(self, tgt: Tensor, memory: Tensor, memory_pos: Tensor, tgt_padding_mask: Tensor) -> Tensor:
        """Decoder step.

        Args:
            tgt: float32[K, B, E] keypoint tokens.
            memory: float32[HW, B, E] encoder output.
            memory_pos: float32[HW, B, E] sine positions.
            tgt_padding_mask: bool[B, K], True = support-invisible / padded slot.

        Returns:
            float32[K, B, E].
        """
        q = self.norms[0](self.attentions[0](tgt, tgt, tgt, key_padding_mask=tgt_padding_mask))
        q = self.norms[1](self.attentions[1](q, memory, memory, key_pos=memory_pos))
        return self.norms[2](self.ffns[0](q))


class DetrEncoder(nn.Module):
    """``DetrTransformerEncoder`` (post-norm layers, no final norm)."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DetrEncoderLayer(cfg) for _ in range(cfg.num_encoder_layers)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """float32[HW, B, E] -> float32[HW, B, E]."""
        for layer in self.layers:
            x = layer(x, pos)
        return x


class DetrDecoder(nn.Module):
    """``DetrTransformerDecoder(return_intermediate=True)`` with the shared ``post_norm``."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DetrDecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)])
        self.post_norm = nn.LayerNorm(cfg.embed_dims)

    def forward(self, tgt: Tensor, memory: Tensor, memory_pos: Tensor, tgt_padding_mask: Tensor) -> Tensor:
        """Returns float32[L, K, B, E]: every layer's output passed through ``post_norm``."""
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_pos, tgt_padding_mask)
            intermediate.append(self.post_norm(tgt))
        return torch.stack(intermediate)


class PomnetTransformer(nn.Module):
    """``Transformer`` of transformer_head.py (DETR encoder + decoder)."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.encoder = DetrEncoder(cfg)
        self.decoder = DetrDecoder(cfg)

    def forward(self, x: Tensor, pos: Tensor, query_embed: Tensor, mask_query: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the query image, decode the keypoint tokens.

        Args:
            x: float32[B, E, h, w] projected query features.
            pos: float32[B, E, h, w] sine positions.
            query_embed: float32[B, K, E] projected support keypoint tokens.
            mask_query: bool[B, K], True = masked slot.

        Returns:
            outs_dec float32[L, B, K, E] (post-normed) and memory float32[B, E, h, w].
        """
        bs, c, h, w = x.shape
        x_seq = x.flatten(2).permute(2, 0, 1)  # [HW, B, E]
        pos_seq = pos.flatten(2).permute(2, 0, 1)
        memory = self.encoder(x_seq, pos_seq)
        outs_dec = self.decoder(query_embed.permute(1, 0, 2), memory, pos_seq, mask_query)
        return outs_dec.transpose(1, 2), memory.permute(1, 2, 0).reshape(bs, c, h, w)
