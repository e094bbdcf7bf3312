"""Heatmap targets and decoding (``baselines.common.heatmaps``) against the official fixtures.

Fixtures: ``eval_pipeline_fixture.json`` → ``msra_targets`` (official ``_msra_generate_target`` at
σ 1 and 2 on edge-case joints) and ``pomnet_decode`` + ``pomnet_decode_heatmaps.npz`` (mmpose
``keypoints_from_heatmaps``). Every stored output is its own test case, so a failure names it.
Property tests compare the vectorised code with a literal per-joint / per-map re-derivation of
the official loops (spec §1.3, §1.7, §2.2 step 8).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from baselines.common.heatmaps import (
    get_max_preds,
    keypoints_from_heatmaps,
    keypoints_from_heatmaps_crop,
    msra_targets,
    support_mask,
    transform_preds,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MSRA_FIELDS = ("target_weight", "argmax_rc", "nonzero_count", "target_sum", "patch_rows_0_to_8")


@lru_cache(maxsize=1)
def _pipeline(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "eval_pipeline_fixture.json").read_text())


@lru_cache(maxsize=4)
def _targets(golden_dir: Path, sigma: int):
    fx = _pipeline(golden_dir)["msra_targets"]
    joints = np.asarray(fx["joints_crop_px"], dtype=np.float32)  # official joints_3d is float32
    return msra_targets(joints, np.asarray(fx["visible"], dtype=np.float32), sigma=sigma)


def _observed(field: str, target: np.ndarray, weight: np.ndarray, joints: np.ndarray):
    """The fixture's summary ``field`` computed from our targets (one entry per joint)."""
    if field == "target_weight":
        return [float(w) for w in weight[:, 0]]
    if field == "argmax_rc":
        return [list(np.unravel_index(int(np.argmax(t)), t.shape)) for t in target]
    if field == "nonzero_count":
        return [int(np.count_nonzero(t)) for t in target]
    if field == "target_sum":
        return [float(t.sum(dtype=np.float32)) for t in target]
    # Window of rows/cols mu-4 .. mu+4 (clipped at 0) around mu = int(joint / 4 + 0.5).
    mu = np.trunc(joints[:, :2] / 4.0 + 0.5).astype(int)
    return [t[max(0, r - 4):r + 5, max(0, c - 4):c + 5] for t, (c, r) in zip(target, mu)]


@pytest.mark.parametrize("field", MSRA_FIELDS)
@pytest.mark.parametrize("sigma", [1, 2])
def test_msra_targets_match_official(golden_dir: Path, sigma: int, field: str) -> None:
    fx = _pipeline(golden_dir)["msra_targets"]
    target, weight = _targets(golden_dir, sigma)
    got = _observed(field, target, weight, np.asarray(fx["joints_crop_px"], dtype=np.float32))
    want = fx[f"sigma{sigma}"][field]
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if field == "patch_rows_0_to_8":
            w = np.asarray(w, dtype=np.float32).reshape(np.shape(g))
            np.testing.assert_array_equal(g, w, err_msg=f"sigma={sigma} joint {k} {field}")
        else:
            assert g == w, f"sigma={sigma} joint {k} {field}: {g} != {w}"


DECODE_OUTPUTS = ("preds", "maxvals")


@pytest.mark.parametrize("output", DECODE_OUTPUTS)
def test_decode_matches_official(golden_dir: Path, output: str) -> None:
    z = np.load(golden_dir / "pomnet_decode_heatmaps.npz")
    peaks = keypoints_from_heatmaps(z["heatmaps"], z["center"], z["scale"])
    got = peaks.coords if output == "preds" else peaks.maxvals
    np.testing.assert_array_equal(got, z[output])  # same float32 arithmetic: bit-exact
    from_json = np.asarray(_pipeline(golden_dir)["pomnet_decode"][output], dtype=np.float32)
    np.testing.assert_array_equal(got, from_json)


def test_decode_batch_matches_single(golden_dir: Path) -> None:
    z = np.load(golden_dir / "pomnet_decode_heatmaps.npz")
    both = keypoints_from_heatmaps(z["heatmaps"], z["center"], z["scale"])
    assert z["heatmaps"].shape[0] > 1
    for i in range(z["heatmaps"].shape[0]):
        one = keypoints_from_heatmaps(z["heatmaps"][i:i + 1], z["center"][i:i + 1], z["scale"][i:i + 1])
        np.testing.assert_array_equal(both.coords[i], one.coords[0])
        np.testing.assert_array_equal(both.maxvals[i], one.maxvals[0])


# ---- literal re-derivations of the official loops (reference for property tests) ------------


def _msra_loop(joints: np.ndarray, vis: np.ndarray, sigma: int, W: int = 64, H: int = 64, img: int = 256):
    target = np.zeros((len(joints), H, W), dtype=np.float32)
    weight = np.zeros((len(joints), 1), dtype=np.float32)
    tmp = sigma * 3
    stride = np.array([img, img]) / np.array([W, H])
    for j in range(len(joints)):
        weight[j] = vis[j]
        mu_x = int(joints[j][0] / stride[0] + 0.5)
        mu_y = int(joints[j][1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp), int(mu_y - tmp)]
        br = [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
        if ul[0] >= W or ul[1] >= H or br[0] < 0 or br[1] < 0:
            weight[j] = 0
        if weight[j] > 0.5:
            size = 2 * tmp + 1
            x = np.arange(0, size, 1, np.float32)
            y = x[:, None]
            g = np.exp(-((x - size // 2) ** 2 + (y - size // 2) ** 2) / (2 * sigma**2))
            gx = max(0, -ul[0]), min(br[0], W) - ul[0]
            gy = max(0, -ul[1]), min(br[1], H) - ul[1]
            ix = max(0, ul[0]), min(br[0], W)
            iy = max(0, ul[1]), min(br[1], H)
            target[j][iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return target, weight


def _decode_loop(hm: np.ndarray, center: np.ndarray, scale: np.ndarray):
    N, K, H, W = hm.shape
    preds = np.zeros((N, K, 2), dtype=np.float32)
    maxvals = np.zeros((N, K, 1), dtype=hm.dtype)
    for n in range(N):
        for k in range(K):
            flat = hm[n, k].reshape(-1)
            i = int(np.argmax(flat))
            maxvals[n, k, 0] = flat[i]
            p = np.array([i % W, i // W], dtype=np.float32) if flat[i] > 0 else np.full(2, -1, np.float32)
            px, py = int(p[0]), int(p[1])
            if 1 < px < W - 1 and 1 < py < H - 1:
                h = hm[n, k]
                diff = np.array([h[py][px + 1] - h[py][px - 1], h[py + 1][px] - h[py - 1][px]])
                p += np.sign(diff) * 0.25
            preds[n, k] = p
        s = scale[n].astype(np.float32) * 200.0
        sx, sy = s[0] / W, s[1] / H
        c = center[n].astype(np.float32)
        out = np.ones_like(preds[n])
        out[:, 0] = preds[n][:, 0] * sx + c[0] - s[0] * 0.5
        out[:, 1] = preds[n][:, 1] * sy + c[1] - s[1] * 0.5
        preds[n] = out
    return preds, maxvals


coord = st.floats(-60.0, 320.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None, database=None)
@given(
    joints=arrays(np.float32, st.tuples(st.integers(1, 12), st.just(2)), elements=coord),
    sigma=st.sampled_from([1, 2, 3]),
    data=st.data(),
)
def test_msra_targets_equal_official_loop(joints: np.ndarray, sigma: int, data) -> None:
    vis = data.draw(arrays(np.float32, (len(joints),), elements=st.sampled_from([0.0, 1.0])))
    target, weight = msra_targets(joints, vis, sigma=sigma)
    ref_t, ref_w = _msra_loop(joints, vis, sigma)
    np.testing.assert_array_equal(weight, ref_w)
    np.testing.assert_array_equal(target, ref_t)


def test_msra_truncation_edge_cases() -> None:
    # int() truncates toward zero: x=-5 -> mu=int(-0.75)=0 (peak in column 0, weight 1);
    # x=-30 at sigma 2 -> mu=-7, window [-13, 0) misses the map yet br=0 is not < 0: weight 1,
    # all-zero heatmap; x=-31 -> mu=int(-7.25)=-7 as well; x=-34 -> mu=-8, br=-1: weight 0.
    joints = np.array([[-5.0, 100.0], [-30.0, 100.0], [-31.0, 100.0], [-34.0, 100.0], [257.9, 10.0]], np.float32)
    target, weight = msra_targets(joints, np.ones(5, np.float32), sigma=2)
    assert weight[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert target[0, 25, 0] == 1.0
    assert not target[1].any() and not target[2].any() and not target[3].any()
    # x=257.9 -> mu=int(64.975)=64 (outside), window columns 58..63 still drawn.
    assert target[4].any()
    np.testing.assert_allclose(target[4, 3, 63], np.exp(-1 / 8), rtol=1e-6)


def test_msra_batched_equals_per_instance() -> None:
    rng = np.random.default_rng(0)
    joints = rng.uniform(-20, 280, size=(3, 5, 2)).astype(np.float32)
    vis = (rng.uniform(size=(3, 5)) > 0.3).astype(np.float32)
    batched = msra_targets(joints, vis[..., None], sigma=1)
    for i in range(3):
        single = msra_targets(joints[i], vis[i], sigma=1)
        np.testing.assert_array_equal(batched.target[i], single.target)
        np.testing.assert_array_equal(batched.target_weight[i], single.target_weight)


def test_msra_rejects_bad_sigma() -> None:
    with pytest.raises(ValueError):
        msra_targets(np.zeros((1, 2), np.float32), np.ones(1), sigma=1.5)


heatmap_batch = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.sampled_from([4, 6, 16]), st.sampled_from([4, 6, 16])),
    elements=st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0]) | st.floats(-1, 1, width=32),
)


@settings(max_examples=80, deadline=None, database=None)
@given(hm=heatmap_batch, data=st.data())
def test_decode_equals_official_loop(hm: np.ndarray, data) -> None:
    n = hm.shape[0]
    center = data.draw(arrays(np.float32, (n, 2), elements=st.floats(-100, 600, width=32)))
    scale = data.draw(arrays(np.float32, (n, 2), elements=st.floats(0.125, 5, width=32)))
    peaks = keypoints_from_heatmaps(hm, center, scale)
    ref_p, ref_m = _decode_loop(hm, center, scale)
    np.testing.assert_array_equal(peaks.coords, ref_p)
    np.testing.assert_array_equal(peaks.maxvals, ref_m)


def test_decode_border_and_nonpositive_rules() -> None:
    hm = np.zeros((1, 4, 64, 64), np.float32)
    hm[0, 0, 30, 40] = 1.0
    hm[0, 0, 30, 41] = 0.5  # right neighbour larger -> +0.25 in x; y neighbours equal -> no shift
    hm[0, 1, 1, 40] = 1.0  # py = 1 is not > 1: no shift
    hm[0, 1, 1, 41] = 0.5
    hm[0, 2] = -0.5  # max <= 0 -> (-1, -1)
    hm[0, 3, 62, 62] = 1.0  # px = 62 < 63, py = 62 < 63: shifted
    hm[0, 3, 61, 62] = 0.3  # upper neighbour larger -> -0.25 in y
    peaks = get_max_preds(hm)
    assert peaks.coords[0, 2].tolist() == [-1.0, -1.0]
    crop = keypoints_from_heatmaps_crop(hm, 256).coords[0]
    np.testing.assert_array_equal(crop, np.array([[161.0, 120.0], [160.0, 4.0], [-4.0, -4.0], [248.0, 247.0]]))


def test_crop_decode_equals_image_decode_with_crop_frame() -> None:
    rng = np.random.default_rng(1)
    hm = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    crop = keypoints_from_heatmaps_crop(hm, 256)
    via_image = keypoints_from_heatmaps(hm, np.full((2, 2), 128.0), np.full((2, 2), 256 / 200))
    np.testing.assert_allclose(crop.coords, via_image.coords, atol=1e-4)
    np.testing.assert_array_equal(crop.maxvals, via_image.maxvals)


def test_transform_preds_matches_formula() -> None:
    coords = np.array([[[10.0, 20.0], [0.0, 63.0]]], np.float32)
    out = transform_preds(coords, np.array([[100.0, 50.0]]), np.array([[1.25, 2.0]]), 64)
    # x * (1.25*200/64) + 100 - 125 ; y * (2*200/64) + 50 - 200
    np.testing.assert_allclose(out[0], [[14.0625, -25.0], [-25.0, 243.75]], rtol=0, atol=1e-5)


def test_support_mask_is_product_over_shots() -> None:
    w = np.array([[[1.0], [1.0], [0.0]], [[1.0], [0.0], [0.0]]], np.float32)
    np.testing.assert_array_equal(support_mask(w), np.array([[1.0], [0.0], [0.0]], np.float32))


def test_module_does_not_import_torch() -> None:
    code = "import sys, baselines.common.heatmaps, baselines.pomnet; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
