"""CLIP ViT-B/32 (open_clip, OpenAI key layout) and its text tower."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from baselines.common.text_encoders.base import TextEncoder, WeightsInfo
from baselines.common.text_encoders.image_embedders import ClipImageEmbedder
from baselines.common.text_encoders.weights import (
    _ENV_PATHS,
    CLIP,
    WeightsNotFoundError,
    _file_digest,
    find_clip_weights,
    force_offline,
)
from baselines.common.text_encoders.wordpiece import _load_state_file, _strip_prefixes

# ----------------------------------------------------------------------------------------------------------------
# CLIP ViT-B/32 (open_clip, OpenAI key layout)


def build_clip_vit_b32(weights_path: str | os.PathLike | None = None, allow_random: bool = False, seed: int = 0,
                       memo_dir: Path | None = None):
    """CLIP ViT-B/32 (QuickGELU, OpenAI layout) in eval mode, fp32, with genuine weights when found.

    Accepted files: OpenAI's TorchScript ``ViT-B-32.pt``, an open_clip ``open_clip_pytorch_model.bin`` /
    ``.safetensors``, or any state dict whose CLIP keys carry a ``text_backbone.`` prefix (a CapeX/CapeNext
    checkpoint, whose frozen CLIP is saved in full, spec §10.2).

    Returns:
        (model, WeightsInfo).
    """
    force_offline()
    path, searched = find_clip_weights(weights_path)
    if path is None and not allow_random:
        raise WeightsNotFoundError(
            f"no genuine CLIP ViT-B/32 weights on this machine; looked in: {searched}. Pass weights_path=… or set "
            f"${_ENV_PATHS[CLIP]}, or allow_random=True for a random-init model (tests/profiling only).")
    import open_clip
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None, device="cpu")
    tokenizer_note = "open_clip bundled bpe_simple_vocab_16e6 (the OpenAI CLIP BPE vocabulary)"
    if path is None:
        info = WeightsInfo(False, None, f"random-init:seed{seed}:torch{torch.__version__}", tokenizer_note,
                           note=f"allow_random=True: genuine weights not found in {searched}")
    else:
        state = _load_state_file(path)
        if any(k.startswith("text_backbone.") for k in state):
            state = {k[len("text_backbone."):]: v for k, v in state.items() if k.startswith("text_backbone.")}
        state = _strip_prefixes(state, ("module.",))
        for meta in ("input_resolution", "context_length", "vocab_size"):  # OpenAI archive metadata, not weights
            state.pop(meta, None)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        info = WeightsInfo(True, str(path), _file_digest(path, memo_dir), tokenizer_note)
    return model.eval(), info


class ClipTextEncoder(TextEncoder):
    """CLIP ViT-B/32 text tower as CapeX-CLIP / CapeNext use it: ``encode_text`` then divide by the L2 norm.

    Runs in fp32 on CPU; the official GPU runs use fp16 CLIP (≈1e-3 relative difference, spec §10.3).
    """

    name = CLIP
    pooling = "eot-token@text_projection+l2"

    def __init__(self, model, weights: WeightsInfo, cache_dir) -> None:
        import open_clip

        self.model = model
        self.tokenize = open_clip.get_tokenizer("ViT-B-32-quickgelu")
        super().__init__(int(model.text_projection.shape[1]), weights, cache_dir)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenize(texts)).float()
            return (feats / feats.norm(dim=1, keepdim=True)).numpy()

    def image_embedder(self) -> ClipImageEmbedder:
        """The image tower of the same CLIP (CapeNext's query-image token)."""
        return ClipImageEmbedder(self.model, self.weights)
