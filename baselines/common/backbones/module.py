"""The feature backbone module: a timm body cut at the spec's stage, input renormalised to its weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.backbones.specs import IMAGENET_MEAN, IMAGENET_STD

# ----------------------------------------------------------------------------------------------------------------
# Module


def features_at(backbone: nn.Module, images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``backbone(images)`` bilinearly resized (align_corners False) to ``size`` × ``size`` cells, or kept as it is
    when ``size`` is None / 0 or already met: the query (and support) features of every CAPE head here.

    Args:
        backbone: image float32[B, 3, S, S] → float32[B, C, h, w].
        images: ImageNet-normalised crops float32[B, 3, S, S].
        size: side of the feature map the head expects.
    """
    return resize_features(backbone(images), size)


def resize_features(feats: torch.Tensor, size: int | None) -> torch.Tensor:
    """float32[B, C, h, w] bilinearly resized (align_corners False) to ``size`` × ``size``; as it is when ``size`` is
    None / 0 or already met. :func:`features_at` is ``resize_features(backbone(images), size)``, so a head that needs
    another size can start from another head's cached backbone map."""
    if size and tuple(feats.shape[-2:]) != (size, size):
        feats = F.interpolate(feats, size=(size, size), mode="bilinear", align_corners=False)
    return feats

#: what :func:`features_at` computes, for :meth:`baselines.common.plugin.TorchMethod.shared_stage` recipes
FEATURES_AT = "feat = features_at(backbone, crop, {size})"


class FeatureBackbone(nn.Module):
    """A timm model behind a uniform ``image -> NCHW feature map`` forward.

    Args:
        body: the timm model; its state dict is the conversion target (``module.body.load_state_dict``).
        kind: ``"cnn"``, ``"swinv2"``, ``"vit"`` or ``"hrnet"`` (see ``BackboneSpec.kind``).
        upsample: Swin: bilinear upsampling factor applied to the final map (official ``upsample='bilinear'``).
        resize_to: ViT: side the input is resized to before patchifying.
        input_affine: optional ``(scale float32[3], shift float32[3])`` applied per channel first, to turn an
            ImageNet-normalised input into the normalisation the weights expect.
    """

    def __init__(
        self,
        body: nn.Module,
        kind: str,
        *,
        upsample: int = 1,
        resize_to: int | None = None,
        input_affine: tuple[Sequence[float], Sequence[float]] | None = None,
        feature_index: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("cnn", "swinv2", "vit", "hrnet"):
            raise ValueError(f"unknown backbone kind {kind!r}")
        self.body = body
        self.kind = kind
        self.upsample = upsample
        self.resize_to = resize_to
        self.feature_index = feature_index
        self.has_input_affine = input_affine is not None
        scale, shift = input_affine if input_affine is not None else ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        # non-persistent: derived from the spec, not learned, keeps body's state dict the only checkpoint content
        self.register_buffer("in_scale", torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Image to feature map.

        Args:
            img: float32[B, 3, S, S], ImageNet mean/std normalised.

        Returns:
            float32[B, C, h, w] feature map.
        """
        if self.has_input_affine:
            img = img * self.in_scale + self.in_shift
        if self.kind == "cnn":
            if self.feature_index is not None:
                return self.body.forward_intermediates(img, indices=[self.feature_index], intermediates_only=True)[0]
            return self.body.forward_features(img)
        if self.kind == "hrnet":
            return self.body(img)[0]
        if self.kind == "swinv2":
            return self._swinv2(img)
        return self._vit(img)

    def _swinv2(self, img: torch.Tensor) -> torch.Tensor:
        # mirrors PoseAnything swin_transformer_v2.py SwinTransformerV2.forward_features (non multi-scale branch):
        # final LayerNorm -> [B, C, H/32, W/32] -> nn.Upsample(scale_factor=2, bilinear, align_corners=False)
        x = self.body.forward_features(img).permute(0, 3, 1, 2).contiguous()  # timm gives NHWC
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return x

    def _vit(self, img: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and img.shape[-1] != self.resize_to:
            img = F.interpolate(img, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        tokens = self.body.forward_features(img)  # [B, prefix + h*w, C], final norm applied
        tokens = tokens[:, self.body.num_prefix_tokens:]
        h, w = self.body.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _renormalize_affine(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # x_imnet = (raw - m_in) / s_in  =>  (raw - m_w) / s_w = x_imnet * s_in / s_w + (m_in - m_w) / s_w
    scale = tuple(si / sw for si, sw in zip(IMAGENET_STD, std))
    shift = tuple((mi - mw) / sw for mi, mw, sw in zip(IMAGENET_MEAN, mean, std))
    return scale, shift
