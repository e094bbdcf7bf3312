"""Official checkpoint converter: fake official checkpoints synthesised from the golden full-model manifests.

For each manifest (official key -> shape), random tensors of those shapes are saved under the official keys as an
mmcv-style ``.pth`` (``{"state_dict": {"module." + key: tensor}, "meta": ...}``) and converted into our full-size
model (official preset backbone). Checked: strict loading, every official key mapped or deliberately ignored with
a reason, every mapped tensor's value where it should land, and the failures a wrong checkpoint must raise.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from baselines.capeformer.method import CapeFormer, LineageImageModel  # noqa: E402
from baselines.common.backbones import build_backbone  # noqa: E402
from baselines.common.convert import (  # noqa: E402
    ConversionError,
    convert_official_state_dict,
    load_official_capeformer,
    load_official_capenext,
    load_official_capex,
    load_official_checkpoint,
)
from baselines.graphcape.method import GraphCape  # noqa: E402
from baselines.pomnet.method import POMNet  # noqa: E402
from cape_bench.api import RunContext  # noqa: E402

pytestmark = pytest.mark.slow  # builds official-size models and converts their checkpoints

INTEGER_SUFFIXES = ("num_batches_tracked", "relative_position_index")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _manifest(golden_dir, name):
    data = json.loads((golden_dir / name).read_text())
    return {k: tuple(v) for k, v in data["state_dict_shapes"].items()}


def _fake_state(manifest, seed, shared=("encoder_sample.", "encoder_query.")):
    """Random tensors of the manifest's shapes; ``shared[0]`` copies ``shared[1]`` (CapeFormer's one module)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in manifest.items():
        if key.endswith(INTEGER_SUFFIXES):
            state[key] = torch.randint(0, 1000, shape, generator=g, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5  # a variance: positive
        else:
            state[key] = torch.randn(shape, generator=g)
    if shared is not None:
        for key in manifest:
            twin = shared[1] + key[len(shared[0]):]
            if key.startswith(shared[0]) and twin in state:
                state[key] = state[twin].clone()
    return state


def _save(state, path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()},
                "meta": {"note": "synthesised from the golden manifest"}}, path)
    return path


def _ctx(tmp_path, log):
    return RunContext(dataset="mp100", split=1, shots=1, ann_dir=str(tmp_path), image_root=None,
                      cache_dir=str(tmp_path / "cache"), options={}, seed=1, log=log)


def _check_report(report, manifest, state, model, ignored_expected):
    """Every key mapped or ignored, strict coverage of the model, values in place."""
    assert set(report.mapped) | set(report.ignored) == set(manifest)
    assert not set(report.mapped) & set(report.ignored)
    assert set(report.ignored) == ignored_expected
    assert all(reason for reason in report.ignored.values())
    own = model.state_dict()
    assert sorted(report.mapped.values()) == sorted(own)  # strict: every model tensor filled exactly once
    for official, ours in report.mapped.items():
        assert torch.equal(own[ours], state[official].to(own[ours].dtype)), (official, ours)
    lines = report.ignored_lines()
    assert sum(int(line.split(" ", 2)[1]) for line in lines) == len(report.ignored)
    prov = report.provenance()
    assert prov["ignored_keys"] == len(report.ignored) and prov["mapped_keys"] == len(report.mapped)
    assert prov["official_keys"] == len(manifest) and prov["ignored"] == lines


def _swin_ignored(manifest):
    return {k for k in manifest if k.startswith("backbone.") and (
        k.startswith("backbone.head.")
        or k.endswith(("relative_coords_table", "relative_position_index", "attn_mask")))}


# ---------------------------------------------------------------------------------------------- CapeFormer


def test_capeformer_checkpoint(golden_dir, tmp_path):
    manifest = _manifest(golden_dir, "capeformer_full_state_dict_manifest.json")
    state = _fake_state(manifest, 0)
    path = _save(state, tmp_path / "capeformer-split1-1shot.pth")
    model = CapeFormer(preset="official", backbone_weights="random").build_model()
    messages = []
    prov = load_official_capeformer(model, path, log=messages.append)
    assert prov["ignored_keys"] == 318 and prov["mapped_keys"] == 318 + 144
    assert len(prov["ignored"]) == 1 and prov["ignored"][0].startswith("ignored 318 x encoder_sample.*: share_backbone")
    assert any("462 official tensors loaded, 318 keys ignored" in m for m in messages)
    assert messages[1:] == ["  " + line for line in prov["ignored"]]
    report = convert_official_state_dict(state, model, "capeformer")[1]
    _check_report(report, manifest, state, model, {k for k in manifest if k.startswith("encoder_sample.")})
    assert report.mapped["encoder_query.layer4.2.bn3.running_var"] == "backbone.body.layer4.2.bn3.running_var"
    assert report.mapped["keypoint_head.transformer.decoder.layers.2.choker.weight"] == \
        "head.transformer.decoder.layers.2.choker.weight"

    # encoder_sample must repeat encoder_query (one shared module)
    state["encoder_sample.conv1.weight"] = state["encoder_sample.conv1.weight"] + 1
    with pytest.raises(ConversionError, match="not shared"):
        convert_official_state_dict(state, model, "capeformer")


# ---------------------------------------------------------------------------------------------- PoseAnything


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_poseanything_checkpoint_through_the_method(golden_dir, tmp_path, size):
    manifest = _manifest(golden_dir, f"poseanything_{size}_full_state_dict_manifest.json")
    state = _fake_state(manifest, 1, shared=None)
    path = _save(state, tmp_path / f"graph_split1_{size}.pth")
    messages = []
    method = GraphCape(checkpoint=str(path), preset="official", backbone=f"swinv2_{size}", backbone_weights="random")
    method.prepare(_ctx(tmp_path, messages.append))
    prov = method.provenance()
    ignored = _swin_ignored(manifest)
    assert prov["checkpoint"] == str(path) and prov["ignored_keys"] == len(ignored)
    assert prov["mapped_keys"] == len(manifest) - len(ignored)
    assert prov["backbone_weights"] == f"from the official checkpoint {path}"
    assert any("backbone.head.weight" in m for m in messages) and any("attn_mask" in m for m in messages)
    model = method.model
    assert not model.training
    report = convert_official_state_dict(state, model, "poseanything")[1]
    _check_report(report, manifest, state, model, ignored)
    own = model.state_dict()
    # Microsoft SwinV2 merges patches at the end of stage S, timm at the start of stage S+1
    for s in range(3):
        assert torch.equal(own[f"backbone.body.layers.{s + 1}.downsample.reduction.weight"],
                           state[f"backbone.layers.{s}.downsample.reduction.weight"])
    assert torch.equal(own["head.transformer.decoder.layers.0.ffn1.conv.weight"],
                       state["keypoint_head.transformer.decoder.layers.0.ffn1.conv.weight"])
    assert sum(math.prod(manifest[k]) for k in report.mapped) == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if n in own)


def test_poseanything_mismatches_are_rejected(golden_dir, tmp_path):
    manifest = _manifest(golden_dir, "poseanything_tiny_full_state_dict_manifest.json")
    state = _fake_state(manifest, 2, shared=None)
    model = GraphCape(preset="official", backbone_weights="random").build_model()
    convert_official_state_dict(state, model, "poseanything")  # fits

    bad = dict(state, **{"keypoint_head.extra.weight": torch.zeros(2)})
    with pytest.raises(ConversionError, match="model does not have.*head.extra.weight"):
        convert_official_state_dict(bad, model, "poseanything")
    bad = dict(state, **{"text_backbone.w": torch.zeros(2)})  # ignored only for CapeX / CapeNext
    with pytest.raises(ConversionError, match="neither mapped nor deliberately ignored.*text_backbone.w"):
        convert_official_state_dict(bad, model, "poseanything")
    bad = dict(state, **{"backbone.layers.0.blocks.0.attn.new_thing": torch.zeros(2)})
    with pytest.raises(ConversionError, match="unknown to the poseanything key map"):
        convert_official_state_dict(bad, model, "poseanything")
    bad = {k: v for k, v in state.items() if k != "keypoint_head.query_proj.bias"}
    with pytest.raises(ConversionError, match="does not fill.*head.query_proj.bias"):
        convert_official_state_dict(bad, model, "poseanything")
    bad = dict(state, **{"keypoint_head.input_proj.weight": torch.zeros(256, 2048, 1, 1)})
    with pytest.raises(ConversionError, match="shape mismatch.*input_proj"):
        convert_official_state_dict(bad, model, "poseanything")
    # a recomputed buffer with another shape = another window geometry
    key = "backbone.layers.0.blocks.0.attn.relative_position_index"
    bad = dict(state, **{key: torch.zeros(64, 64, dtype=torch.long)})
    with pytest.raises(ConversionError, match="recompute.*relative_position_index"):
        convert_official_state_dict(bad, model, "poseanything")
    # a base_* (no graph) checkpoint: plain Linear ffn1 does not fit the graph decoder
    bad = {k: v for k, v in state.items() if ".ffn1.conv." not in k}
    for layer in range(3):
        bad[f"keypoint_head.transformer.decoder.layers.{layer}.ffn1.weight"] = torch.zeros(768, 256)
        bad[f"keypoint_head.transformer.decoder.layers.{layer}.ffn1.bias"] = torch.zeros(768)
    with pytest.raises(ConversionError, match="does not have"):
        convert_official_state_dict(bad, model, "poseanything")
    # the method refuses a non-official model
    quick = GraphCape(checkpoint=str(_save(state, tmp_path / "pa.pth")), preset="quick", backbone_weights="random")
    with pytest.raises(ValueError, match="official model"):
        quick.prepare(_ctx(tmp_path, lambda m: None))


# ---------------------------------------------------------------------------------------------- POMNet


def test_pomnet_checkpoint_through_the_method(golden_dir, tmp_path):
    manifest = _manifest(golden_dir, "pomnet_full_state_dict_manifest.json")
    state = _fake_state(manifest, 3, shared=None)  # two independent encoders
    path = _save(state, tmp_path / "pomnet_split1.pth")
    method = POMNet(checkpoint=str(path), preset="official", backbone_weights="random")
    method.prepare(_ctx(tmp_path, lambda m: None))
    prov = method.provenance()
    assert prov["ignored_keys"] == 0 and prov["mapped_keys"] == 758 and prov["ignored"] == []
    assert prov["encoders"].startswith("two") and prov["backbone_weights"].startswith("from the official")
    model = method.model
    report = convert_official_state_dict(state, model, "pomnet")[1]
    _check_report(report, manifest, state, model, set())
    own = model.state_dict()
    assert report.mapped["encoder_sample.conv1.weight"] == "backbone.support.body.conv1.weight"
    assert report.mapped["encoder_query.conv1.weight"] == "backbone.query.body.conv1.weight"
    assert not torch.equal(own["backbone.support.body.conv1.weight"], own["backbone.query.body.conv1.weight"])
    assert torch.equal(own["head.deconv_layers.7.running_mean"], state["keypoint_head.deconv_layers.7.running_mean"])
    # support images go through the encoder_sample weights, queries through encoder_query
    seen = []
    for slot in ("query", "support"):
        getattr(model.backbone, slot).body.conv1.register_forward_hook(lambda m, i, o, slot=slot: seen.append(slot))
    with torch.no_grad():
        model.support_features(torch.zeros(1, 3, 32, 32))
        model.query_features(torch.zeros(1, 3, 32, 32))
    assert seen == ["support", "query"]

    # one shared encoder cannot take official POMNet weights
    shared = POMNet(preset="official", shared_backbone=True, backbone_weights="random").build_model()
    with pytest.raises(ConversionError, match="two encoders"):
        convert_official_state_dict(state, shared, "pomnet")
    quick = POMNet(checkpoint=str(path), preset="quick", backbone_weights="random")
    with pytest.raises(ValueError, match="official model"):
        quick.prepare(_ctx(tmp_path, lambda m: None))


# ---------------------------------------------------------------------------------------------- CapeX


def test_capex_checkpoint(golden_dir, tmp_path):
    """CapeX-shaped model (``backbone`` + ``keypoint_head``, as baselines/capex/method.py names them)."""
    from baselines.capex.model import CapeXHead

    manifest = _manifest(golden_dir, "capex_tiny_backbone_head_state_dict_manifest.json")
    state = _fake_state(manifest, 4, shared=None)
    state["text_backbone.embeddings.word_embeddings.weight"] = torch.randn(10, 4)  # the frozen text tower
    path = _save(state, tmp_path / "capex-split1.pth")

    class CapeXLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build_backbone("swinv2_tiny", "random")[0]
            self.keypoint_head = CapeXHead()

    model = CapeXLike()
    prov = load_official_capex(model, path)
    ignored = _swin_ignored(manifest) | {"text_backbone.embeddings.word_embeddings.weight"}
    assert prov["ignored_keys"] == len(ignored)
    assert any(line.startswith("ignored 1 x text_backbone.*: frozen pretrained text encoder")
               for line in prov["ignored"])
    report = convert_official_state_dict(state, model, "capex")[1]
    _check_report(report, {**manifest, "text_backbone.embeddings.word_embeddings.weight": (10, 4)}, state, model,
                  ignored)
    assert report.mapped["keypoint_head.text_proj.weight"] == "keypoint_head.text_proj.weight"


def test_unknown_layout_and_unreadable_file(tmp_path):
    model = LineageImageModel(torch.nn.Identity(), torch.nn.Identity(), 8)
    with pytest.raises(ValueError, match="unknown layout"):
        convert_official_state_dict({}, model, "nope")
    from fractions import Fraction

    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"keypoint_head.x": torch.zeros(1)}, "meta": {"lr": Fraction(1, 3)}}, path)
    with pytest.raises(ConversionError, match="allow_pickle"):
        load_official_checkpoint(model, path, "capeformer")


def test_capenext_checkpoint(golden_dir, tmp_path):
    """CapeNext-shaped model (``backbone`` + ``head.additional_module`` / ``head.keypoint_head``, as
    capenext/method.py names them). The 151M-parameter frozen CLIP tower is represented by two of its keys."""
    from capenext.model import CapeNextHead

    data = json.loads((golden_dir / "capenext_full_state_dict_manifest.json").read_text())
    manifest = {k: tuple(v["shape"]) for k, v in data["state_dict"].items()}
    text_keys = [k for k in manifest if k.startswith("text_backbone.")]
    assert len(text_keys) == 302
    manifest = {k: v for k, v in manifest.items() if not k.startswith("text_backbone.") or k in text_keys[:2]}
    state = _fake_state(manifest, 5, shared=None)
    path = _save(state, tmp_path / "capenext-split1.pth")

    class CapeNextLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build_backbone("swinv2_tiny", "random")[0]
            self.head = CapeNextHead()

    model = CapeNextLike()
    prov = load_official_capenext(model, path)
    ignored = _swin_ignored(manifest) | set(text_keys[:2])
    assert prov["ignored_keys"] == len(ignored)
    report = convert_official_state_dict(state, model, "capenext")[1]
    _check_report(report, manifest, state, model, ignored)
    assert report.mapped["additional_module.norm1.weight"] == "head.additional_module.norm1.weight"
    assert report.mapped["keypoint_head.text_proj.weight"] == "head.keypoint_head.text_proj.weight"
