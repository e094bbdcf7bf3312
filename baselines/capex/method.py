"""``capex``: CapeX (Rusanovsky et al., ICLR 2025) as a cape-bench method.

Backbone → :class:`~baselines.capex.model.CapeXHead`, whose support tokens are the text embeddings of the
category's keypoint descriptions (``Category.descriptions``: the harness picked them from the annotation file or
a descriptions file, ``--text-variant``). Mirrors ``matanr/capex@cbb591f`` ``models/models/detectors/capex.py``
(``CapeXModel.predict`` / ``extract_text_features``; spec ../shared/spec/official_code.md §5, §10.1):

1. ``mask_s = target_weight_s[0]``: the MSRA target weight (visible and inside the heatmap window, σ = 1) of
   **shot 0 only** (capex.py L260; the official test set carries one weight per shot and never multiplies them).
   The option ``support_mask="product"`` uses the product over shots instead (PoseAnything's rule);
2. ``e_joint``: the frozen text encoder on the support-visible descriptions, L2-normalised, scattered into zero
   rows; every shot carries the same descriptions and shot 0's mask, so the official mean over shots is a no-op
   and 5-shot changes only the mask (``baselines.capex.model.joint_text_embeddings``, which CapeNext reuses);
3. ``feature_q = backbone(img_q)``; the support *image* is never used;
4. ``keypoint_head(feature_q, e_joint, mask_s, skeleton)`` with the category skeleton (graph decoder 'pre').

Text encoders are chosen by name (``text_encoder``): the official ``gte-base-en-v1.5`` (768-d, CLS + L2), CLIP
``clip-vit-b32`` (512-d, the ``1shot-swin-clip`` configs) or the offline ``all-minilm-l6-v2`` (384-d). When the
named encoder's genuine weights are not on this machine it falls back to genuine MiniLM (``pick_text_encoder``),
says so in the log and in the provenance, and the head's text width follows the encoder that actually runs.
Every distinct string is encoded once: in-memory + SQLite cache under ``RunContext.cache_dir/text``; the support
state holds the embeddings, so queries never re-encode anything.

Deliberate deviations: the training descriptions are those of the training annotation file as the common
trainer loads it (keypoint names, ``_`` → space), not CapeX's curated ``regular_descriptions`` lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.capex.model import CapeXConfig, CapeXHead, joint_text_embeddings
from baselines.common import text_encoders as te
from baselines.common.backbones import FEATURES_AT, build_backbone, features_at
from baselines.common.budget import LINEAGE_BUDGET
from baselines.common.plugin import TorchMethod
from baselines.common.trainer import Preset
from cape_bench.api import Category, InstanceView, MethodInfo, RunContext

PRESETS = {
    # configs/tiny/tiny_split{1..5}_config.py (= PoseAnything's schedule, spec §4.3/§5.4): Adam 1e-5 (backbone
    # included), linear warm-up 1000 iterations, ×0.1 at epochs 160 and 180 of 200, batch 16, SwinV2-T at 256²
    # (16×16 features), gte-base text, σ = 1
    "official": Preset("official", iterations=0, epochs=200, milestones=(160, 180), batch_size=16, lr=1e-5,
                       warmup_iters=1000, input_size=256, backbone="swinv2_tiny", checkpoint_every=500),
    # CAPE-Synth on a 2-core CPU: CapeFormer's quick shape (genuine ImageNet MobileNetV2 cut at stride 16, 8×8
    # features at 128², fine-tuned with the head; genuine MiniLM text, frozen; Adam 1e-4, text tokens × √D) for
    # twice its iterations: a text head learns appearance from text alone, with no support keypoint to copy
    # (CAPE-Synth split 1, 1-shot, 20 episodes: 60.4 % at 800 iterations, 71.3 % at 1,600)
    "quick": Preset("quick", iterations=1600, batch_size=8, lr=1e-4, warmup_iters=50, milestones=(1280,),
                    input_size=128, backbone="mobilenetv2_s16"),
    # the default job's preset (baselines.common.budget): frozen backbone, half-width head, 800 iterations at 3e-4
    "budget": LINEAGE_BUDGET,
}

#: preset → side the query feature map is resized to (None: the backbone's own, 16×16 for SwinV2-T at 256²).
FEATURE_SIZES: dict[str, int | None] = {"official": None, "quick": 8, "budget": 8}

#: preset → default text encoder.
TEXT_ENCODERS: dict[str, str] = {"official": te.GTE, "quick": te.MINILM, "budget": te.MINILM}

#: preset → text-token scale (option ``text_scale``): the unit-norm keypoint-text rows are multiplied by it before
#: they enter the model (CapeX: the head's ``text_proj``; CapeNext: the fusion module). ``"sqrt_dim"`` = √D of the
#: text encoder that runs. The official code feeds unit rows (scale 1) beside image tokens of norm ≈ 7 and sine
#: positions of norm ≈ 11, so the first encoder layer all but erases which keypoint a token stands for (support
#: tokens' pairwise cosine 0.54 → 0.99); the quick presets restore a token norm comparable to the image tokens'.
TEXT_SCALES: dict[str, float | str] = {"official": 1.0, "quick": "sqrt_dim", "budget": "sqrt_dim"}

SUPPORT_MASKS = ("shot0", "product")


# ----------------------------------------------------------------------------------------------------------------
# Encoders


def load_text_encoder(method: str, requested: str, cache_dir: str | Path, *, allow_random: bool, fallback: bool,
                      log) -> tuple[te.TextEncoder, dict[str, Any]]:
    """Build the frozen text encoder named ``requested``, falling back loudly to genuine MiniLM.

    Args:
        method: method name, for messages.
        requested: encoder name or alias (``gte-base-en-v1.5``, ``clip-vit-b32``, ``all-minilm-l6-v2``, ...).
        cache_dir: folder of the embedding cache (``text_embeddings.sqlite``).
        allow_random: build the named encoder with seeded random weights when its genuine weights are absent
            (tests / profiling only; the provenance says ``genuine: False``).
        fallback: when genuine weights are absent (and not ``allow_random``), use genuine MiniLM instead of raising.
        log: one-message callable.

    Returns:
        (encoder, provenance dict: the encoder's own provenance plus ``requested``, ``fallback``).

    Raises:
        WeightsNotFoundError: weights absent and neither ``allow_random`` nor ``fallback``.
    """
    if allow_random:
        enc = te.get_text_encoder(requested, cache_dir=cache_dir, allow_random=True)
    elif fallback:
        enc = te.pick_text_encoder([requested], cache_dir=cache_dir)
    else:
        enc = te.get_text_encoder(requested, cache_dir=cache_dir)
    fell_back = enc.weights.note.startswith("fallback")
    if fell_back:
        log(f"[bold yellow]WARNING {method}: genuine '{requested}' text-encoder weights are not on this machine; "
            f"running with genuine {enc.name} ({enc.dim}-d) text embeddings instead. These are NOT {method} numbers "
            f"with '{requested}'. ({enc.weights.note[:300]})[/bold yellow]")
    elif not enc.weights.genuine:
        log(f"[bold red]WARNING {method}: text encoder {enc.name} has RANDOM weights (allow_random_encoders): "
            f"for tests/profiling only, never for reported numbers[/bold red]")
    else:
        log(f"{method}: text encoder {enc.name} ({enc.dim}-d, genuine weights {enc.weights.path})")
    return enc, {"requested": requested, "fallback": fell_back}


# ----------------------------------------------------------------------------------------------------------------
# Model


class TextPoseModel(nn.Module):
    """Backbone + a text-token head; the frozen text encoder is held outside the state dict.

    Args:
        backbone: image → float32[B, C, h, w] feature map.
        feature_size: side the feature map is bilinearly resized to, or None to keep it.
        encode_text: N strings → float32[N, D] (the cached frozen encoder's ``encode``).
        text_scale: factor on the unit-norm keypoint-text rows (1.0 = official; see :data:`TEXT_SCALES`).
    """

    def __init__(self, backbone: nn.Module, feature_size: int | None, encode_text, text_scale: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_size = feature_size
        self.encode_text = encode_text  # a plain callable, not a sub-module: frozen, never saved
        self.text_scale = float(text_scale)  # multiplies the unit-norm e_joint rows (see TEXT_SCALES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float32[B, 3, S, S] ImageNet-normalised crops → float32[B, C, h, w] query features."""
        return features_at(self.backbone, images, self.feature_size)

    def joint_embeddings(self, descriptions, mask: torch.Tensor) -> torch.Tensor:
        """``e_joint`` float32[B, K, D] on ``mask``'s device (official ``extract_text_features``), × ``text_scale``.

        Args:
            descriptions: B lists of keypoint texts.
            mask: float[B, K] support mask (slots beyond a sample's keypoints must be 0).
        """
        with torch.no_grad():  # frozen encoder, official set_grad_enabled(False)
            e_joint = joint_text_embeddings(descriptions, mask, self.encode_text).to(mask.device)
        return e_joint if self.text_scale == 1.0 else e_joint * self.text_scale


class CapeXModel(TextPoseModel):
    """CapeX: backbone + :class:`CapeXHead` (state-dict keys ``backbone.*``, ``keypoint_head.*`` as officially)."""

    def __init__(self, backbone: nn.Module, keypoint_head: CapeXHead, feature_size: int | None, encode_text,
                 text_scale: float = 1.0) -> None:
        super().__init__(backbone, feature_size, encode_text, text_scale)
        self.keypoint_head = keypoint_head

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Official ``forward_train``: losses of ``get_loss`` with weight ``target_weight_q * mask_s``.

        Args:
            batch: the trainer's batch (``img_q`` float32[B, 3, S, S], ``kpts_q`` [B, K, 2] crop px, ``target_q``,
                ``weight_q`` [B, K], ``mask_s`` [B, K], ``descriptions``, ``skeletons``).
        """
        mask_s = batch["mask_s"]
        feat_q = self.features(batch["img_q"])
        e_joint = self.joint_embeddings(batch["descriptions"], mask_s)
        outputs = self.keypoint_head(feat_q, e_joint, mask_s, batch["skeletons"])
        weight = (batch["weight_q"] * mask_s)[..., None]
        return self.keypoint_head.get_loss(outputs, batch["kpts_q"], batch["target_q"], weight)


# ----------------------------------------------------------------------------------------------------------------
# Plug-in


@dataclass
class TextSupportState:
    """What ``encode_support`` hands to ``predict`` for one episode.

    Attributes:
        category: the episode's category.
        mask: float32[1, K] support mask (see ``support_mask`` option).
        e_joint: float32[1, K, D] keypoint-text embeddings (unit rows where ``mask`` is 1, zero elsewhere).
        skeleton: int64[E, 2] 0-based edges.
        support_ann_ids: int64[S] support annotation ids.
    """

    category: Category
    mask: torch.Tensor
    e_joint: torch.Tensor
    skeleton: np.ndarray
    support_ann_ids: np.ndarray


def slice_view(view: InstanceView, sl: slice) -> InstanceView:
    """The rows ``sl`` of an :class:`InstanceView` (same category)."""
    return view.take(sl)


class TextMethod(TorchMethod):
    """Shared plug-in logic of the text-token methods (CapeX, CapeNext).

    Args:
        checkpoint: a trained ``model.safetensors`` (see :class:`TorchMethod`).
        preset: ``"budget"`` (default), ``"quick"`` or ``"official"``.
        backbone: backbone name (default: the preset's).
        batch_size: queries per forward.
        text_encoder: text encoder name (default: the preset's; see :data:`TEXT_ENCODERS`).
        **options: ``backbone_weights`` (None = auto, ``"random"``, or a file), ``feature_size`` (int),
            ``allow_random_encoders`` (bool, tests only), ``encoder_fallback`` (bool, default True),
            ``text_scale`` (a number, or ``"sqrt_dim"``; default per preset, :data:`TEXT_SCALES`),
            ``support_mask`` (``"shot0"`` official / ``"product"``), plus subclass options.
    """

    text_encoders: dict[str, str] = TEXT_ENCODERS
    feature_sizes: dict[str, int | None] = FEATURE_SIZES
    sigma = 1.0  # CapeX / CapeNext: MSRA σ = 1
    train_shots = 1
    pad_to = None  # zero support order: the slot count does not change any output, so batches pad to their max K
    #: options that change the trained weights (part of the cached-model digest); the others are inference-only
    training_options: tuple[str, ...] = ("backbone_weights", "feature_size", "allow_random_encoders",
                                         "encoder_fallback", "text_scale")
    text_scales: dict[str, float | str] = TEXT_SCALES
    inference_options: tuple[str, ...] = ("support_mask",)

    def __init__(self, checkpoint: str = "", preset: str = "", backbone: str = "", batch_size: int = 0,
                 text_encoder: str = "", train: Mapping[str, Any] | None = None, **options: Any) -> None:
        unknown = set(options) - set(self.training_options) - set(self.inference_options)
        if unknown:
            raise ValueError(f"{self.info.name}: unknown option(s) {sorted(unknown)}; known: "
                             f"{sorted(self.training_options + self.inference_options)}")
        self.run_options = {k: options.pop(k) for k in list(options) if k in self.inference_options}
        super().__init__(checkpoint=checkpoint, preset=preset, backbone=backbone, batch_size=batch_size, train=train,
                         **options)
        self.text_encoder_name = text_encoder or self.text_encoders.get(self.preset.name, te.MINILM)
        self.support_mask_mode = self.run_options.get("support_mask", "shot0")
        if self.support_mask_mode not in SUPPORT_MASKS:
            raise ValueError(f"{self.info.name}: support_mask must be one of {SUPPORT_MASKS}, "
                             f"got {self.support_mask_mode!r}")
        self.text: te.TextEncoder | None = None
        self._text_prov: dict[str, Any] = {}
        self._encoder_cache_dir: Path | None = None
        self._seed = 1
        self._log = print

    @classmethod
    def random_init_options(cls, preset: str, backbone: str, batch_size: int) -> dict[str, Any]:
        """The image-method options plus random-init encoders where genuine weights are absent (profiling)."""
        return {**super().random_init_options(preset, backbone, batch_size), "allow_random_encoders": True}

    # ------------------------------------------------------------------ encoders
    def load_encoders(self, ctx: RunContext) -> None:
        """Build the frozen encoders once per cache folder (``ctx.cache_dir/text``)."""
        cache = Path(ctx.cache_dir) / "text"
        if self.text is not None and self._encoder_cache_dir == cache:
            return
        self.text, self._text_prov = load_text_encoder(
            self.info.name, self.text_encoder_name, cache, allow_random=bool(self.options.get("allow_random_encoders")),
            fallback=bool(self.options.get("encoder_fallback", True)), log=ctx.log)
        self._encoder_cache_dir = cache

    def encoder_identity(self) -> dict[str, Any]:
        """What the trained weights depend on beyond the options: the encoders that actually run."""
        return {"text": [self.text.name, self.text.weights.identity, self.text.pooling]}

    # ------------------------------------------------------------------ contract
    def prepare(self, ctx: RunContext) -> None:
        self._seed = ctx.seed
        self._log = ctx.log
        self.load_encoders(ctx)
        super().prepare(ctx)

    def training_identity(self) -> dict[str, Any]:
        # the cached-model digest changes with the encoder that actually ran (a MiniLM fallback and genuine gte
        # give different heads) and with the text-token scale it resolved to
        return {"_encoders": self.encoder_identity(), "_text_scale": self.text_scale()}

    def text_scale(self) -> float:
        """The factor on the unit-norm keypoint-text rows: the ``text_scale`` option, else the preset's
        (:data:`TEXT_SCALES`); ``"sqrt_dim"`` resolves to √D of the text encoder that runs (needs it loaded)."""
        value = self.options.get("text_scale", self.text_scales.get(self.preset.name, 1.0))
        if value == "sqrt_dim":
            if self.text is None:
                raise RuntimeError(f"{self.info.name}: text_scale 'sqrt_dim' needs the text encoder loaded")
            return float(np.sqrt(self.text.dim))
        try:
            scale = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.info.name}: option text_scale must be a positive number or 'sqrt_dim', "
                             f"got {value!r}") from None
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"{self.info.name}: option text_scale must be a positive number or 'sqrt_dim', "
                             f"got {value!r}")
        return scale

    def build_backbone(self) -> tuple[nn.Module, int]:
        """The image backbone and its channel count; records its provenance."""
        backbone, info = build_backbone(self.backbone_name, self.options.get("backbone_weights"),
                                        input_size=self.preset.input_size)
        self.backbone_info = info
        if not info.genuine:
            self._log(f"[bold yellow]WARNING {self.info.name}: backbone {self.backbone_name} has RANDOM initial "
                      f"weights (no genuine weights found offline or backbone_weights='random')[/bold yellow]")
        return backbone, info.out_channels

    def feature_size(self) -> int | None:
        if "feature_size" in self.options:
            return int(self.options["feature_size"]) or None
        return self.feature_sizes.get(self.preset.name)

    def head_config(self, in_channels: int) -> CapeXConfig:
        """Official CapeX head sizes with the running encoder's text width and the preset's crop size."""
        size = self.preset.input_size
        return self.sized_head(CapeXConfig(in_channels=in_channels, token_in_channels=self.text.dim, input_size=size,
                                           heatmap_size=size // 4))

    @property
    def keypoint_head(self) -> CapeXHead:
        return self.model.keypoint_head

    def support_state(self, crops, kpts_norm, visible, support: InstanceView) -> TextSupportState:
        """``mask_s`` and ``e_joint`` of one episode (support images are not used).

        Args:
            crops: float32[S, 3, H, W] (unused: CapeX reads no support pixels).
            kpts_norm: float32[S, K, 2] support keypoints, normalised crop coords.
            visible: float32[S, K].
            support: the support view (category, descriptions, skeleton).
        """
        shots = slice(0, 1) if self.support_mask_mode == "shot0" else slice(None)
        mask = self.keypoint_head.support_mask(kpts_norm[shots, None], visible[shots, None])  # [1, K]
        descriptions = [list(support.category.descriptions)]
        e_joint = self.model.joint_embeddings(descriptions, mask)
        return TextSupportState(category=support.category, mask=mask, e_joint=e_joint,
                                skeleton=np.asarray(support.category.skeleton, dtype=np.int64).reshape(-1, 2),
                                support_ann_ids=np.asarray(support.ann_ids))

    def support_state_key(self, state: TextSupportState) -> tuple:
        """Supports with equal keys give every query the same prediction: the support is the category's texts
        and the support keypoint mask, nothing of the support instance else (the harness then runs each
        distinct (query, key) pair once)."""
        return (state.category.id, state.mask.detach().cpu().numpy().tobytes())

    # ------------------------------------------------------------------ per-instance stages
    def instance_stages(self) -> dict[str, str]:
        """Only the query image is read (support pixels never are): one stage, ``"image"``, for the query role."""
        return {"query": "image"}

    def stage_features(self, stage: str, crops: torch.Tensor, view: InstanceView) -> dict[str, torch.Tensor]:
        return {"feat": self.model.features(crops)}

    def shared_stage(self, stage: str) -> tuple[str, nn.Module] | None:
        """The query features are the backbone's alone: shared with every method on the same frozen backbone."""
        return (FEATURES_AT.format(size=self.model.feature_size), self.model.backbone) if stage == "image" else None

    def support_state_cached(self, feats, kpts_norm, visible, support: InstanceView) -> TextSupportState:
        return self.support_state(None, kpts_norm, visible, support)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        info = getattr(self, "backbone_info", None)
        if info is not None:
            out["backbone_weights"] = info.weights
        if self.text is not None:
            out["text_encoder"] = {**self.text.provenance(), **self._text_prov}
        if self.text is not None:
            requested = self.options.get("text_scale", self.text_scales.get(self.preset.name, 1.0))
            out["text_scale"] = {"value": round(self.text_scale(), 4), "rule": str(requested)}
        out["support_mask"] = ("shot 0 target weight (official capex.py mask_s = target_weight_s[0])"
                               if self.support_mask_mode == "shot0" else "product over shots")
        out["preset"] = self.preset.name
        return out


class CapeX(TextMethod):
    """CapeX: keypoint-description text embeddings as support tokens of the GraphCape-lineage head."""

    info = MethodInfo(name="capex", needs_images=True, reads_text=True,
                      paper="Rusanovsky et al., CapeX: Category-Agnostic Pose Estimation from Textual Point "
                            "Explanation, ICLR 2025")
    presets = PRESETS

    def build_model(self) -> nn.Module:
        backbone, channels = self.build_backbone()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            head = CapeXHead(self.head_config(channels))
            head.init_weights()  # official PoseHead.init_weights (xavier, zeroed last kpt_branch layers)
        return CapeXModel(backbone, head, self.feature_size(), self.text.encode, self.text_scale())

    def predict_normalized(self, state: TextSupportState, crops: torch.Tensor, queries: InstanceView) -> torch.Tensor:
        """float32[Q, K, 2] normalised crop coords for query crops float32[Q, 3, H, W]."""
        q = crops.shape[0]
        feats = self.model.features(crops)
        return self.keypoint_head.predict_from_text(feats, state.e_joint.expand(q, -1, -1),
                                                    state.mask.expand(q, -1), skeleton=state.skeleton)

    def predict_normalized_cached(self, states: list[TextSupportState], feats: dict[str, torch.Tensor],
                                  queries: InstanceView, episode: torch.Tensor) -> torch.Tensor:
        """Queries of several episodes in one forward: each query with its episode's ``e_joint`` and mask."""
        e_joint = torch.cat([s.e_joint for s in states])[episode]
        mask = torch.cat([s.mask for s in states])[episode]
        return self.keypoint_head.predict_from_text(feats["feat"], e_joint, mask, skeleton=states[0].skeleton)
