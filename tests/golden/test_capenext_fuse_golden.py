"""CapeNext fusion module (HCMI + DSFR) against the official-code golden fixtures (spec §10.2, §10.4).

Each fixture's official ``state_dict`` is loaded with ``strict=True`` (so the parameter names are the official
ones), the module runs in eval mode on the stored inputs, and every stored output is compared separately, so a
failure names the diverging intermediate.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from capenext.fuse import FuseConfig, SimpleMultiModalModule, used_parameter_count  # noqa: E402

REDUCED = (
    "capenext_fuse_module_reduced",
    "capenext_fuse_module_wo_query_img_reduced",
    "capenext_fuse_module_wo_category_text_reduced",
)
FULL = "capenext_fuse_module_full512"

# Per-output names listed once so that parametrisation does not need the fixtures at collection time.
OUTPUTS = {
    "capenext_fuse_module_reduced": (
        "e_joint_refined", "hcmi_out", "e_cls_refined", "e_img_refined", "hcmi_attn_layer_out",
        "hcmi_attn_weights", "hcmi_attn_norm1_out", "dsfr_text_stream", "dsfr_image_stream",
        "dsfr_text_mha_out", "dsfr_image_mha_out", "dsfr_text_norm1_out", "dsfr_image_norm1_out",
        "gate_text_logit", "gate_image_logit", "gate_text_w_t", "gate_image_w_i", "weighted_fusion_out",
        "dsfr_norm2_out",
    ),
    "capenext_fuse_module_wo_query_img_reduced": (
        "e_joint_refined", "hcmi_out", "hcmi_attn_layer_out", "hcmi_attn_weights", "weighted_fusion_out",
        "dsfr_norm2_out", "dsfr_text_stream", "gate_text_w_t",
    ),
    "capenext_fuse_module_wo_category_text_reduced": (
        "e_joint_refined", "hcmi_out", "hcmi_attn_layer_out", "hcmi_attn_weights", "weighted_fusion_out",
        "dsfr_norm2_out", "dsfr_image_stream", "gate_image_w_i",
    ),
    FULL: (
        "e_joint_refined", "e_cls_refined", "e_img_refined", "hcmi_attn_weights", "dsfr_text_stream",
        "dsfr_image_stream", "gate_text_w_t", "gate_image_w_i", "weighted_fusion_out", "dsfr_norm2_out",
    ),
}


def _tolerance(name: str) -> dict[str, float]:
    """Spec §10.4: gates and attention weights atol 1e-6; module outputs and streams atol = rtol = 1e-5."""
    if name.startswith("gate_") and not name.endswith("_logit") or name.endswith("attn_weights"):
        return {"atol": 1e-6, "rtol": 0.0}
    return {"atol": 1e-5, "rtol": 1e-5}


def _full512_state_dict(sidecar: dict) -> dict[str, np.ndarray]:
    """Regenerate the full-width weights from the sidecar recipe (they are not stored in the npz)."""
    out = {}
    for i, key in enumerate(sidecar["state_dict_key_order"]):
        shape = tuple(sidecar["state_dict_shapes"][key])
        z = np.random.RandomState(7000 + i).standard_normal(shape)
        if len(shape) >= 2:
            w = z / np.sqrt(np.prod(shape[1:]))
        elif key.endswith("weight"):
            w = 1 + 0.1 * z
        else:
            w = 0.05 * z
        out[key] = w.astype(np.float32)
    return out


@lru_cache(maxsize=None)
def _run(golden_dir: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Load fixture ``name``, run the module once, return (reference outputs, our intermediates)."""
    sidecar = json.loads((golden_dir / f"{name}.json").read_text())
    data = np.load(golden_dir / f"{name}.npz")
    if name == FULL:
        params = _full512_state_dict(sidecar)
        for key, (total, abs_total) in sidecar["param_checksums"].items():
            got = params[key].astype(np.float64)
            assert np.isclose(got.sum(), total, rtol=1e-9, atol=1e-9), key
            assert np.isclose(np.abs(got).sum(), abs_total, rtol=1e-9), key
    else:
        params = {k[len("param::"):]: data[k] for k in data.files if k.startswith("param::")}
    cfg = FuseConfig.from_official(sidecar["module_class"], **sidecar["module_kwargs"])
    torch.manual_seed(0)
    module = SimpleMultiModalModule(cfg).eval()
    # strict=True: every official key is present and nothing else is.
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)
    if name == FULL:
        assert sum(p.numel() for p in module.parameters()) == sidecar["num_params"]
        assert used_parameter_count(module) == sidecar["num_params_used_in_forward"]
        assert list(module.state_dict()) == sidecar["state_dict_key_order"]
    inputs = {k: torch.from_numpy(data[f"in::{k}"]) for k in ("e_img", "e_joint", "e_cls")}
    with torch.no_grad():
        out, trace = module.process(inputs["e_img"], inputs["e_joint"], inputs["e_cls"], return_intermediates=True)
    assert torch.equal(out, trace["e_joint_refined"])
    refs = {k[len("out::"):]: data[k] for k in data.files if k.startswith("out::")}
    return refs, {k: v.numpy() for k, v in trace.items()}


CASES = [(name, out) for name in (*REDUCED, FULL) for out in OUTPUTS[name]]


@pytest.mark.parametrize(("fixture", "output"), CASES, ids=[f"{f.removeprefix('capenext_fuse_module_')}-{o}" for f, o in CASES])
def test_fuse_module_matches_official(golden_dir: Path, fixture: str, output: str) -> None:
    torch.set_num_threads(1)
    refs, ours = _run(golden_dir, fixture)
    assert output in refs, f"{fixture} has no out::{output}"
    assert output in ours, f"module did not produce {output}"
    assert ours[output].shape == refs[output].shape
    np.testing.assert_allclose(ours[output], refs[output], **_tolerance(output), err_msg=f"{fixture}:{output}")


@pytest.mark.parametrize("fixture", [*REDUCED, FULL])
def test_fixture_outputs_are_all_checked(golden_dir: Path, fixture: str) -> None:
    """Guards the hard-coded OUTPUTS table against a fixture that gained outputs."""
    data = np.load(golden_dir / f"{fixture}.npz")
    stored = {k[len("out::"):] for k in data.files if k.startswith("out::")}
    assert stored == set(OUTPUTS[fixture])


def test_official_key_names_per_variant(golden_dir: Path) -> None:
    """The ablations drop exactly the official sub-modules (and rename the lone text gate to ``weight_text``)."""
    for name in REDUCED:
        sidecar = json.loads((golden_dir / f"{name}.json").read_text())
        cfg = FuseConfig.from_official(sidecar["module_class"], **sidecar["module_kwargs"])
        assert cfg.official_class_name == sidecar["module_class"]
        expected = [k[len("param::"):] for k in sidecar["arrays"] if k.startswith("param::")]
        assert sorted(SimpleMultiModalModule(cfg).state_dict()) == sorted(expected)


def test_padding_slots_are_not_masked_and_module_trains() -> None:
    """Official behaviour kept: zero (padded) joint rows come out non-zero; our version also has gradients
    (the released forward cannot run with autograd, spec §10.5 quirk 1)."""
    torch.manual_seed(3)
    module = SimpleMultiModalModule(FuseConfig(embed_dim=32, num_heads=4)).train()
    e_joint = torch.nn.functional.normalize(torch.randn(2, 10, 32), dim=-1)
    e_joint[:, 6:] = 0
    out = module(torch.randn(2, 32), e_joint, torch.randn(2, 32))
    assert out.shape == (2, 10, 32)
    assert out[:, 6:].abs().sum() > 0
    out.sum().backward()
    assert module.weighted_ffn[0].weight.grad is not None
    assert module.non_linear[0].weight.grad is None  # dead official branch


def test_config_rejects_empty_module() -> None:
    with pytest.raises(ValueError):
        FuseConfig(use_category_text=False, use_query_image=False)
    with pytest.raises(KeyError):
        FuseConfig.from_official("SimpleMultiModalTripleEncoder")
