"""CapeX text head vs. the official golden fixture (``golden/capex_head_reduced.*``).

The fixture was produced by the official text ``PoseHead`` (reduced sizes, text dim 48, random
weights, eval mode); ``point_descriptions`` stands in for the frozen text-encoder output. Loss and
decode code are shared with GraphCape and tested against its fixture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baselines.capex.model import CapeXConfig, CapeXHead  # noqa: E402
from baselines.common.lineage_head import head_state_from_checkpoint  # noqa: E402

NAME = "capex_head_reduced"
OUTPUT_TOL = {
    "output_kpts": (1e-5, 0.0),
    "initial_proposals_for_loss": (1e-5, 0.0),
    "out_points": (1e-5, 0.0),
    "similarity_map": (1e-4, 1e-4),
    "outs_dec": (1e-4, 1e-4),
}


def _t(arr) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr))


@pytest.fixture(scope="module")
def golden(golden_dir):
    torch.set_num_threads(1)
    data = dict(np.load(golden_dir / f"{NAME}.npz"))
    meta = json.loads((golden_dir / f"{NAME}.json").read_text())
    cfg = CapeXConfig.from_official(meta["head_cfg"])
    head = CapeXHead(cfg).eval()
    params = {k[len("param::"):]: _t(v) for k, v in data.items() if k.startswith("param::")}
    head.load_state_dict(params, strict=True)
    inp = {k[len("in::"):]: _t(v) for k, v in data.items() if k.startswith("in::")}
    ref = {k[len("out::"):]: v for k, v in data.items() if k.startswith("out::")}
    with torch.no_grad():
        out = head(inp["x"], inp["point_descriptions"], inp["mask_s"], inp["skeleton_padded"])
    return {"head": head, "cfg": cfg, "inp": inp, "ref": ref, "out": out, "params": params,
            "skeleton": meta["skeleton"]}


def test_config_switches(golden):
    cfg = golden["cfg"]
    assert (cfg.token_source, cfg.token_channels, cfg.support_order, cfg.decoder_ffn) == ("text", 48, "zeros",
                                                                                          "graph_pre")


def test_state_dict_keys_are_official(golden):
    keys = set(golden["head"].state_dict())
    assert keys == set(golden["params"])
    assert "text_proj.weight" in keys and not any(k.startswith("query_proj") for k in keys)


@pytest.mark.parametrize("name", sorted(OUTPUT_TOL))
def test_output_matches_golden(golden, name):
    atol, rtol = OUTPUT_TOL[name]
    got = getattr(golden["out"], name).numpy()
    want = golden["ref"][name]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol, err_msg=name)


def test_predict_from_text_with_fewer_slots(golden):
    """Real K < 100: predict_from_text pads to the official 100 slots and matches the golden run."""
    inp, head = golden["inp"], golden["head"]
    mask = inp["mask_s"][..., 0]
    k = int(torch.nonzero(mask.sum(0)).max()) + 1
    skeleton = [[e for e in s if max(e) < k] for s in golden["skeleton"]]
    with torch.no_grad():
        pred = head.predict_from_text(inp["x"], inp["point_descriptions"][:, :k], mask[:, :k], skeleton)
    np.testing.assert_allclose(pred.numpy(), golden["ref"]["output_kpts"][-1][:, :k], atol=1e-5, rtol=0)


def test_forward_batch_equals_per_sample(golden):
    inp, head = golden["inp"], golden["head"]
    full = golden["out"].output_kpts
    for b in range(inp["x"].shape[0]):
        sl = slice(b, b + 1)
        with torch.no_grad():
            one = head(inp["x"][sl], inp["point_descriptions"][sl], inp["mask_s"][sl], [golden["skeleton"][b]])
        np.testing.assert_allclose(one.output_kpts.numpy(), full[:, sl].numpy(), atol=1e-5, rtol=0)


def test_text_rows_outside_mask_are_ignored(golden):
    """Masked keypoints' text rows are multiplied by the mask before text_proj (official head)."""
    inp, head = golden["inp"], golden["head"]
    noisy = inp["point_descriptions"] + (1 - inp["mask_s"]) * torch.randn_like(inp["point_descriptions"])
    with torch.no_grad():
        out = head(inp["x"], noisy, inp["mask_s"], inp["skeleton_padded"])
    np.testing.assert_allclose(out.output_kpts.numpy(), golden["ref"]["output_kpts"], atol=1e-5)


def test_support_mask_from_keypoints(golden):
    """mask = Π over shots of (visible and σ=1 window touching the 64×64 map)."""
    head = golden["head"]
    kpts = torch.tensor([[[[0.5, 0.5], [1.2, 0.5], [-0.01, 0.2], [0.3, 0.3]]],
                         [[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.3, 0.3]]]])  # [S=2, B=1, K=4, 2]
    vis = torch.tensor([[[True, True, True, True]], [[True, True, True, False]]])
    np.testing.assert_array_equal(head.support_mask(kpts, vis).numpy(), [[1.0, 0.0, 1.0, 0.0]])


def test_default_config_matches_official_manifest(golden_dir):
    manifest = json.loads((golden_dir / "capex_tiny_backbone_head_state_dict_manifest.json").read_text())
    state = head_state_from_checkpoint({k: torch.zeros(v) for k, v in manifest["state_dict_shapes"].items()})
    head = CapeXHead()
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == {k: list(v.shape) for k, v in state.items()}
    head.load_state_dict(state, strict=True)
