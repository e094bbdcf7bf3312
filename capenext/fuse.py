"""CapeNext's multimodal fusion module: HCMI (class text ↔ query image) + DSFR (dual-stream joint refinement).

Faithful re-implementation of ``models/models/additional_modules/fuse_feature_module.py`` in ``yzrs/CapeNext``
@ ``1320e4a``: ``AttentionLayer``, ``SimpleMultiModalModule`` and its two ablations
``SimpleMultiModalWithoutCategoryTextEmbedding`` / ``SimpleMultiModalWithoutQueryImgEmbedding``. The parameter
names (``state_dict`` keys) are the official ones, so an official ``additional_module.*`` state dict loads with
``strict=True`` after stripping the prefix.

Notation (D = embedding width, 512 officially; K = 100 padded keypoint slots):

* ``e_joint`` (float32[B, K, D]) keypoint-description text embeddings, unit rows, zero rows where padded or
  support-invisible;
* ``e_img``  (float32[B, D]) L2-normalised query-image embedding (CLIP image tower in the official code);
* ``e_cls``  (float32[B, D]) L2-normalised embedding of ``"a photo of <category name>"``.

Deliberate deviations from the released file (none changes an output):

* the per-call cosine diagnostics (``text_scores`` / ``img_scores`` / ``joint_scores``, ``print`` and the
  ``np.array(tensor.cpu())`` that breaks autograd, spec §10.5 quirks 1-2) are not reproduced, so this module
  can train and costs no host sync;
* nn.MultiheadAttention runs ``batch_first=True`` instead of transposing to sequence-first (same arithmetic);
* one class with two switches replaces the three official classes; ``official_class_name`` maps back.

This file imports torch at module level (allowed for ``capenext/`` model files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

#: Official class name → (use_category_text, use_query_image).
OFFICIAL_CLASSES: dict[str, tuple[bool, bool]] = {
    "SimpleMultiModalModule": (True, True),
    "SimpleMultiModalWithoutCategoryTextEmbedding": (False, True),
    "SimpleMultiModalWithoutQueryImgEmbedding": (True, False),
}


@dataclass(frozen=True)
class FuseConfig:
    """Hyper-parameters of the fusion module (official defaults).

    Attributes:
        embed_dim: D, width of every token (512 = CLIP ViT-B/32 embedding).
        num_heads: attention heads of every nn.MultiheadAttention (8, hard-coded officially).
        ffn_ratio: FFN hidden width = ``ffn_ratio * embed_dim`` (4, hard-coded officially → 2048).
        dropout: dropout probability of attention, FFNs and residuals (0.1; inactive in eval).
        use_category_text: build the class-text branch (False = ``…WithoutCategoryTextEmbedding``).
        use_query_image: build the query-image branch (False = ``…WithoutQueryImgEmbedding``).
    """

    embed_dim: int = 512
    num_heads: int = 8
    ffn_ratio: int = 4
    dropout: float = 0.1
    use_category_text: bool = True
    use_query_image: bool = True

    def __post_init__(self) -> None:
        if not (self.use_category_text or self.use_query_image):
            raise ValueError("the fusion module needs the class text, the query image or both")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def official_class_name(self) -> str:
        """Name of the official class this configuration reproduces."""
        for name, switches in OFFICIAL_CLASSES.items():
            if switches == (self.use_category_text, self.use_query_image):
                return name
        raise AssertionError("unreachable: __post_init__ rejects the remaining combination")

    @classmethod
    def from_official(cls, module_class: str = "SimpleMultiModalModule", **module_kwargs: Any) -> FuseConfig:
        """Build from an official class name and its constructor kwargs (``embed_dim``, ``num_heads``, ``dropout``).

        The golden sidecars carry exactly these (``module_class``, ``module_kwargs``).
        """
        if module_class not in OFFICIAL_CLASSES:
            raise KeyError(f"unknown fusion module {module_class!r}; known: {sorted(OFFICIAL_CLASSES)}")
        use_text, use_img = OFFICIAL_CLASSES[module_class]
        allowed = {"embed_dim", "num_heads", "dropout"}
        unknown = set(module_kwargs) - allowed
        if unknown:
            raise TypeError(f"unexpected kwargs for {module_class}: {sorted(unknown)}")
        return cls(use_category_text=use_text, use_query_image=use_img, **module_kwargs)


def _ffn(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """FFN with the official index layout: ``0`` Linear, ``1`` ReLU, ``2`` Dropout, ``3`` Linear."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class AttentionLayer(nn.Module):
    """``AL(Q, K, V) = LN2(Q + FFN(LN1(Q + MHA(Q, K, V))))`` (official ``AttentionLayer``).

    Note the second residual adds the *original* query, not the ``LN1`` output — an official quirk kept here.
    No attention masks: padded keypoint slots are ordinary queries (spec §10.5 quirk 4).
    """

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = _ffn(dim, ffn_hidden, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, trace: dict[str, Tensor] | None = None,
                prefix: str = "") -> Tensor:
        """Run the layer.

        Args:
            query: float32[B, Lq, D].
            key: float32[B, Lk, D].
            value: float32[B, Lk, D].
            trace: optional dict that receives ``{prefix}mha_out`` [B, Lq, D], ``{prefix}weights``
                [B, Lq, Lk] (head-averaged) and ``{prefix}norm1_out`` [B, Lq, D].
            prefix: key prefix for ``trace``.

        Returns:
            float32[B, Lq, D].
        """
        attn_out, attn_weights = self.attn(query, key, value, need_weights=trace is not None)
        hidden = self.norm1(query + self.dropout1(attn_out))
        out = self.norm2(query + self.dropout2(self.ffn(hidden)))
        if trace is not None:
            trace[prefix + "mha_out"] = attn_out
            trace[prefix + "weights"] = attn_weights
            trace[prefix + "norm1_out"] = hidden
        return out


class SimpleMultiModalModule(nn.Module):
    """HCMI + DSFR (official ``SimpleMultiModalModule`` and its two ablations, chosen by ``FuseConfig``).

    HCMI: the tokens ``[e_cls; e_img]`` (or the one present) self-attend,
    ``H = norm1(AL(X, X, X) + inter_ffn(AL(X, X, X)))``.
    DSFR: each keypoint embedding cross-attends to ``e'_cls`` (text stream T) and ``e'_img`` (image stream Im),
    per-keypoint sigmoid gates weight the streams, ``F = w_t·T + w_i·Im``,
    ``F = norm2(F + weighted_ffn(F))``, ``e'_joint = norm3(e_joint + F)``.

    ``non_linear`` is built but never used, as in the official file; it exists so that official state dicts
    load strictly. In the no-image ablation the single gate is called ``weight_text`` (official name).
    """

    def __init__(self, cfg: FuseConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FuseConfig()
        dim, hidden = cfg.embed_dim, cfg.ffn_ratio * cfg.embed_dim
        # Registration order follows the official __init__, so state_dict() lists keys in the official order.
        self.inter_attention_layer = AttentionLayer(dim, cfg.num_heads, hidden, cfg.dropout)
        if cfg.use_category_text:
            self.text_cross_attention_layer = AttentionLayer(dim, cfg.num_heads, hidden, cfg.dropout)
        if cfg.use_query_image:
            self.image_cross_attention_layer = AttentionLayer(dim, cfg.num_heads, hidden, cfg.dropout)
        self.non_linear = _ffn(dim, hidden, cfg.dropout)  # unused in forward (official dead code)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        if cfg.use_category_text and cfg.use_query_image:
            self.weight_category = nn.Linear(dim, 1)
            self.weight_image = nn.Linear(dim, 1)
        elif cfg.use_category_text:
            self.weight_text = nn.Linear(dim, 1)
        else:
            self.weight_image = nn.Linear(dim, 1)
        self.inter_ffn = _ffn(dim, hidden, cfg.dropout)
        self.weighted_ffn = _ffn(dim, hidden, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def _text_gate(self) -> nn.Linear:
        return self.weight_category if self.cfg.use_query_image else self.weight_text

    def forward(self, e_img: Tensor | None, e_joint: Tensor, e_cls: Tensor | None = None,
                return_intermediates: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Refine the keypoint text embeddings (official ``process(image, joint_text, category_text)``).

        Args:
            e_img: float32[B, D] query-image embedding (ignored, may be None, without the image branch).
            e_joint: float32[B, K, D] keypoint text embeddings (zero rows for padding / invisible).
            e_cls: float32[B, D] class-prompt embedding (ignored, may be None, without the text branch).
            return_intermediates: also return a dict of named intermediate tensors (the golden outputs:
                ``hcmi_out``, ``e_cls_refined``, ``e_img_refined``, ``dsfr_text_stream``, ``gate_text_w_t``, …).

        Returns:
            ``e'_joint`` float32[B, K, D]; with ``return_intermediates`` a tuple ``(e'_joint, dict)``.
            Padded slots are *not* zero in the output (official behaviour); the head re-masks them.
        """
        cfg = self.cfg
        trace: dict[str, Tensor] | None = {} if return_intermediates else None
        tokens = []
        if cfg.use_category_text:
            if e_cls is None:
                raise ValueError("e_cls is required when use_category_text is on")
            tokens.append(e_cls.unsqueeze(1))
        if cfg.use_query_image:
            if e_img is None:
                raise ValueError("e_img is required when use_query_image is on")
            tokens.append(e_img.unsqueeze(1))
        # HCMI: token order [e_cls; e_img] as in the official torch.cat.
        x = torch.cat(tokens, dim=1)
        h_attn = self.inter_attention_layer(x, x, x, trace, "hcmi_attn_")
        h = self.norm1(h_attn + self.dropout(self.inter_ffn(h_attn)))

        streams: list[tuple[Tensor, Tensor]] = []
        col = 0
        if cfg.use_category_text:
            e_cls_ref = h[:, col:col + 1]
            col += 1
            t = self.text_cross_attention_layer(e_joint, e_cls_ref, e_cls_ref, trace, "dsfr_text_")
            t_logit = self._text_gate()(t)
            streams.append((t, torch.sigmoid(t_logit)))
        if cfg.use_query_image:
            e_img_ref = h[:, col:col + 1]
            im = self.image_cross_attention_layer(e_joint, e_img_ref, e_img_ref, trace, "dsfr_image_")
            i_logit = self.weight_image(im)
            streams.append((im, torch.sigmoid(i_logit)))

        fused = streams[0][1] * streams[0][0]
        for stream, gate in streams[1:]:
            fused = fused + gate * stream
        fused_ffn = self.norm2(fused + self.dropout(self.weighted_ffn(fused)))
        out = self.norm3(e_joint + self.dropout(fused_ffn))
        if trace is None:
            return out

        trace["hcmi_attn_layer_out"] = h_attn
        trace["hcmi_out"] = h
        if cfg.use_category_text:
            trace["e_cls_refined"] = e_cls_ref
            trace["dsfr_text_stream"] = t
            trace["gate_text_logit"] = t_logit
            trace["gate_text_w_t"] = streams[0][1]
        if cfg.use_query_image:
            trace["e_img_refined"] = e_img_ref
            trace["dsfr_image_stream"] = im
            trace["gate_image_logit"] = i_logit
            trace["gate_image_w_i"] = streams[-1][1]
        trace["weighted_fusion_out"] = fused
        trace["dsfr_norm2_out"] = fused_ffn
        trace["e_joint_refined"] = out
        return out, trace

    process = forward  # official entry point name (the detector calls module.process)


def used_parameter_count(module: SimpleMultiModalModule) -> int:
    """Number of parameters that ``forward`` touches (all but the dead ``non_linear`` FFN)."""
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith("non_linear."))
