"""The support-refine encoder/decoder shared by CapeFormer, PoseAnything (GraphCape) and CapeX.

One implementation with switches, mirroring
``capeformer/models/utils/two_stage_support_refine_transformer.py``
(``TwoStageSupportRefineTransformer``) and its PoseAnything/CapeX copy
``models/models/utils/encoder_decoder.py`` (``EncoderDecoder``), which differ only in the
decoder feed-forward block:

* ``decoder_ffn="linear"``     CapeFormer: ``linear1`` → ReLU → ``linear2``;
* ``decoder_ffn="graph_pre"``  PoseAnything/CapeX ``graph_decoder='pre'``: ``ffn1`` = GCN
  over the support skeleton, ``ffn2`` = Linear;
* ``decoder_ffn="graph_none"`` PoseAnything ``base_*`` configs (``graph_decoder=None``):
  ``ffn1``/``ffn2`` plain Linear.

Sub-module names equal the official ones so that official state dicts load without a key map.
Sequences are sequence-first (``[L, B, C]``) as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.positional import sine_coord_embedding
from baselines.common.skeleton_graph import GCNLayer, pad_skeleton, skeleton_adjacency  # noqa: F401  (re-exported)

DECODER_FFNS = ("linear", "graph_pre", "graph_none")


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the support-refine transformer (defaults: official CapeFormer).

    Attributes:
        d_model: token width E.
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth.
        dim_feedforward: FFN hidden width (CapeFormer 2048, PoseAnything/CapeX 768).
        dropout: dropout probability (inactive in eval mode).
        similarity_proj_dim: width of the proposal generator's projections.
        dynamic_proj_dim: hidden width of the proposal generator's dynamic projection.
        activation: FFN activation, ``"relu"`` or ``"gelu"``.
        decoder_ffn: ``"linear"`` | ``"graph_pre"`` | ``"graph_none"`` (see module docstring).
    """

    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dim_feedforward: int = 2048
    dropout: float = 0.1
    similarity_proj_dim: int = 256
    dynamic_proj_dim: int = 128
    activation: str = "relu"
    decoder_ffn: str = "linear"

    def __post_init__(self) -> None:
        if self.decoder_ffn not in DECODER_FFNS:
            raise ValueError(f"decoder_ffn must be one of {DECODER_FFNS}, got {self.decoder_ffn!r}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        if self.similarity_proj_dim != self.d_model:
            # The official dynamic projection maps d_model -> d_model but is applied to the
            # similarity_proj_dim-wide support projection, so only equal widths run.
            raise ValueError("similarity_proj_dim must equal d_model (as in every official config)")
        if self.d_model % 2:
            raise ValueError("d_model must be even (sine encoding uses d_model / 2 features per axis)")


def _activation(name: str):
    return F.relu if name == "relu" else F.gelu


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Clamped logit used by the lineage (``two_stage_head.py::inverse_sigmoid``).

    Args:
        x: float[...] values, clamped to [0, 1] first.
        eps: clamp of numerator and denominator.

    Returns:
        float[...] ``log(max(x, eps) / max(1 - x, eps))``.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """Plain MLP with GELU between layers (official ``MLP``, used as ``ref_point_head``).

    Args:
        input_dim: input width.
        hidden_dim: hidden width.
        output_dim: output width.
        num_layers: number of Linear layers (keys ``layers.{0..n-1}``).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.gelu(layer(x))
        return x


class TokenDecodeMLP(nn.Module):
    """Keypoint offset regressor (official ``TokenDecodeMLP``): 3× (Linear, GELU), Linear → 2.

    Keys ``mlp.{0,2,4,6}`` (odd indices are the parameter-free GELUs).

    Args:
        in_channels: token width E.
        hidden_channels: hidden width (E in every config).
        out_channels: 2 (x, y logit offsets).
        num_layers: hidden Linear layers.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int = 2, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [nn.Linear(in_channels if i == 0 else hidden_channels, hidden_channels), nn.GELU()]
        layers.append(nn.Linear(hidden_channels, out_channels))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class ProposalGenerator(nn.Module):
    """Similarity-based initial keypoint proposals (official ``ProposalGenerator``).

    Args:
        hidden_dim: token width E.
        proj_dim: similarity projection width.
        dynamic_proj_dim: hidden width of the dynamic (pattern-attention) projection.
    """

    def __init__(self, hidden_dim: int, proj_dim: int, dynamic_proj_dim: int):
        super().__init__()
        self.support_proj = nn.Linear(hidden_dim, proj_dim)
        self.query_proj = nn.Linear(hidden_dim, proj_dim)
        self.dynamic_proj = nn.Sequential(
            nn.Linear(hidden_dim, dynamic_proj_dim), nn.ReLU(), nn.Linear(dynamic_proj_dim, hidden_dim))
        self.dynamic_act = nn.Tanh()

    def forward(self, query_feat: torch.Tensor, support_feat: torch.Tensor, hw: tuple[int, int]):
        """Score every query cell against every support token.

        Args:
            query_feat: float32[h*w, B, E] encoder memory (query image tokens).
            support_feat: float32[K, B, E] refined support tokens.
            hw: (h, w) of the query feature map.

        Returns:
            proposal_for_loss: float32[B, K, 2] global soft-argmax, normalised (x, y).
            similarity: float32[B, K, h, w] raw similarity logits.
            proposals: float32[B, K, 2] soft-argmax restricted to the 3×3 window around the
                global argmax (spec §9 quirk 4), normalised (x, y).
        """
        h, w = hw
        fq = self.query_proj(query_feat.transpose(0, 1))  # [B, hw, P]
        fs = self.support_proj(support_feat.transpose(0, 1))  # [B, K, P]
        fs = (self.dynamic_act(self.dynamic_proj(fs)) + 1) * fs
        bs, nq = fs.shape[:2]
        similarity = torch.bmm(fq, fs.transpose(1, 2)).transpose(1, 2).reshape(bs, nq, h, w)

        # Cell centres (i + 0.5), normalised by the side (x then y), as officially.
        ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=similarity.device)
        xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=similarity.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack((grid_x, grid_y), dim=-1).reshape(1, 1, h * w, 2)
        side = torch.tensor([w, h], device=similarity.device)

        prob = similarity.flatten(2).softmax(dim=-1)  # [B, K, hw]
        proposal_for_loss = (prob[..., None] * centres).sum(dim=2) / side

        # Local window: one-hot argmax dilated by a 3×3 max-pool. (The official reshapes to
        # (w, h); identical for the square maps every config uses, correct for non-square.)
        peak = F.one_hot(similarity.flatten(2).argmax(dim=-1), num_classes=h * w).float()
        window = F.max_pool2d(peak.reshape(bs, nq, h, w), kernel_size=3, stride=1, padding=1)
        local = prob[..., None] * window.reshape(bs, nq, h * w, 1)
        local = local / (local.sum(dim=-2, keepdim=True) + 1e-10)
        proposals = (local * centres).sum(dim=2) / side
        return proposal_for_loss, similarity, proposals


class EncoderLayer(nn.Module):
    """Post-norm encoder layer that adds ``pos`` to q, k **and** v and keeps it in the residual.

    Mirrors the official ``TransformerEncoderLayer`` (spec §9 quirk 1: since the sum is kept,
    the embedding is re-added on top of the previous layer's output at every layer).

    Args:
        cfg: transformer hyper-parameters.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.nhead, dropout=cfg.dropout)
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.activation = _activation(cfg.activation)

    def forward(self, src: torch.Tensor, key_padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Args: src/pos float32[L, B, E]; key_padding_mask bool[B, L] (True = ignore)."""
        src = src + pos
        attn = self.self_attn(src, src, value=src, key_padding_mask=key_padding_mask)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class Encoder(nn.Module):
    """Stack of :class:`EncoderLayer` over ``[query image tokens ; support tokens]``.

    Official ``TransformerEncoder`` with ``normalize_before=False`` (no final norm).

    Args:
        cfg: transformer hyper-parameters.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))

    def forward(self, seq: torch.Tensor, key_padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Args: seq/pos float32[L, B, E]; key_padding_mask bool[B, L]. Returns float32[L, B, E]."""
        for layer in self.layers:
            seq = layer(seq, key_padding_mask, pos)
        return seq



class DecoderLayer(nn.Module):
    """Decoder layer with concatenated (not added) positional cross-attention.

    Mirrors ``TransformerDecoderLayer`` (CapeFormer) and ``GraphTransformerDecoderLayer``
    (PoseAnything/CapeX): self-attention over support tokens with ``q = k = tgt + P``; cross
    attention with ``q = [tgt ‖ P]`` (2E), ``k = [memory ‖ grid pos]`` (2E), ``v = memory``,
    output 2E → ``choker`` → E; FFN (plain or graph). Post-norm everywhere.

    Args:
        cfg: transformer hyper-parameters.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d, ff = cfg.d_model, cfg.dim_feedforward
        self.self_attn = nn.MultiheadAttention(d, cfg.nhead, dropout=cfg.dropout)
        self.multihead_attn = nn.MultiheadAttention(2 * d, cfg.nhead, dropout=cfg.dropout, vdim=d)
        self.choker = nn.Linear(2 * d, d)
        self.ffn_kind = cfg.decoder_ffn
        if cfg.decoder_ffn == "linear":
            self.linear1 = nn.Linear(d, ff)
            self.linear2 = nn.Linear(ff, d)
        elif cfg.decoder_ffn == "graph_pre":
            self.ffn1 = GCNLayer(d, ff)
            self.ffn2 = nn.Linear(ff, d)
        else:
            self.ffn1 = nn.Linear(d, ff)
            self.ffn2 = nn.Linear(ff, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.activation = _activation(cfg.activation)

    def _ffn(self, tgt: torch.Tensor, adj: torch.Tensor | None) -> torch.Tensor:
        if self.ffn_kind == "linear":
            return self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        if self.ffn_kind == "graph_pre":
            # GCNLayer already applies ReLU; the layer activation on top is idempotent.
            return self.ffn2(self.dropout(self.activation(self.ffn1(tgt, adj))))
        return self.ffn2(self.dropout(self.activation(self.ffn1(tgt))))

    def forward(self, tgt, memory, support_pos, memory_pos, tgt_key_padding_mask, adj=None):
        """One decoder step.

        Args:
            tgt: float32[K, B, E] support tokens.
            memory: float32[hw, B, E] encoder memory.
            support_pos: float32[K, B, E] ``P = ref_point_head(PE(coords)) + support order PE``.
            memory_pos: float32[hw, B, E] grid positional encoding.
            tgt_key_padding_mask: bool[B, K] (True = ignore), all-masked rows already fixed.
            adj: float32[B, 2, K, K] skeleton adjacency (graph FFN only).

        Returns:
            float32[K, B, E].
        """
        q = tgt + support_pos
        attn = self.self_attn(q, q, value=tgt, key_padding_mask=tgt_key_padding_mask)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        cross_q = torch.cat((tgt, support_pos), dim=-1)
        cross_k = torch.cat((memory, memory_pos), dim=-1)
        attn = self.multihead_attn(query=cross_q, key=cross_k, value=memory)[0]
        tgt = self.norm2(tgt + self.dropout2(self.choker(attn)))
        return self.norm3(tgt + self.dropout3(self._ffn(tgt, adj)))


def unmask_first_if_all_masked(mask: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``mask`` in which samples with every keypoint masked unmask keypoint 0.

    Official ``tgt_key_padding_mask_remove_all_true`` (spec §9 quirk 7): it keeps the decoder
    self-attention from producing NaN for a support without any visible keypoint.

    Args:
        mask: bool[B, K] (True = ignore).

    Returns:
        bool[B, K].
    """
    fixed = mask.clone()
    fixed[(~mask).sum(dim=-1) == 0, 0] = False
    return fixed


class Decoder(nn.Module):
    """Iterative-refinement decoder (official ``TransformerDecoder`` / ``GraphTransformerDecoder``).

    Args:
        cfg: transformer hyper-parameters.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ref_point_head = MLP(cfg.d_model, cfg.d_model, cfg.d_model, 2)
        self.num_feats = cfg.d_model // 2

    def forward(self, tgt, memory, memory_pos, support_order_pos, tgt_key_padding_mask,
                initial_proposals, kpt_branch, adj=None):
        """Refine support tokens and reference points layer by layer.

        Args:
            tgt: float32[K, B, E] refined support tokens from the encoder.
            memory: float32[hw, B, E] encoder memory.
            memory_pos: float32[hw, B, E] grid positional encoding.
            support_order_pos: float32[K, B, E] support order embedding.
            tgt_key_padding_mask: bool[B, K] (already fixed for all-masked samples).
            initial_proposals: float32[B, K, 2] normalised initial reference points.
            kpt_branch: ModuleList of per-layer TokenDecodeMLP (owned by the head).
            adj: float32[B, 2, K, K] or None.

        Returns:
            outs_dec: float32[L, K, B, E] ``norm``-ed output of every layer.
            out_points: list of L + 1 float32[B, K, 2]: initial proposals (detached) and the
                reference point after each layer (updated from the *un-normalised* output,
                spec §9 quirk 2). Gradients as officially (``TransformerDecoder.forward``): the
                reference points are detached between layers, layer 0's positional query is not.
        """
        coords = initial_proposals.detach()
        out_points = [coords]
        intermediate = []
        for lidx, layer in enumerate(self.layers):
            # Official: layer 0's positional query comes from the proposals *with* their gradient (the decoder's
            # losses reach the proposal generator through it); later layers use the detached reference points.
            ref = initial_proposals if lidx == 0 else coords
            query_pos = self.ref_point_head(sine_coord_embedding(ref, self.num_feats).transpose(0, 1))
            tgt = layer(tgt, memory, query_pos + support_order_pos, memory_pos, tgt_key_padding_mask, adj)
            intermediate.append(self.norm(tgt))
            new_coords = (inverse_sigmoid(coords) + kpt_branch[lidx](tgt.transpose(0, 1))).sigmoid()
            out_points.append(new_coords)
            coords = new_coords.detach()
        return torch.stack(intermediate), out_points


class SupportRefineTransformer(nn.Module):
    """Joint query/support encoder, proposal generator and decoder.

    Official ``TwoStageSupportRefineTransformer`` (CapeFormer) / ``EncoderDecoder``
    (PoseAnything, CapeX). Keys: ``encoder.layers.N.*``, ``decoder.layers.N.*``,
    ``decoder.norm``, ``decoder.ref_point_head``, ``proposal_generator.*``.

    Args:
        cfg: transformer hyper-parameters.
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.d_model = cfg.d_model
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.proposal_generator = ProposalGenerator(cfg.d_model, cfg.similarity_proj_dim, cfg.dynamic_proj_dim)

    def forward(self, src, pos, support_tokens, support_order_pos, support_ignore, kpt_branch, edges=None):
        """Run encoder, proposal generator and decoder.

        Args:
            src: float32[B, E, h, w] projected query features.
            pos: float32[B, E, h, w] grid positional encoding.
            support_tokens: float32[B, K, E] projected support tokens.
            support_order_pos: float32[B, K, E] support order embedding.
            support_ignore: bool[B, K] (True = keypoint absent from the support).
            kpt_branch: ModuleList of per-layer TokenDecodeMLP.
            edges: int64[B, E_max, 2] padded 0-based skeleton (graph FFN only).

        Returns:
            dict with ``outs_dec`` float32[L, B, K, E], ``memory`` float32[B, E, h, w],
            ``initial_proposals_for_loss`` / ``initial_proposals`` float32[B, K, 2],
            ``out_points`` list of L + 1 float32[B, K, 2], ``similarity_map`` float32[B, K, h, w],
            ``adjacency`` float32[B, 2, K, K] (graph FFN only, else None).
        """
        bs, c, h, w = src.shape
        n_img = h * w
        k = support_tokens.shape[1]
        seq = torch.cat((src.flatten(2).permute(2, 0, 1), support_tokens.transpose(0, 1)))
        seq_pos = torch.cat((pos.flatten(2).permute(2, 0, 1), support_order_pos.transpose(0, 1)))
        img_ignore = torch.zeros(bs, n_img, dtype=torch.bool, device=src.device)
        seq_ignore = torch.cat((img_ignore, support_ignore), dim=1)
        seq = self.encoder(seq, seq_ignore, seq_pos)
        memory, refined = seq[:n_img], seq[n_img:]

        proposals_for_loss, similarity, proposals = self.proposal_generator(memory, refined, (h, w))

        tgt_ignore = unmask_first_if_all_masked(support_ignore)
        adj = None
        if self.cfg.decoder_ffn == "graph_pre":
            if edges is None:
                edges = torch.zeros(bs, 0, 2, dtype=torch.long)
            adj = skeleton_adjacency(k, edges, tgt_ignore)
        outs_dec, out_points = self.decoder(
            refined, memory, seq_pos[:n_img], seq_pos[n_img:], tgt_ignore, proposals, kpt_branch, adj)
        return {
            "outs_dec": outs_dec.transpose(1, 2),
            "memory": memory.permute(1, 2, 0).reshape(bs, c, h, w),
            "initial_proposals_for_loss": proposals_for_loss,
            "initial_proposals": proposals,
            "out_points": out_points,
            "similarity_map": similarity,
            "adjacency": adj,
        }
