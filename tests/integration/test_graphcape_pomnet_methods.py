"""GraphCape and POMNet plug-ins: train a few iterations, reuse the cached model, predict through the contract.

Tiny preset (3 iterations, batch 2, random-init ResNet-18 at 64²) on a tiny dataset with images; the episode is
built as the harness builds it (``AnnotationSet.view`` + ``CropSource`` crops).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from baselines.common.episodic_data import Augmentation  # noqa: E402
from baselines.common.trainer import EpisodeStream, Preset, batch_to_torch  # noqa: E402
from baselines.graphcape.method import GraphCape  # noqa: E402
from baselines.pomnet.method import POMNet, POMNetModel  # noqa: E402
from cape_bench.api import Method, RunContext  # noqa: E402
from cape_bench.data.geometry import image_to_crop  # noqa: E402
from cape_bench.data.mp100 import load_annotation_set, split_file  # noqa: E402
from cape_bench.images import CropSource  # noqa: E402
from tests.helpers import write_tiny_mp100  # noqa: E402

TINY = Preset("tiny", iterations=3, batch_size=2, lr=1e-3, warmup_iters=1, input_size=64, backbone="resnet18",
              log_every=1)


class TinyGraphCape(GraphCape):
    presets = {"tiny": TINY}


class TinyPOMNet(POMNet):
    presets = {"tiny": TINY}


METHODS = {"graphcape": TinyGraphCape, "pomnet": TinyPOMNet}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared with other test runs: 2 threads oversubscribe
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_tiny_mp100(tmp_path_factory.mktemp("gp"), num_categories=3, instances=10, images=True,
                            image_size=80)
    ann_dir = root / "annotations"
    shutil.copy(ann_dir / "mp100_split1_test.json", ann_dir / "mp100_split1_train.json")
    return root


def _ctx(data, cache, log):
    return RunContext(dataset="mp100", split=1, shots=1, ann_dir=str(data / "annotations"),
                      image_root=str(data / "images"), cache_dir=str(cache), options={}, seed=1, log=log)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """name -> (method, cache dir, log messages): each method trained once for the module."""
    out = {}
    for name, cls in METHODS.items():
        cache = tmp_path_factory.mktemp(f"cache-{name}")
        messages: list[str] = []
        method = cls(preset="tiny", backbone_weights="random")
        method.prepare(_ctx(data, cache, messages.append))
        out[name] = (method, cache, messages)
    return out


def _episode(data, method, category_id, n_queries=4, shots=1):
    ann = load_annotation_set(split_file(data / "annotations", 1, "test"))
    crops = CropSource(data / "images", method.info.input_size)
    objs = ann.cat2obj[category_id]

    def view(ids, gt):
        return ann.view(ids, with_ground_truth=gt, crops=crops.crops([ann.instances[i] for i in ids]))

    return ann, view(objs[:shots], True), view(objs[shots:shots + n_queries], False)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trains_and_predicts_in_image_pixels(name, trained, data):
    method, cache, messages = trained[name]
    assert isinstance(method, Method)
    assert method.info.name == name and method.info.input_size == 64
    assert any("training split 1" in m for m in messages)
    prov = method.provenance()
    assert "here with preset 'tiny' (3 iterations)" in prov["trained"]
    assert prov["backbone_weights"] == "random init" and np.isfinite(prov["final_loss"]["mse_loss" if name == "pomnet"
                                                                                     else "proposal_loss"])
    # the trained weights moved away from the (seeded) initial ones
    fresh = method.build_model().state_dict()
    trained_sd = method.model.state_dict()
    assert any(not torch.equal(fresh[k], trained_sd[k]) for k in fresh if k.startswith("head."))

    for category_id in (1, 3):  # 4 and 6 keypoints
        ann, support, queries = _episode(data, method, category_id)
        k = ann.categories[category_id].num_keypoints
        state = method.encode_support(support)
        pred = method.predict(state, queries)
        assert pred.shape == (4, k, 2) and pred.dtype == np.float32
        assert np.all(np.isfinite(pred))
        # image pixels: inside each query's own crop window (crop px would ignore the per-query offset)
        in_crop = image_to_crop(pred, queries.center_px, queries.scale, (64, 64)) / 64
        assert np.all((in_crop > -0.02) & (in_crop < 1.02)), in_crop
        # the image frame follows the query box: shifted centre -> shifted prediction, doubled scale -> doubled
        # offsets from the centre (same crop pixels, so the same normalised prediction)
        shifted = dataclasses.replace(queries, center_px=queries.center_px + np.array([100.0, -40.0], np.float32))
        np.testing.assert_allclose(method.predict(state, shifted), pred + np.array([100.0, -40.0]), atol=1e-3)
        bigger = dataclasses.replace(queries, scale=queries.scale * 2)
        np.testing.assert_allclose(method.predict(state, bigger) - queries.center_px[:, None],
                                   2 * (pred - queries.center_px[:, None]), atol=1e-3)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batched_queries_equal_one_by_one(name, trained, data):
    method = trained[name][0]
    _, support, queries = _episode(data, method, 3, n_queries=5)
    state = method.encode_support(support)
    batch_size = method.batch_size
    try:
        method.batch_size = 32
        together = method.predict(state, queries)
        method.batch_size = 1
        alone = method.predict(state, queries)
        method.batch_size = 2  # uneven last batch
        pairs = method.predict(state, queries)
    finally:
        method.batch_size = batch_size
    np.testing.assert_allclose(together, alone, atol=1e-3)
    np.testing.assert_allclose(together, pairs, atol=1e-3)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cached_model_is_reused_without_training(name, trained, data):
    method, cache, _ = trained[name]
    files = list(cache.rglob("model.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    messages: list[str] = []
    again = METHODS[name](preset="tiny", backbone_weights="random")
    again.prepare(_ctx(data, cache, messages.append))
    assert any("reusing the model trained earlier" in m for m in messages)
    assert not any("training split" in m for m in messages)
    assert files[0].stat().st_mtime_ns == stamp and list(cache.rglob("model.safetensors")) == files
    a, b = method.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.provenance()["checkpoint"] == method.provenance()["checkpoint"]


def test_graphcape_uses_the_skeleton(trained, data):
    method = trained["graphcape"][0]
    model = method.model
    # the trained kpt_branch output layers are no longer zero, so the graph decoder reaches the keypoints
    assert any(branch.mlp[-1].weight.abs().sum() > 0 for branch in model.head.kpt_branch)
    _, support, queries = _episode(data, method, 3)
    assert len(support.category.skeleton) == 5
    with_skeleton = method.predict(method.encode_support(support), queries)
    no_edges = dataclasses.replace(support, category=dataclasses.replace(
        support.category, skeleton=np.zeros((0, 2), np.int64)))
    without = method.predict(method.encode_support(no_edges), queries)
    assert not np.allclose(with_skeleton, without, atol=0, rtol=0)

    # training reads batch["skeletons"]
    ann = load_annotation_set(split_file(data / "annotations", 1, "train"))
    stream = EpisodeStream(ann, str(data / "images"), 1, TINY, method.sigma, 1, pad_to=method.pad_to,
                           augment=Augmentation(enabled=False))
    batch = batch_to_torch(stream.batch_at(0), "cpu")
    assert method.pad_to is None and batch["target_q"].shape[1] == int(batch["num_keypoints"].max())
    official_layout = EpisodeStream(ann, str(data / "images"), 1, TINY, method.sigma, 1, pad_to=100,
                                    augment=Augmentation(enabled=False))
    padded = batch_to_torch(official_layout.batch_at(0), "cpu")
    assert padded["target_q"].shape[1] == 100  # official max_kpt_num slots
    model.eval()
    with torch.no_grad():
        full = model.training_losses(batch)
        empty = model.training_losses({**batch, "skeletons": [np.zeros((0, 2), np.int64)] * 2})
        official = model.training_losses(padded)
    assert full["l1_loss_layer2"] != empty["l1_loss_layer2"]
    assert full["proposal_loss"] == empty["proposal_loss"]  # proposals come before the graph decoder
    # padded slots are masked everywhere: the 100-slot layout gives the same losses
    for name, value in official.items():
        torch.testing.assert_close(full[name], value, rtol=1e-5, atol=1e-6)

    # a 1-based skeleton (MP-100 ships some) reaches one slot past K: the batch keeps that slot, padded and masked
    for cid, cat in list(ann.categories.items()):
        ann.categories[cid] = dataclasses.replace(cat, skeleton=cat.skeleton + 1)
    one_based = EpisodeStream(ann, str(data / "images"), 1, TINY, method.sigma, 1, pad_to=method.pad_to,
                              augment=Augmentation(enabled=False)).batch_at(0)
    assert one_based.target_q.shape[1] == int(one_based.num_keypoints.max()) + 1
    with torch.no_grad():
        losses = model.training_losses(batch_to_torch(one_based, "cpu"))
    assert all(torch.isfinite(v) for v in losses.values())


def test_pomnet_structure_and_heatmap_sizes(trained, data):
    method = trained["pomnet"][0]
    model = method.model
    assert isinstance(model, POMNetModel)
    # the tiny preset trains the whole network: two encoders, as officially
    assert not method.shared_backbone and model.backbone.support is not None
    assert method.provenance()["encoders"].startswith("two")
    sd = model.state_dict()
    assert any(k.startswith("backbone.query.body.") for k in sd) and any(k.startswith("backbone.support.body.")
                                                                         for k in sd)
    assert not torch.equal(sd["backbone.query.body.conv1.weight"], sd["backbone.support.body.conv1.weight"])
    ann = load_annotation_set(split_file(data / "annotations", 1, "train"))
    stream = EpisodeStream(ann, str(data / "images"), 1, TINY, method.sigma, 1, pad_to=method.pad_to)
    batch = batch_to_torch(stream.batch_at(0), "cpu")
    assert method.pad_to is None and batch["target_q"].shape[1] == int(batch["num_keypoints"].max())
    feats = model.query_features(batch["img_q"])
    assert feats.shape[-2:] == (2, 2)  # 64 / 32
    model.eval()
    with torch.no_grad():
        heatmaps = model.head(feats, [model.support_features(batch["img_s"][:, 0])], [batch["target_s"][:, 0]],
                              batch["mask_s"][..., None])
        assert heatmaps.shape[-2:] == batch["target_q"].shape[-2:] == (16, 16)  # 8 x the features = input / 4
        loss = model.training_losses(batch)["mse_loss"]
    # official JointsMSELoss with weights target_weight_q * mask_s
    w = (batch["weight_q"] * batch["mask_s"])[..., None, None]
    expected = (((heatmaps - batch["target_q"]) * w) ** 2).mean(dim=(0, 2, 3)).sum() / heatmaps.shape[1]
    torch.testing.assert_close(loss, expected)

    # support state: σ = 2 heatmaps at input / 4, mask = product of the target weights
    _, support, _ = _episode(data, method, 2, shots=2)
    feats_s, heatmaps_s, mask = method.encode_support(support)
    k = support.category.num_keypoints
    assert feats_s.shape[0] == 2 and heatmaps_s.shape == (2, k, 16, 16) and mask.shape == (k,)
    np.testing.assert_array_equal(mask.numpy() > 0, support.visible.all(axis=0))
    assert heatmaps_s.max() == 1.0


def test_pomnet_quick_preset_and_a_shared_frozen_backbone():
    method = POMNet(preset="quick", backbone_weights="random")
    # quick: the official two encoders, each a fine-tuned stride-16 MobileNetV2, resized to 4x4 cells at 128 px
    assert not method.shared_backbone and method.pad_to is None and method.info.input_size == 128
    model = method.build_model()
    assert model.backbone.support is not None and model.feature_size == 4 and model.head.cfg.in_channels == 96
    assert model.head.cfg.num_deconv_filters == (64, 64, 64) and method.deconv_width == 64
    prov = method.provenance()
    assert prov["encoders"].startswith("two") and "deconv width 64" in prov["head"]
    # a frozen backbone is shared by support and query: one copy, no support-encoder weights
    frozen = POMNet(preset="quick", backbone_weights="random", train={"freeze_backbone": True})
    assert frozen.shared_backbone
    model = frozen.build_model()
    assert model.backbone.support is None and model.backbone.support_encoder() is model.backbone.query
    assert not any(k.startswith("backbone.support.") for k in model.state_dict())
    assert "shared" in frozen.provenance()["encoders"]
    assert POMNet(preset="quick", deconv_width=256).deconv_width == 256
    official = POMNet(preset="official")
    assert not official.shared_backbone and official.pad_to == 100 and official.backbone_name == "resnet50"
    assert official.deconv_width == 256 and "head" not in official.provenance()
    with pytest.raises(ValueError, match="multiple of 32"):
        TinyPOMNet.presets = {"bad": dataclasses.replace(TINY, name="bad", input_size=72)}
        try:
            TinyPOMNet(preset="bad")
        finally:
            TinyPOMNet.presets = {"tiny": TINY}


def test_presets_follow_the_official_configs():
    g = GraphCape.presets["official"]
    assert (g.lr, g.warmup_iters, g.epochs, g.milestones, g.batch_size, g.input_size, g.backbone) == (
        1e-5, 1000, 200, (160, 180), 16, 256, "swinv2_tiny")
    p = POMNet.presets["official"]
    assert (p.lr, p.warmup_iters, p.epochs, p.milestones, p.batch_size, p.input_size, p.backbone) == (
        5e-4, 500, 210, (170, 200), 16, 256, "resnet50")
    for cls in (GraphCape, POMNet):
        q = cls.presets["quick"]
        assert (q.input_size, q.backbone, q.freeze_backbone) == (128, "mobilenetv2_s16", False)
    for cls in (GraphCape, POMNet):
        b = cls.presets["budget"]
        assert (b.input_size, b.backbone, b.freeze_backbone, b.iterations) == (128, "mobilenetv2_s16", True, 800)
        assert cls().preset.name == "budget"
    assert POMNet().deconv_width == 32 and POMNet().shared_backbone  # a frozen encoder serves both roles
    assert GraphCape.sigma == 1.0 and POMNet.sigma == 2.0
    assert GraphCape(preset="official").feature_size == 16 and GraphCape(preset="quick").feature_size == 8
    assert "category skeleton" in GraphCape.info.extra_inputs


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_losses_fall_on_a_repeated_batch(name, data):
    """Gradients reach the head: Adam steps on one batch lower its smooth loss term (train mode, seeded dropout).

    GraphCape's L1 terms follow the arg-max proposals (discrete), so its similarity-map ``heatmap_loss`` is tracked;
    POMNet has one term, the heatmap MSE.
    """
    key = {"graphcape": "heatmap_loss", "pomnet": "mse_loss"}[name]
    method = METHODS[name](preset="tiny", backbone_weights="random")
    model = method.build_model().train()
    ann = load_annotation_set(split_file(data / "annotations", 1, "train"))
    stream = EpisodeStream(ann, str(data / "images"), 1, TINY, method.sigma, 1, pad_to=method.pad_to)
    batch = batch_to_torch(stream.batch_at(0), "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    tracked = []
    for _ in range(6):
        losses = model.training_losses(batch)
        total = sum(v for k, v in losses.items() if "loss" in k)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        tracked.append(losses[key].item())
    assert all(np.isfinite(tracked)) and max(tracked[-2:]) < 0.8 * tracked[0], tracked
