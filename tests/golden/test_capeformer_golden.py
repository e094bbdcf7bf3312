"""CapeFormer head vs. the official golden fixture (``golden/capeformer_head_reduced.*``).

The fixture was produced by the official ``TwoStageHead`` (2 shots, reduced sizes, random
weights, eval mode). Each output and loss term is a separate test case so a failure names the
diverging output. Also checks the MSRA support-heatmap encoder against the official pipeline
fixture, official-size state-dict keys against the full-model manifest, and batch behaviour.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baselines.capeformer.model import CapeFormerConfig, CapeFormerHead  # noqa: E402
from baselines.common.geometry import crop_to_image, image_to_crop, normalized_to_image  # noqa: E402
from baselines.common.lineage_head import head_state_from_checkpoint  # noqa: E402
from baselines.common.positional import support_order_embedding  # noqa: E402
from baselines.common.support_tokens import msra_support_targets, pool_support_tokens  # noqa: E402

NAME = "capeformer_head_reduced"
# (atol, rtol) per output: spec §8 suggests 1e-5 on coordinates, 1e-4/1e-4 on maps/features.
OUTPUT_TOL = {
    "output_kpts": (1e-5, 0.0),
    "initial_proposals_for_loss": (1e-5, 0.0),
    "out_points": (1e-5, 0.0),
    "similarity_map": (1e-4, 1e-4),
    "outs_dec": (1e-4, 1e-4),
    "memory": (1e-4, 1e-4),
}
LOSSES = ["heatmap_loss", "proposal_loss", "l1_loss_layer0", "l1_loss_layer1", "l1_loss_layer2"]


def _t(arr) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr))


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(1)
    data = dict(np.load(golden_dir / f"{NAME}.npz"))
    meta = json.loads((golden_dir / f"{NAME}.json").read_text())
    cfg = CapeFormerConfig.from_official(meta["head_cfg"])
    head = CapeFormerHead(cfg).eval()
    params = {k[len("param::"):]: _t(v) for k, v in data.items() if k.startswith("param::")}
    head.load_state_dict(params, strict=True)
    inp = {k[len("in::"):]: _t(v) for k, v in data.items() if k.startswith("in::")}
    ref = {k[len("out::"):]: v for k, v in data.items() if k.startswith("out::")}
    shots = meta["num_shots"]
    with torch.no_grad():
        out = head.forward_support_images(
            inp["x"], [inp[f"feature_s_{i}"] for i in range(shots)], [inp[f"target_s_{i}"] for i in range(shots)],
            inp["mask_s"])
        losses = head.get_loss(out, inp["target_keypoints"], inp["target_q"], inp["target_weight_q"] * inp["mask_s"],
                               inp["target_sizes"])
    return {"head": head, "cfg": cfg, "inp": inp, "ref": ref, "out": out, "losses": losses, "params": params,
            "shots": shots}


def test_state_dict_keys_are_official(golden):
    assert set(golden["head"].state_dict()) == set(golden["params"])


@pytest.mark.parametrize("name", sorted(OUTPUT_TOL))
def test_output_matches_golden(golden, name):
    atol, rtol = OUTPUT_TOL[name]
    got = getattr(golden["out"], name).numpy()
    want = golden["ref"][name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_matches_golden(golden, name):
    assert set(golden["losses"]) == set(LOSSES)
    np.testing.assert_allclose(golden["losses"][name].item(), golden["ref"][f"loss_{name}"], rtol=1e-5, atol=1e-6)


def test_decode_of_golden_keypoints(golden):
    """Decode alone: the fixture's own last-layer keypoints → its decoded_preds."""
    inp, ref = golden["inp"], golden["ref"]
    got = golden["head"].decode(ref["output_kpts"][-1], inp["query_center"].numpy(), inp["query_scale"].numpy())
    # float32 rounding of pixel values in the official decode (~1 ulp at a few hundred px).
    np.testing.assert_allclose(got, ref["decoded_preds"][..., :2], atol=5e-5, rtol=0)


def test_decode_of_own_keypoints(golden):
    inp, ref = golden["inp"], golden["ref"]
    got = golden["head"].decode(golden["out"].keypoints, inp["query_center"].numpy(), inp["query_scale"].numpy())
    px_per_unit = float(inp["query_scale"].max()) * 200.0  # 1e-5 normalised → image px
    np.testing.assert_allclose(got, ref["decoded_preds"][..., :2], atol=1e-5 * px_per_unit + 5e-5, rtol=0)


def test_decode_batch_equals_per_sample(golden):
    inp = golden["inp"]
    kpts = golden["ref"]["output_kpts"][-1]
    center, scale = inp["query_center"].numpy(), inp["query_scale"].numpy()
    batched = golden["head"].decode(kpts, center, scale)
    single = np.concatenate([golden["head"].decode(kpts[b:b + 1], center[b:b + 1], scale[b:b + 1])
                             for b in range(len(kpts))])
    np.testing.assert_array_equal(batched, single)
    # Different samples really use their own centre/scale (the official stale-index bug would not).
    assert not np.allclose(batched[0], normalized_to_image(kpts[0:1], center[1:2], scale[1:2]))


def test_crop_image_roundtrip():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-20, 280, size=(3, 7, 2))
    center = rng.uniform(50, 400, size=(3, 2))
    scale = rng.uniform(0.3, 3.0, size=(3, 2))
    back = image_to_crop(crop_to_image(xy, center, scale, 256), center, scale, 256)
    np.testing.assert_allclose(back, xy, atol=1e-9)
    # The crop centre maps to the box centre, the crop corner to centre - side / 2.
    corner = crop_to_image(np.array([[[0.0, 0.0], [128.0, 128.0]]]), center[:1], scale[:1], 256)
    np.testing.assert_allclose(corner[0, 1], center[0])
    np.testing.assert_allclose(corner[0, 0], center[0] - scale[0] * 100.0)


def test_forward_batch_equals_per_sample(golden):
    inp, head, shots = golden["inp"], golden["head"], golden["shots"]
    full = golden["out"].output_kpts
    for b in range(inp["x"].shape[0]):
        sl = slice(b, b + 1)
        with torch.no_grad():
            one = head.forward_support_images(
                inp["x"][sl], [inp[f"feature_s_{i}"][sl] for i in range(shots)],
                [inp[f"target_s_{i}"][sl] for i in range(shots)], inp["mask_s"][sl]).output_kpts
        np.testing.assert_allclose(one.numpy(), full[:, sl].numpy(), atol=1e-5, rtol=0)


def _support_keypoints_from_heatmaps(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recover MSRA peak cells (crop px = 4 × cell) and visibility from [B, K, 64, 64] heatmaps."""
    flat = heatmaps.reshape(*heatmaps.shape[:2], -1)
    idx = flat.argmax(-1)
    kpts = np.stack([idx % heatmaps.shape[-1], idx // heatmaps.shape[-1]], -1).astype(np.float32) * 4.0
    return kpts / 256.0, flat.max(-1) > 0


def test_factorized_pooling_equals_official_order(golden):
    """Factorized pooling (heatmap pulled back through the resize) = official resize-then-pool."""
    inp, shots = golden["inp"], golden["shots"]
    feats = [inp[f"feature_s_{i}"] for i in range(shots)]
    heats = [inp[f"target_s_{i}"] for i in range(shots)]
    official = pool_support_tokens(feats, heats)
    got = pool_support_tokens(feats, heats, factorized=True)
    np.testing.assert_allclose(got.numpy(), official.numpy(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("factorized", [False, True])
def test_predict_from_keypoints_end_to_end(golden, factorized):
    """Support keypoints → MSRA heatmaps → tokens → prediction reproduces the golden keypoints.

    The fixture's support heatmaps are MSRA σ=2 Gaussians with peak 1, so their argmax cells
    are the support keypoints (in heatmap cells) that produced them.
    """
    inp, head, shots = golden["inp"], golden["head"], golden["shots"]
    kpts, vis = zip(*[_support_keypoints_from_heatmaps(inp[f"target_s_{i}"].numpy()) for i in range(shots)])
    support_kpts, support_vis = _t(np.stack(kpts)), _t(np.stack(vis))
    heatmaps, mask = head.support_targets(support_kpts, support_vis)
    for i in range(shots):
        np.testing.assert_allclose(heatmaps[i].numpy(), inp[f"target_s_{i}"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(mask.numpy(), inp["mask_s"][..., 0].numpy())
    with torch.no_grad():
        pred = head.predict_from_support(inp["x"], [inp[f"feature_s_{i}"] for i in range(shots)],
                                         support_kpts, support_vis, factorized=factorized)
    np.testing.assert_allclose(pred.numpy(), golden["ref"]["output_kpts"][-1], atol=1e-5, rtol=0)


def test_real_slots_equal_official_padded_run(golden):
    """With K < 100 real keypoints, running on the K slots (order embedding taken from the official
    100-slot grid) equals the 100-slot golden run on the first K slots."""
    inp, head, shots = golden["inp"], golden["head"], golden["shots"]
    mask = inp["mask_s"][..., 0]
    k = int(torch.nonzero(mask.sum(0)).max()) + 1
    assert k < 100
    tokens = pool_support_tokens([inp[f"feature_s_{i}"] for i in range(shots)],
                                 [inp[f"target_s_{i}"] for i in range(shots)])
    with torch.no_grad():
        pred = head.predict(inp["x"], tokens[:, :k], mask[:, :k])
        unpadded = head(inp["x"], tokens[:, :k], mask[:, :k]).keypoints
    assert pred.shape == (2, k, 2)
    np.testing.assert_allclose(pred.numpy(), golden["ref"]["output_kpts"][-1][:, :k], atol=1e-5, rtol=0)
    np.testing.assert_allclose(unpadded.numpy(), pred.numpy(), atol=1e-6, rtol=0)


def test_support_order_embedding_is_sine():
    emb = support_order_embedding(1, 100, 32, "sine")[0]  # [K, 64]: y half then x half
    k = torch.arange(100, dtype=torch.float32)
    np.testing.assert_allclose(emb[:, 32].numpy(), torch.sin((k + 1) / (100 + 1e-6) * 2 * np.pi).numpy(), atol=1e-6)
    assert torch.allclose(emb[:, :32], emb[:1, :32].expand(100, -1))  # y constant


def test_all_masked_sample_stays_finite(golden):
    """Quirk §9.7: a support without any valid keypoint unmasks keypoint 0 in the decoder."""
    inp, head, shots = golden["inp"], golden["head"], golden["shots"]
    mask = inp["mask_s"].clone()
    mask[1] = 0
    with torch.no_grad():
        out = head.forward_support_images(
            inp["x"], [inp[f"feature_s_{i}"] for i in range(shots)], [inp[f"target_s_{i}"] for i in range(shots)],
            mask)
    assert torch.isfinite(out.output_kpts).all() and torch.isfinite(out.outs_dec).all()
    np.testing.assert_allclose(out.output_kpts[:, 0].numpy(), golden["ref"]["output_kpts"][:, 0], atol=1e-5)


def test_default_config_matches_official_manifest(golden_dir):
    """Official sizes: keys and shapes equal the full model's ``keypoint_head.*`` entries."""
    manifest = json.loads((golden_dir / "capeformer_full_state_dict_manifest.json").read_text())
    shapes = manifest["state_dict_shapes"]
    fake_ckpt = {"state_dict": {k: torch.zeros(v) for k, v in shapes.items() if k.startswith("keypoint_head.")}}
    head = CapeFormerHead()
    state = head_state_from_checkpoint(fake_ckpt)
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == {k: list(v.shape) for k, v in state.items()}
    head.load_state_dict(state, strict=True)


@pytest.mark.parametrize("sigma", [1, 2])
def test_msra_support_targets_match_pipeline_fixture(golden_dir, sigma):
    """MSRA heatmaps/weights vs. the official TopDownGenerateTargetFewShot (incl. edge cases)."""
    fx = json.loads((golden_dir / "eval_pipeline_fixture.json").read_text())["msra_targets"]
    ref = fx[f"sigma{sigma}"]
    joints = torch.tensor(fx["joints_crop_px"], dtype=torch.float32)[:, :2]
    vis = torch.tensor(fx["visible"])
    heatmaps, weights = msra_support_targets(joints, vis, sigma)
    np.testing.assert_array_equal(weights.numpy(), ref["target_weight"])
    flat = heatmaps.reshape(len(joints), -1)
    argmax_rc = np.stack([flat.argmax(-1).numpy() // 64, flat.argmax(-1).numpy() % 64], -1)
    np.testing.assert_array_equal(argmax_rc, ref["argmax_rc"])
    np.testing.assert_array_equal((flat > 0).sum(-1).numpy(), ref["nonzero_count"])
    np.testing.assert_allclose(flat.sum(-1).numpy(), ref["target_sum"], rtol=1e-6)
    for j, (x, y, _) in enumerate(fx["joints_crop_px"]):
        mx, my = int(x / 4 + 0.5), int(y / 4 + 0.5)  # the official peak cell
        patch = heatmaps[j, max(0, my - 4):my + 5, max(0, mx - 4):mx + 5].numpy()
        want = np.asarray(ref["patch_rows_0_to_8"][j], dtype=np.float32).reshape(patch.shape)
        np.testing.assert_allclose(patch, want, atol=1e-7)
