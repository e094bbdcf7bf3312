"""POMNet ``TransformerHead`` (``baselines.pomnet.model``) against the official-code golden fixture.

``pomnet_head_reduced.npz`` holds the official head's complete ``state_dict`` (random weights,
reduced sizes from the ``.json`` sidecar), its inputs and its outputs (spec §8). The state dict is
loaded with ``strict=True`` (official parameter names), the head runs in eval mode on the stored
inputs and every stored output is its own test case, so a failure names the diverging output.
Further tests check the deliberate deviations: real-keypoint-only runs, chunked keypoint branch
(also in training mode, batch statistics per keypoint), batched inference.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baselines.common.heatmaps import keypoints_from_heatmaps  # noqa: E402
from baselines.pomnet.branch import RelationModel, make_deconv_layers  # noqa: E402
from baselines.pomnet.model import (  # noqa: E402
    POMNetHeadConfig,
    TransformerHead,
    pomnet_predict,
    strip_prefix,
)

FIXTURE = "pomnet_head_reduced"
OUTPUTS = ("heatmaps", "outs_dec", "memory", "mse_loss", "decoded_preds")
# Suggested tolerances (spec §8): 1e-5 on heatmaps/coordinates, 1e-4 on decoder features.
TOL = {
    "heatmaps": dict(atol=1e-5, rtol=0),
    "outs_dec": dict(atol=1e-4, rtol=1e-4),
    "memory": dict(atol=1e-4, rtol=1e-4),
    "mse_loss": dict(atol=1e-7, rtol=1e-5),
    "decoded_preds": dict(atol=1e-5, rtol=0),
}
REAL_KPTS = (15, 9)  # sample 0 / sample 1 real keypoints (sidecar notes)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was made single-threaded; also keeps CI fair
    yield
    torch.set_num_threads(old)


@lru_cache(maxsize=1)
def _load(golden_dir: Path):
    meta = json.loads((golden_dir / f"{FIXTURE}.json").read_text())
    z = np.load(golden_dir / f"{FIXTURE}.npz")
    arrays = {k: z[k] for k in z.files}
    return meta, arrays


def _inputs(arrays: dict) -> dict:
    return {k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("in::")}


def _head(golden_dir: Path, **overrides) -> TransformerHead:
    meta, arrays = _load(golden_dir)
    head = TransformerHead(POMNetHeadConfig.from_official(meta["head_cfg"], **overrides))
    params = {k[7:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("param::")}
    head.load_state_dict(params, strict=True)
    return head.eval()


@lru_cache(maxsize=1)
def _official_run(golden_dir: Path) -> dict[str, np.ndarray]:
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    head = _head(golden_dir)
    with torch.no_grad():
        out = head.forward_with_intermediates(x["x"], [x["feature_s_0"]], [x["target_s_0"]], x["mask_s"])
        loss = head.get_loss(out.heatmaps, x["target_q"], x["target_weight_q"] * x["mask_s"])["mse_loss"]
    return {
        "heatmaps": out.heatmaps.numpy(),
        "outs_dec": out.outs_dec.numpy(),
        "memory": out.memory.numpy(),
        "mse_loss": loss.numpy(),
        "decoded_preds": head.decode(out.heatmaps, arrays["in::query_center"], arrays["in::query_scale"]),
    }


def test_state_dict_keys_are_official(golden_dir: Path) -> None:
    _, arrays = _load(golden_dir)
    official = {k[7:]: v.shape for k, v in arrays.items() if k.startswith("param::")}
    ours = {k: tuple(v.shape) for k, v in _head(golden_dir).state_dict().items()}
    assert ours == official


def test_full_size_keys_match_official_manifest(golden_dir: Path) -> None:
    manifest = json.loads((golden_dir / "pomnet_full_state_dict_manifest.json").read_text())
    official = {k: tuple(v) for k, v in strip_prefix(manifest["state_dict_shapes"]).items()}
    ours = {k: tuple(v.shape) for k, v in TransformerHead(POMNetHeadConfig()).state_dict().items()}
    assert ours == official


@pytest.mark.parametrize("output", OUTPUTS)
def test_output_matches_official(golden_dir: Path, output: str) -> None:
    _, arrays = _load(golden_dir)
    want = arrays[f"out::{output}"]
    got = _official_run(golden_dir)[output]
    assert got.shape == want.shape, output
    np.testing.assert_allclose(got, want, err_msg=output, **TOL[output])


# ---- real keypoints only vs the padded official layout -------------------------------------


def _real_only(golden_dir: Path, sample: int | None, n: int):
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    sl = slice(None) if sample is None else slice(sample, sample + 1)
    with torch.no_grad():
        return _head(golden_dir).forward_with_intermediates(
            x["x"][sl], [x["feature_s_0"][sl]], [x["target_s_0"][sl]], x["mask_s"][sl], num_keypoints=n
        )


REAL_CASES = {"batch_K15": (None, max(REAL_KPTS)), "sample0_K15": (0, REAL_KPTS[0]), "sample1_K9": (1, REAL_KPTS[1])}


@pytest.mark.parametrize("output", ("heatmaps", "outs_dec", "memory", "keypoints"))
@pytest.mark.parametrize("case", REAL_CASES)
def test_real_keypoints_only_equals_padded_run(golden_dir: Path, case: str, output: str) -> None:
    sample, n = REAL_CASES[case]
    padded = _official_run(golden_dir)
    out = _real_only(golden_dir, sample, n)
    sl = slice(None) if sample is None else slice(sample, sample + 1)
    if output == "heatmaps":
        assert out.heatmaps.shape[1] == n
        # Same arithmetic except the attention length: float32 reassociation only.
        np.testing.assert_allclose(out.heatmaps.numpy(), padded["heatmaps"][sl, :n], atol=1e-6, rtol=0)
    elif output == "outs_dec":
        np.testing.assert_allclose(out.outs_dec.numpy(), padded["outs_dec"][:, sl, :n], atol=1e-5, rtol=1e-5)
    elif output == "memory":
        np.testing.assert_array_equal(out.memory.numpy(), padded["memory"][sl])
    else:
        _, arrays = _load(golden_dir)
        c, s = arrays["in::query_center"][sl], arrays["in::query_scale"][sl]
        got = keypoints_from_heatmaps(out.heatmaps.numpy(), c, s).coords
        np.testing.assert_array_equal(got, padded["decoded_preds"][sl, :n, :2])


def test_num_keypoints_out_of_range_is_rejected(golden_dir: Path) -> None:
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    with pytest.raises(ValueError):
        _head(golden_dir)(x["x"], [x["feature_s_0"]], [x["target_s_0"]], x["mask_s"], num_keypoints=25)


# ---- chunked keypoint branch == the official one-keypoint-at-a-time loop -------------------


def test_keypoint_by_keypoint_loop_equals_chunked_eval(golden_dir: Path) -> None:
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    loop = _head(golden_dir, max_maps_per_chunk=1)  # chunk of 1 keypoint x B=2 < 1 -> one keypoint
    with torch.no_grad():
        got = loop(x["x"], [x["feature_s_0"]], [x["target_s_0"]], x["mask_s"])
    np.testing.assert_allclose(got.numpy(), _official_run(golden_dir)["heatmaps"], atol=1e-6, rtol=0)


def test_training_mode_batch_norm_is_per_keypoint(golden_dir: Path) -> None:
    """Train mode: chunked BN must use per-keypoint batch statistics and update running stats per keypoint."""
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    K = 5
    heads = [_head(golden_dir, dropout=0.0, max_maps_per_chunk=m).train() for m in (1, 64)]
    outs = []
    for head in heads:
        hm = head(x["x"], [x["feature_s_0"]], [x["target_s_0"]], x["mask_s"], num_keypoints=K)
        loss = head.get_loss(hm, x["target_q"][:, :K], (x["target_weight_q"] * x["mask_s"])[:, :K])["mse_loss"]
        loss.backward()
        outs.append((hm.detach(), head))
    (hm_loop, loop), (hm_chunk, chunk) = outs
    np.testing.assert_allclose(hm_chunk.numpy(), hm_loop.numpy(), atol=1e-5, rtol=0)
    for (name, b_loop), (_, b_chunk) in zip(loop.named_buffers(), chunk.named_buffers(), strict=True):
        if name.endswith("num_batches_tracked"):
            assert int(b_loop) == int(b_chunk) == K, name
        else:
            np.testing.assert_allclose(b_chunk.numpy(), b_loop.numpy(), atol=1e-5, rtol=1e-5, err_msg=name)
    g_loop = loop.relation_model.conv.conv.weight.grad
    g_chunk = chunk.relation_model.conv.conv.weight.grad
    assert g_loop is not None and torch.isfinite(g_loop).all()
    np.testing.assert_allclose(g_chunk.numpy(), g_loop.numpy(), atol=1e-6, rtol=1e-3)


# ---- inference entry point --------------------------------------------------------------------


def _episode(golden_dir: Path):
    """Both fixture queries against sample 0's support set (K = 15 real keypoints)."""
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    K = REAL_KPTS[0]
    return x["x"], x["feature_s_0"][:1], x["target_s_0"][:1, :K], x["mask_s"][0, :K, 0]


@pytest.mark.parametrize("output", ("heatmaps", "keypoints_crop", "scores"))
def test_predict_batch_equals_single_queries(golden_dir: Path, output: str) -> None:
    head = _head(golden_dir)
    q, fs, ts, m = _episode(golden_dir)
    both = pomnet_predict(head, q, fs, ts, m)
    for i in range(q.shape[0]):
        one = pomnet_predict(head, q[i:i + 1], fs, ts, m)
        got, want = getattr(both, output)[i], getattr(one, output)[0]
        if output == "keypoints_crop":
            np.testing.assert_array_equal(got, want)
        else:  # batch size only changes float32 reassociation
            got, want = np.asarray(got), np.asarray(want)
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("output", ("heatmaps", "keypoints_crop"))
def test_predict_equals_official_pairs(golden_dir: Path, output: str) -> None:
    """pomnet_predict (real K, shared supports) == official padded per-pair forward, and pad_to path."""
    head = _head(golden_dir)
    q, fs, ts, m = _episode(golden_dir)
    K, B = ts.shape[1], q.shape[0]
    _, arrays = _load(golden_dir)
    x = _inputs(arrays)
    with torch.no_grad():
        official = head(q, [fs.expand(B, -1, -1, -1)], [x["target_s_0"][:1].expand(B, -1, -1, -1)],
                        x["mask_s"][:1].expand(B, -1, -1))[:, :K]
    for pad_to in (None, 24):
        pred = pomnet_predict(head, q, fs, ts, m, input_size=256, pad_to=pad_to)
        if output == "heatmaps":
            np.testing.assert_allclose(pred.heatmaps.numpy(), official.numpy(), atol=1e-6, rtol=0)
        else:
            centre, scale = np.full((B, 2), 128.0, np.float32), np.full((B, 2), 256 / 200, np.float32)
            want = keypoints_from_heatmaps(official.numpy(), centre, scale).coords
            np.testing.assert_allclose(pred.keypoints_crop, want, atol=1e-4, rtol=0)


def test_init_weights_follows_official_scheme() -> None:
    torch.manual_seed(0)
    head = TransformerHead(POMNetHeadConfig(in_channels=32, embed_dims=32, num_heads=4, feedforward_channels=64,
                                            num_deconv_filters=(32, 32, 32)))
    head.init_weights()
    head.requires_grad_(False)
    w = head.deconv_layers[0].weight
    assert 0.0005 < float(w.std()) < 0.002
    assert float(head.relation_model.conv.conv.weight.std()) < 0.002
    assert float(head.final_layer.bias.abs().max()) == 0.0
    assert torch.equal(head.deconv_layers[1].weight, torch.ones(32))
    fc1 = head.transformer.encoder.layers[0].ffns[0].layers[0][0]
    bound = (6 / (fc1.in_features + fc1.out_features)) ** 0.5
    assert float(fc1.weight.abs().max()) <= bound and float(fc1.weight.std()) > bound / 3
    assert float(fc1.bias.abs().max()) == 0.0


def test_config_defaults_are_official() -> None:
    cfg = POMNetHeadConfig()
    assert (cfg.in_channels, cfg.embed_dims, cfg.num_heads, cfg.feedforward_channels) == (2048, 256, 8, 2048)
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.dropout, cfg.num_feats) == (3, 3, 0.1, 128)
    assert cfg.num_deconv_filters == (256, 256, 256) and cfg.num_deconv_kernels == (4, 4, 4)


def test_relation_split_equals_the_broadcast_conv() -> None:
    """Eval's relation conv, memory half once per query + token half per cell, equals the official broadcast."""
    torch.manual_seed(0)
    relation = RelationModel(2 * 16, 16)
    relation.conv.bn.running_mean.normal_()
    relation.conv.bn.running_var.uniform_(0.5, 2.0)
    relation.eval()
    tokens, memory = torch.randn(3, 2, 16), torch.randn(2, 16, 4, 5)  # 3 keypoints, 2 queries, a 4×5 map
    broadcast = relation(tokens.reshape(6, 16), memory.unsqueeze(0).expand(3, -1, -1, -1, -1).reshape(6, 16, 4, 5))
    torch.testing.assert_close(relation.forward_shared_memory(tokens, memory), broadcast, rtol=1e-5, atol=1e-5)


def test_eval_deconvolutions_fold_their_batchnorm_exactly() -> None:
    """Eval's deconvolutions with BatchNorm folded in equal deconv → BN → ReLU, layer by layer as the official head."""
    torch.manual_seed(0)
    layers = make_deconv_layers(POMNetHeadConfig(in_channels=8, embed_dims=16, num_heads=4,
                                                 num_deconv_filters=(8, 8), num_deconv_kernels=(4, 3)))
    for bn in layers[1::3]:
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 2.0)
        bn.bias.data.normal_()
    layers.eval()
    x = torch.randn(6, 16, 4, 5)
    unfolded = x
    for module in layers:
        unfolded = module(unfolded)
    torch.testing.assert_close(layers(x), unfolded, rtol=1e-5, atol=1e-5)
