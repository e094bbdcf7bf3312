"""GraphCape / PoseAnything head vs. the official golden fixture (``golden/poseanything_head_reduced.*``).

The fixture was produced by the official ``PoseHead`` + ``EncoderDecoder`` (graph_decoder='pre',
1 shot, reduced sizes, random weights, eval mode, 16×16 query features). Each output and loss
term is a separate test case so a failure names the diverging output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baselines.common.lineage_head import head_state_from_checkpoint  # noqa: E402
from baselines.common.lineage_transformer import pad_skeleton, skeleton_adjacency  # noqa: E402
from baselines.graphcape.model import GraphCapeConfig, GraphCapeHead  # noqa: E402

NAME = "poseanything_head_reduced"
OUTPUT_TOL = {
    "output_kpts": (1e-5, 0.0),
    "initial_proposals_for_loss": (1e-5, 0.0),
    "out_points": (1e-5, 0.0),
    "adjacency": (1e-6, 0.0),
    "similarity_map": (1e-4, 1e-4),
    "outs_dec": (1e-4, 1e-4),
}
LOSSES = ["heatmap_loss", "proposal_loss", "l1_loss_layer0", "l1_loss_layer1", "l1_loss_layer2"]


def _t(arr) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr))


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(1)
    data = dict(np.load(golden_dir / f"{NAME}.npz"))
    meta = json.loads((golden_dir / f"{NAME}.json").read_text())
    cfg = GraphCapeConfig.from_official(meta["head_cfg"])
    head = GraphCapeHead(cfg).eval()
    params = {k[len("param::"):]: _t(v) for k, v in data.items() if k.startswith("param::")}
    head.load_state_dict(params, strict=True)
    inp = {k[len("in::"):]: _t(v) for k, v in data.items() if k.startswith("in::")}
    ref = {k[len("out::"):]: v for k, v in data.items() if k.startswith("out::")}
    with torch.no_grad():
        out = head.forward_support_images(inp["x"], [inp["feature_s_0"]], [inp["target_s_0"]], inp["mask_s"],
                                          inp["skeleton_padded"])
        losses = head.get_loss(out, inp["target_keypoints"], inp["target_q"], inp["target_weight_q"] * inp["mask_s"],
                               inp["target_sizes"])
    return {"head": head, "cfg": cfg, "inp": inp, "ref": ref, "out": out, "losses": losses, "params": params,
            "skeleton": meta["skeleton"]}


def test_config_switches(golden):
    cfg = golden["cfg"]
    switches = (cfg.decoder_ffn, cfg.support_order, cfg.token_source, cfg.target_sigma)
    assert switches == ("graph_pre", "zeros", "image", 1)


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
    inp, ref = golden["inp"], golden["ref"]
    got = golden["head"].decode(ref["output_kpts"][-1], inp["query_center"].numpy(), inp["query_scale"].numpy())
    np.testing.assert_allclose(got, ref["decoded_preds"][..., :2], atol=5e-5, rtol=0)


def test_decode_of_own_keypoints(golden):
    inp, ref = golden["inp"], golden["ref"]
    got = golden["head"].decode(golden["out"].keypoints, inp["query_center"].numpy(), inp["query_scale"].numpy())
    px_per_unit = float(inp["query_scale"].max()) * 200.0
    np.testing.assert_allclose(got, ref["decoded_preds"][..., :2], atol=1e-5 * px_per_unit + 5e-5, rtol=0)


def test_skeleton_as_edge_lists_equals_padded(golden):
    """The json's ragged per-sample edge lists give the same adjacency as the -1-padded tensor."""
    ignore = ~golden["inp"]["mask_s"][..., 0].bool()
    from_lists = skeleton_adjacency(100, pad_skeleton(golden["skeleton"], 2), ignore)
    np.testing.assert_allclose(from_lists.numpy(), golden["ref"]["adjacency"], atol=1e-6)
    # A 2-D edge list is shared by the whole batch.
    shared = pad_skeleton(golden["skeleton"][1], 2)
    assert shared.shape == (2, 10, 2) and torch.equal(shared[0], shared[1])


def test_adjacency_row_normalised_by_source_degree():
    """Quirk §9.6: symmetrised, masked, divided by the row (source) degree; self-loops kept."""
    edges = torch.tensor([[[0, 1], [1, 2], [1, 3], [3, 1], [2, 2]]])
    ignore = torch.tensor([[False, False, False, False, True]])
    adj = skeleton_adjacency(5, edges, ignore)[0]
    np.testing.assert_array_equal(adj[0].numpy(), np.diag([1, 1, 1, 1, 0]))
    want = np.zeros((5, 5))
    want[0, 1] = 1.0
    want[1, [0, 2, 3]] = 1 / 3
    want[2, [1, 2]] = 1 / 2
    want[3, 1] = 1.0
    np.testing.assert_allclose(adj[1].numpy(), want, atol=1e-7)


def test_forward_batch_equals_per_sample(golden):
    inp, head = golden["inp"], golden["head"]
    full = golden["out"].output_kpts
    for b in range(inp["x"].shape[0]):
        sl = slice(b, b + 1)
        with torch.no_grad():
            one = head.forward_support_images(inp["x"][sl], [inp["feature_s_0"][sl]], [inp["target_s_0"][sl]],
                                              inp["mask_s"][sl], [golden["skeleton"][b]]).output_kpts
        np.testing.assert_allclose(one.numpy(), full[:, sl].numpy(), atol=1e-5, rtol=0)


def test_predict_from_keypoints_end_to_end(golden):
    """Support keypoints (σ=1 MSRA peaks of the fixture heatmaps) → prediction = golden keypoints."""
    inp, head = golden["inp"], golden["head"]
    heat = inp["target_s_0"].numpy()
    flat = heat.reshape(*heat.shape[:2], -1)
    idx = flat.argmax(-1)
    kpts = np.stack([idx % 64, idx // 64], -1).astype(np.float32) * 4.0 / 256.0
    support_kpts, support_vis = _t(kpts[None]), _t(flat.max(-1)[None] > 0)
    heatmaps, mask = head.support_targets(support_kpts, support_vis)
    np.testing.assert_allclose(heatmaps[0].numpy(), heat, atol=1e-6)
    np.testing.assert_array_equal(mask.numpy(), inp["mask_s"][..., 0].numpy())
    with torch.no_grad():
        pred = head.predict_from_support(inp["x"], [inp["feature_s_0"]], support_kpts, support_vis,
                                         golden["skeleton"])
    np.testing.assert_allclose(pred.numpy(), golden["ref"]["output_kpts"][-1], atol=1e-5, rtol=0)


def test_all_masked_sample_and_empty_skeleton_stay_finite(golden):
    """Quirk §9.7 (keypoint 0 unmasked, also in the graph) and a category without edges."""
    inp, head = golden["inp"], golden["head"]
    mask = inp["mask_s"].clone()
    mask[1] = 0
    with torch.no_grad():
        out = head.forward_support_images(inp["x"], [inp["feature_s_0"]], [inp["target_s_0"]], mask,
                                          [golden["skeleton"][0], []])
    assert torch.isfinite(out.output_kpts).all()
    diag = torch.diagonal(out.adjacency[1, 0])
    assert diag[0] == 1 and diag[1:].sum() == 0
    assert out.adjacency[1, 1].abs().sum() == 0
    np.testing.assert_allclose(out.output_kpts[:, 0].numpy(), golden["ref"]["output_kpts"][:, 0], atol=1e-5)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_default_config_matches_official_manifest(golden_dir, size):
    manifest = json.loads((golden_dir / f"poseanything_{size}_full_state_dict_manifest.json").read_text())
    shapes = manifest["state_dict_shapes"]
    state = head_state_from_checkpoint({k: torch.zeros(v) for k, v in shapes.items()})
    head = GraphCapeHead()
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == {k: list(v.shape) for k, v in state.items()}
    head.load_state_dict(state, strict=True)


def test_base_config_uses_plain_ffn1_ffn2():
    """``base_*`` configs (graph_decoder=None) keep the ffn1/ffn2 names as plain Linear layers."""
    head_cfg = {"in_channels": 32, "transformer": {"type": "EncoderDecoder", "d_model": 16, "nhead": 2,
                                                    "dim_feedforward": 24, "graph_decoder": None,
                                                    "similarity_proj_dim": 16, "dynamic_proj_dim": 8},
                "positional_encoding": {"num_feats": 8}}
    head = GraphCapeHead(GraphCapeConfig.from_official(head_cfg)).eval()
    keys = head.state_dict()
    assert keys["transformer.decoder.layers.0.ffn1.weight"].shape == (24, 16)
    assert not any("conv" in k for k in keys)
    with torch.no_grad():
        pred = head.predict(torch.randn(3, 32, 4, 4), torch.randn(3, 5, 32), torch.ones(3, 5))
    assert pred.shape == (3, 5, 2) and torch.isfinite(pred).all()


def test_training_step_reaches_every_parameter(golden):
    """Train mode: the summed official losses back-propagate into every head parameter."""
    torch.manual_seed(0)
    inp = golden["inp"]
    head = GraphCapeHead(golden["cfg"])
    head.load_state_dict(golden["params"])
    head.train()
    out = head.forward_support_images(inp["x"], [inp["feature_s_0"]], [inp["target_s_0"]], inp["mask_s"],
                                      inp["skeleton_padded"])
    losses = head.get_loss(out, inp["target_keypoints"], inp["target_q"], inp["target_weight_q"] * inp["mask_s"],
                           inp["target_sizes"])
    sum(losses.values()).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_init_weights_starts_decoder_at_proposals(golden):
    """Official init zeroes the last kpt_branch layer: every layer's keypoints = its reference point."""
    torch.manual_seed(0)
    inp = golden["inp"]
    head = GraphCapeHead(golden["cfg"])
    head.init_weights()
    head.eval()
    assert all(not b.mlp[-1].weight.detach().any() for b in head.kpt_branch)
    assert not head.query_proj.bias.detach().any()
    with torch.no_grad():
        out = head.forward_support_images(inp["x"], [inp["feature_s_0"]], [inp["target_s_0"]], inp["mask_s"],
                                          inp["skeleton_padded"])
    ref = out.out_points.clamp(1e-3, 1 - 1e-3)  # inverse_sigmoid clamps at 1e-3
    np.testing.assert_allclose(out.output_kpts.numpy(), ref[:-1].numpy(), atol=1e-6)
    np.testing.assert_allclose(out.out_points[1:].numpy(), ref[:-1].numpy(), atol=1e-6)
