"""Per-instance stages computed once per split (``cape_bench.feature_cache``, the runner's cached loop).

* :class:`FeatureCache`: LRU with a byte bound, spills evicted entries to ``.npy`` files and reloads them exactly,
  counts hits / misses / memory / disk;
* exactness: for every registered PyTorch method (tiny random-init preset, as tests/contract/test_contract.py), the cached
  loop (features once per instance, several episodes per forward, spilling cache) predicts what the uncached loop
  and the per-pair path predict, to 1e-4 px;
* POMNet's head runs on the category's real keypoints only, cached or not.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cape_bench import registry
from cape_bench.api import RunContext, role_stages, supports_instance_cache
from cape_bench.feature_cache import MB, FeatureCache
from tests.helpers import write_tiny_mp100

TORCH_METHODS = sorted(n for n in registry.BUILTIN_METHODS
                       if getattr(registry.load_method_class(n), "presets", None) is not None)
ATOL_PX = 1e-4


# ------------------------------------------------------------------------------------------------ FeatureCache


def _entry(seed: int, n: int = 1000) -> dict[str, np.ndarray]:  # 4000 + 64 bytes
    rng = np.random.default_rng(seed)
    return {"feat": rng.standard_normal(n).astype(np.float32), "emb": rng.standard_normal(16).astype(np.float32)}


def test_lru_spills_to_disk_and_reloads_exactly(tmp_path):
    cache = FeatureCache(max_bytes=3 * 4064, spill_dir=tmp_path)
    for i in range(5):
        cache.put(("m", "image", i), _entry(i))
    s = cache.stats
    assert s.memory_entries == 3 and s.memory_bytes == 3 * 4064 and s.peak_memory_bytes <= cache.max_bytes
    assert s.spills == 2 and s.disk_entries == 2 and s.disk_bytes == 2 * 4064
    spilled = sorted(p.name for p in cache.spill_path.rglob("*.npy"))
    assert spilled == ["emb.npy", "emb.npy", "feat.npy", "feat.npy"]
    assert len(cache) == 5 and ("m", "image", 0) in cache and ("m", "image", 9) not in cache
    # the oldest two went to disk; reading one back is exact and promotes it (evicting the LRU in memory)
    got = cache.get(("m", "image", 0))
    for k, v in _entry(0).items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype
    assert cache.stats.hits_disk == 1 and cache.stats.hits_memory == 0
    assert cache.stats.memory_bytes <= cache.max_bytes
    assert cache.get(("m", "image", 0)) is not None and cache.stats.hits_memory == 1
    assert cache.get(("m", "image", 9)) is None and cache.stats.misses == 1
    assert not cache.probe(("m", "image", 10)) and cache.probe(("m", "image", 4)) and cache.stats.misses == 2
    assert cache.stats.hit_rate == pytest.approx(2 / 4)
    stacked = cache.get_many([("m", "image", i) for i in (4, 1, 0)])  # 1 comes back from disk
    np.testing.assert_array_equal(stacked["feat"], np.stack([_entry(i)["feat"] for i in (4, 1, 0)]))
    assert cache.stats.hits_disk == 2
    with pytest.raises(KeyError):
        cache.get_many([("m", "image", 99)])
    folder = cache.spill_path
    cache.close()
    assert not folder.exists() and cache.stats.memory_bytes == 0 and len(cache) == 0


def test_stored_arrays_are_copies_and_read_only(tmp_path):
    cache = FeatureCache(max_bytes=MB, spill_dir=tmp_path)
    a = np.arange(6, dtype=np.float32)
    cache.put(("k",), {"x": a})
    a[:] = -1
    got = cache.get(("k",))["x"]
    np.testing.assert_array_equal(got, np.arange(6))
    with pytest.raises(ValueError):
        got[0] = 5
    with pytest.raises(ValueError):
        cache.put(("bad",), {"not a name": a})
    cache.close()


def test_zero_memory_keeps_everything_on_disk_and_discard(tmp_path):
    cache = FeatureCache(max_bytes=0, spill_dir=tmp_path)
    for i in range(3):
        cache.put(("a" if i < 2 else "b", i), _entry(i, 10))
    assert cache.stats.memory_entries == 0 and cache.stats.disk_entries == 3 and cache.stats.peak_memory_bytes == 0
    np.testing.assert_array_equal(cache.get(("a", 1))["feat"], _entry(1, 10)["feat"])
    assert cache.stats.memory_bytes == 0
    assert cache.discard_where(lambda k: k[0] == "a") == 2
    assert len(cache) == 1 and cache.stats.disk_entries == 1 and len(list(cache.spill_path.iterdir())) == 1
    cache.close()


# ------------------------------------------------------------------------------------------------ exactness

torch = pytest.importorskip("torch")
pytest.importorskip("timm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = write_tiny_mp100(tmp_path_factory.mktemp("instance_cache"), num_categories=2, instances=14, images=True,
                            image_size=80, train=True)
    yield root
    torch.set_num_threads(threads)


def _tiny_preset(name, monkeypatch, backbone="resnet18"):
    from baselines.common.trainer import Preset

    cls = registry.load_method_class(name)
    monkeypatch.setitem(cls.presets, "cache-tiny", Preset("cache-tiny", iterations=2, batch_size=2, lr=1e-4,
                                                          warmup_iters=1, input_size=64, backbone=backbone,
                                                          log_every=1))
    if name == "pomnet":
        # the official init (N(0, 0.001) convs in the per-keypoint branch) gives ~1e-9 heatmaps; wider convs give O(1)
        # heatmaps that differ between queries, so that the heatmap-level comparison below is not blind
        from torch import nn

        from baselines.pomnet.model import TransformerHead

        official = TransformerHead.init_weights

        def informative_init(head):
            official(head)
            for branch in (head.relation_model, head.deconv_layers, head.final_layer):
                for m in branch.modules():
                    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                        nn.init.normal_(m.weight, std=0.05)

        monkeypatch.setattr(TransformerHead, "init_weights", informative_init)
    return cls


def _run(tiny, tmp_path, name, tag, cache_mb, shots=(1, 3), batch_size=0, episodes=3, variants=()):
    from rich.console import Console

    from cape_bench.config import load_config
    from cape_bench.runner import Runner

    put = [f'dataset.name="mp100"', f'dataset.ann_dir="{tiny / "annotations"}"',
           f'dataset.image_root="{tiny / "images"}"', "protocol.splits=[1]", f"protocol.shots={list(shots)}",
           f"protocol.num_episodes={episodes}", "protocol.num_queries=4", f'run.methods=["{name}"]', "run.report=false",
           f"run.feature_cache_mb={cache_mb}", f'synth.cache_dir="{tmp_path / "cache"}"']
    if name in TORCH_METHODS:
        put += [f'methods.{name}.preset="cache-tiny"', f'methods.{name}.options={{backbone_weights="random"}}']
    if batch_size:
        put.append(f"methods.{name}.batch_size={batch_size}")
    for label, train in variants:  # more labels on the same method, each with its own training overrides
        put += [f'methods.{label}.method="{name}"', f'methods.{label}.preset="cache-tiny"',
                f'methods.{label}.options={{backbone_weights="random"}}', f"methods.{label}.train={train}"]
    if variants:
        put += [f'run.methods={[name, *(label for label, _ in variants)]}'.replace("'", '"'), "run.train_jobs=1"]
    cfg = load_config(None, put)
    runner = Runner(cfg, tmp_path / tag, console=Console(file=open(tmp_path / f"{tag}.log", "w"), width=200),
                    show_progress=False)
    outcomes = runner.execute()
    assert [o.status for o in outcomes] == ["done"] * len(shots) * (1 + len(variants)), [o.error for o in outcomes]
    assert runner._features is None  # closed: spill folder gone
    return runner.run


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_cached_loop_equals_uncached_loop(name, tiny, tmp_path, monkeypatch):
    """Whole cells through the runner: cache off vs a 0.05 MB cache (spills, reloads) and a roomy one."""
    import pandas as pd

    _tiny_preset(name, monkeypatch)
    plain = _run(tiny, tmp_path, name, "plain", 0)
    # batch 6 with 4 queries per episode: a predict call mixes episodes (and splits one group of 3 into 1 + 2)
    spilling = _run(tiny, tmp_path, name, "spill", 0.05, batch_size=6)
    roomy = _run(tiny, tmp_path, name, "roomy", 64)
    for shots in (1, 3):
        ref = pd.read_parquet(plain.predictions(name, 1, shots))
        assert ref[["pred_x", "pred_y"]].std().min() > 0.5, "predictions do not vary: the comparison would be blind"
        rec = json.loads(plain.cell(name, 1, shots).read_text())
        assert rec["feature_cache"] == {"used": False, "reason": "feature cache off (run.feature_cache_mb = 0)"}
        for run in (spilling, roomy):
            got = pd.read_parquet(run.predictions(name, 1, shots))
            assert got[["pair", "kpt", "query_ann_id"]].equals(ref[["pair", "kpt", "query_ann_id"]])
            delta = np.abs(got[["pred_x", "pred_y"]].to_numpy() - ref[["pred_x", "pred_y"]].to_numpy()).max()
            print(f"{name} {shots}-shot {run.root.name}: max |Δ| = {delta:.2e} px")
            assert delta <= ATOL_PX, f"{name} {shots}-shot: cached predictions differ by {delta} px"
        rec = json.loads(roomy.cell(name, 1, shots).read_text())
        fc = rec["feature_cache"]
        assert fc["used"] and "instance_s" in rec["timings"]
        if shots == 1:  # the 3-shot cell reuses every feature of the 1-shot cell that it needs
            assert fc["instances_computed"] > 0 and fc["misses"] == fc["instances_computed"]
        assert fc["hits_memory"] > fc["misses"] and fc["hits_disk"] == 0 and fc["disk_bytes"] == 0
        assert 0 < fc["hit_rate"] <= 1 and 0 < fc["memory_bytes"] <= fc["peak_memory_bytes"] <= 64 * MB
        fc = json.loads(spilling.cell(name, 1, shots).read_text())["feature_cache"]
        assert fc["spills"] > 0 and fc["hits_disk"] > 0 and fc["peak_memory_bytes"] <= 0.05 * MB


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_equal_support_states_share_their_queries_predictions(name, tiny, tmp_path, monkeypatch):
    """Text methods: a query's prediction depends on the support only through the category and the keypoint mask,
    so with 12 episodes per category (queries recur) the head runs on fewer pairs — and predicts the same."""
    import pandas as pd

    _tiny_preset(name, monkeypatch)
    plain = _run(tiny, tmp_path, name, "plain", 0, shots=(1,), episodes=12)
    cached = _run(tiny, tmp_path, name, "cached", 64, shots=(1,), episodes=12)
    fc = json.loads(cached.cell(name, 1, 1).read_text())["feature_cache"]
    pairs = 2 * 12 * 4
    assert 0 < fc["pairs_computed"] < pairs * 0.8, fc["pairs_computed"]
    ref = pd.read_parquet(plain.predictions(name, 1, 1))
    got = pd.read_parquet(cached.predictions(name, 1, 1))
    assert len(got) == len(ref) and got[["pair", "kpt"]].equals(ref[["pair", "kpt"]])
    assert np.abs(got[["pred_x", "pred_y"]].to_numpy() - ref[["pred_x", "pred_y"]].to_numpy()).max() <= ATOL_PX


def test_pomnet_resizes_a_finer_cached_map_as_features_at_does(tiny, tmp_path, monkeypatch):
    """On a stride-16 backbone POMNet caches the encoder's own 4×4 map (the one the lineage heads use) and resizes it
    to its 2×2 cells at use: the same predictions as the uncached loop, which resizes inside ``features_at``."""
    import pandas as pd

    _tiny_preset("pomnet", monkeypatch, backbone="mobilenetv2_s16")
    plain = _run(tiny, tmp_path, "pomnet", "plain", 0, shots=(1,))
    cached = _run(tiny, tmp_path, "pomnet", "cached", 64, shots=(1,))
    fc = json.loads(cached.cell("pomnet", 1, 1).read_text())["feature_cache"]
    assert fc["shared_stages"] and all(fp.startswith("feat = features_at(backbone, crop, 4) | 64 px crop")
                                       for fp in fc["shared_stages"].values()), fc["shared_stages"]
    ref = pd.read_parquet(plain.predictions("pomnet", 1, 1))
    got = pd.read_parquet(cached.predictions("pomnet", 1, 1))
    assert ref[["pred_x", "pred_y"]].std().min() > 0.5, "predictions do not vary: the comparison would be blind"
    assert np.abs(got[["pred_x", "pred_y"]].to_numpy() - ref[["pred_x", "pred_y"]].to_numpy()).max() <= ATOL_PX


def test_a_stage_on_the_same_weights_is_computed_once_per_run(tiny, tmp_path, monkeypatch):
    """Shared stages (``stage_fingerprint``): a second label on the same trained model reads the first one's
    backbone features (none computed) and predicts exactly what the first does; a model trained otherwise (other
    weights, another fingerprint) computes its own."""
    import pandas as pd

    _tiny_preset("capeformer", monkeypatch)
    run = _run(tiny, tmp_path, "capeformer", "shared", 64, shots=(1,),
               variants=[("cf-twin", "{}"), ("cf-other", "{lr = 3e-3}")])
    cell = {label: json.loads(run.cell(label, 1, 1).read_text())["feature_cache"]
            for label in ("capeformer", "cf-twin", "cf-other")}
    fingerprint = {label: set(fc["shared_stages"].values()) for label, fc in cell.items()}
    assert fingerprint["capeformer"] and fingerprint["cf-twin"] == fingerprint["capeformer"]
    assert not fingerprint["cf-other"] & fingerprint["capeformer"]
    assert cell["capeformer"]["instances_computed"] > 0 and cell["cf-twin"]["instances_computed"] == 0
    assert cell["cf-other"]["instances_computed"] == cell["capeformer"]["instances_computed"]
    ref = pd.read_parquet(run.predictions("capeformer", 1, 1))
    twin = pd.read_parquet(run.predictions("cf-twin", 1, 1))
    other = pd.read_parquet(run.predictions("cf-other", 1, 1))
    assert twin[["pred_x", "pred_y"]].equals(ref[["pred_x", "pred_y"]])
    assert np.abs(other[["pred_x", "pred_y"]].to_numpy() - ref[["pred_x", "pred_y"]].to_numpy()).max() > 100 * ATOL_PX


def test_support_image_methods_never_share_predictions(tiny, tmp_path, monkeypatch):
    _tiny_preset("capeformer", monkeypatch)
    run = _run(tiny, tmp_path, "capeformer", "cf", 64, shots=(1,), episodes=12)
    assert json.loads(run.cell("capeformer", 1, 1).read_text())["feature_cache"]["pairs_computed"] == 2 * 12 * 4


@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_bad_cached_predictions_name_episode_and_query(fault, tiny, tmp_path, monkeypatch):
    """The cached loop checks each predict call like the per-episode loop: the cell fails with the episode named."""
    from rich.console import Console

    from cape_bench.config import load_config
    from cape_bench.runner import Runner

    cls = _tiny_preset("capeformer", monkeypatch)
    original = cls.predict_cached

    def faulty(self, states, queries, feats, episode):
        out = np.array(original(self, states, queries, feats, episode))
        if fault == "nan":
            out[-1, 0, 0] = np.nan
            return out
        return out[:, :-1]

    monkeypatch.setattr(cls, "predict_cached", faulty)
    cfg = load_config(None, [f'dataset.name="mp100"', f'dataset.ann_dir="{tiny / "annotations"}"',
                             f'dataset.image_root="{tiny / "images"}"', "protocol.splits=[1]", "protocol.shots=[1]",
                             "protocol.num_episodes=3", "protocol.num_queries=4", 'run.methods=["capeformer"]',
                             "run.report=false", f'synth.cache_dir="{tmp_path / "cache"}"',
                             'methods.capeformer.preset="cache-tiny"',
                             'methods.capeformer.options={backbone_weights="random"}'])
    (outcome,) = Runner(cfg, tmp_path / "run", console=Console(file=open(tmp_path / "log", "w")),
                        show_progress=False).execute()
    assert outcome.status == "failed"
    if fault == "nan":
        assert "non-finite prediction for query annotation" in outcome.error and "episode " in outcome.error
    else:
        assert "predict returned shape" in outcome.error and "episode " in outcome.error


def _prepared(name, tiny, tmp_path, monkeypatch):
    from cape_bench.data.mp100 import load_annotation_set

    cls = _tiny_preset(name, monkeypatch)
    method = cls(preset="cache-tiny", backbone_weights="random")
    ctx = RunContext(dataset="mp100", split=1, shots=1, ann_dir=str(tiny / "annotations"),
                     image_root=str(tiny / "images"), cache_dir=str(tmp_path / "cache"), options={}, seed=1,
                     log=lambda m: None)
    method.prepare(ctx)
    return method, load_annotation_set(tiny / "annotations" / "mp100_split1_test.json")


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_predict_cached_equals_the_per_pair_path(name, tiny, tmp_path, monkeypatch):
    """Two episodes in one ``predict_cached`` call vs every (support, query) pair through encode_support/predict."""
    from cape_bench.images import CropSource

    method, ann = _prepared(name, tiny, tmp_path, monkeypatch)
    assert supports_instance_cache(method)
    stages = role_stages(method.instance_stages())
    crops = CropSource(tiny / "images", method.info.input_size)
    objs = list(ann.cat2obj[2])
    episodes = [(objs[0:2], objs[2:6]), (objs[6:8], objs[8:11])]  # (supports, queries), 2-shot

    def view(ids, gt=True, with_crops=True):
        return ann.view(ids, with_ground_truth=gt, crops=crops.crops([ann.instances[i] for i in ids]) if with_crops
                        else None)

    heatmaps = []  # POMNet: the heatmaps behind the argmax (random-init peaks hardly move with the input)
    if name == "pomnet":
        original = method.model.head.keypoint_heatmaps

        def spy(out_dec, memory):
            heatmaps.append(original(out_dec, memory).clone())
            return heatmaps[-1]

        monkeypatch.setattr(method.model.head, "keypoint_heatmaps", spy)

    def pop_heatmaps():
        out = torch.cat(heatmaps).numpy() if heatmaps else None
        heatmaps.clear()
        return out

    per_pair = np.concatenate([np.asarray(method.predict(method.encode_support(view(s)), view([q], False)))
                               for s, qs in episodes for q in qs])
    per_pair_maps = pop_heatmaps()

    def feats(role, ids):
        if role not in stages:
            return {}
        return {k: v.cpu().numpy() for stage in stages[role]
                for k, v in method.instance_features(view(ids, gt=False), stage).items()}

    states = [method.encode_support_cached(view(s, with_crops=False), feats("support", s)) for s, _ in episodes]
    q_ids = [q for _, qs in episodes for q in qs]
    owner = np.repeat(np.arange(len(episodes)), [len(qs) for _, qs in episodes])
    q_feats = feats("query", q_ids)
    cached = np.asarray(method.predict_cached(states, view(q_ids, False, False), q_feats, owner))
    cached_maps = pop_heatmaps()
    assert cached.shape == per_pair.shape == (len(q_ids), ann.categories[2].num_keypoints, 2)
    delta = np.abs(cached - per_pair).max()
    print(f"{name}: predict_cached vs per pair max |Δ| = {delta:.2e} px")
    assert delta <= ATOL_PX

    def compared(pred):  # what the check compares: keypoints, for POMNet also its heatmaps
        return pred if name != "pomnet" else np.concatenate([pred.ravel(), pop_heatmaps().ravel()])

    reference = compared(per_pair) if name != "pomnet" else np.concatenate([per_pair.ravel(), per_pair_maps.ravel()])
    if name == "pomnet":
        assert cached_maps.shape == per_pair_maps.shape
        np.testing.assert_allclose(cached_maps, per_pair_maps, rtol=0, atol=1e-5)
    # the comparison sees the features: the query features in the wrong order give other predictions
    rolled = {k: np.roll(v, 1, axis=0) for k, v in q_feats.items()}
    wrong = compared(np.asarray(method.predict_cached(states, view(q_ids, False, False), rolled, owner)))
    assert np.abs(wrong - reference).max() > 100 * ATOL_PX
    if "support" in stages:  # ... and so does the episode assignment (each query with its episode's supports)
        swapped = compared(np.asarray(method.predict_cached(states[::-1], view(q_ids, False, False), q_feats, owner)))
        assert np.abs(swapped - reference).max() > 100 * ATOL_PX


def test_pomnet_head_runs_on_real_keypoints_only(tiny, tmp_path, monkeypatch):
    method, ann = _prepared("pomnet", tiny, tmp_path, monkeypatch)
    from cape_bench.images import CropSource

    crops = CropSource(tiny / "images", method.info.input_size)
    head = method.model.head
    seen = []
    original = head.keypoint_heatmaps

    def spy(out_dec, memory):
        seen.append(out_dec.shape[1])
        return original(out_dec, memory)

    monkeypatch.setattr(head, "keypoint_heatmaps", spy)
    for cat in sorted(ann.cat2obj):
        objs = list(ann.cat2obj[cat])
        k = ann.categories[cat].num_keypoints
        support = ann.view(objs[:1], crops=crops.crops([ann.instances[i] for i in objs[:1]]))
        queries = ann.view(objs[1:4], with_ground_truth=False,
                           crops=crops.crops([ann.instances[i] for i in objs[1:4]]))
        method.predict(method.encode_support(support), queries)
        stage = method.instance_stages()
        s_feats = {n: v.numpy() for n, v in method.instance_features(support, stage["support"]).items()}
        q_feats = {n: v.numpy() for n, v in method.instance_features(queries, stage["query"]).items()}
        state = method.encode_support_cached(support, s_feats)
        method.predict_cached([state], queries, q_feats, np.zeros(3, np.int64))
        assert seen == [k, k], f"category {cat}: the per-keypoint branch ran on {seen} slots, not K = {k}"
        seen.clear()


def test_methods_without_stages_run_uncached(tiny, tmp_path):
    from cape_bench.methods.reference import SupportCopy

    assert not supports_instance_cache(SupportCopy())
    run = _run(tiny, tmp_path, "support-copy", "copy", 64, shots=(1,))
    rec = json.loads(run.cell("support-copy", 1, 1).read_text())
    assert rec["feature_cache"]["used"] is False and "instance_s" not in rec["timings"]
