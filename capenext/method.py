"""``capenext``: CapeNext (Zhu et al., AAAI 2026) as a cape-bench method.

CapeX (``baselines.capex.method``) + the HCMI/DSFR fusion module (``capenext.fuse``), composed by
:class:`capenext.model.CapeNextHead`. Mirrors ``yzrs/CapeNext@1320e4a`` ``models/models/detectors/capex.py``
(``predict``, ``enhance_joint_text_embedding``; spec ../shared/spec/official_code.md §10.1):

* ``e_joint``: as CapeX (shot-0 mask, frozen text encoder, unit rows);
* ``e_img``: the frozen image tower on the bilinear 224 resize of the *ImageNet-normalised* query crop, L2;
* ``e_cls``: the frozen text tower on ``"a photo of <category name>"`` (``_`` → space), L2 — the ground-truth
  category name is an extra input no support-image method gets (``MethodInfo.extra_inputs``);
* ``e'_joint = additional_module.process(e_img, e_joint, e_cls)`` → CapeX head.

Encoders: officially CLIP ViT-B/32, text and image towers (``clip-vit-b32``, 512-d). Offline configuration when
CLIP weights are absent: genuine MiniLM text (384-d) + the genuine ImageNet MobileNetV2 pooled embedding projected to
the text width by a fixed Gaussian matrix (``mobilenetv2-imagenet pooled``) — named as such in the log and the
provenance, never passed off as CLIP.

Options (``[methods.<label>.options]``):

* ``use_category_text`` (default True) / ``use_query_image`` (default True): the official ablation classes
  ``SimpleMultiModalWithoutCategoryTextEmbedding`` / ``SimpleMultiModalWithoutQueryImgEmbedding``; each variant is
  a different architecture and trains its own model;
* ``wrong_class_name`` (default False): the probe of the official ``use_wrong_catName``
  (``modify_index_list``): each query's category name is replaced by another entry of the category-name list,
  drawn uniformly among the list indices other than the first index of the true name (so a duplicated name such
  as MP-100's two ``face`` categories can come back unchanged, as officially). The list is every category of the
  split's annotation files (``wrong_class_pool="all"``: train + val + test = the 100 MP-100 categories, as the
  official hard-coded list), or of one of them (``"train"``, ``"val"``, ``"test"``). The draw is a pure function
  of (run seed, query annotation id, first support annotation id): deterministic, batch- and order-independent.
  Test-time only: the probe reuses the model trained without it;
* ``image_encoder``: ``clip-vit-b32`` or ``mobilenetv2-imagenet`` (default: CLIP when the text encoder is genuine
  CLIP, else MobileNetV2);
* ``support_mask``, ``backbone_weights``, ``feature_size``, ``allow_random_encoders``, ``encoder_fallback``:
  as CapeX.

Deliberate deviations: the released module's per-forward diagnostics are not reproduced (see ``capenext.fuse``);
the query-image embedding of a test instance is computed once per prepared split and reused (test crops are
deterministic), not once per episode. With the harness's instance cache the query role's stage ``"image"`` holds
both the backbone features and ``e_img`` of each distinct instance; class text, fusion and head run per pair,
several episodes of one category per forward.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.capex.method import TextMethod, TextPoseModel, TextSupportState
from baselines.common import text_encoders as te
from baselines.common.budget import LINEAGE_BUDGET, LINEAGE_HEAD
from baselines.common.trainer import Preset, to_inference_device
from cape_bench.api import InstanceView, MethodInfo, RunContext
from cape_bench.data.mp100 import split_file
from capenext.fuse import FuseConfig
from capenext.model import CapeNextHead, category_prompt, category_text_embeddings

PRESETS = {
    # configs/clip/clip_split{1..5}_config.py + README (literature §1.7): Adam 1e-5, no grad clip, linear warm-up
    # 1000 iterations (ratio 1e-3), ×0.1 at epochs 160 and 180 of 200, batch 16, SwinV2-T at 256², CLIP ViT-B/32
    "official": Preset("official", iterations=0, epochs=200, milestones=(160, 180), batch_size=16, lr=1e-5,
                       warmup_iters=1000, input_size=256, backbone="swinv2_tiny", checkpoint_every=500),
    # CapeX's quick preset (genuine MobileNetV2 cut at stride 16, 8×8 tokens at 128², fine-tuned; frozen MiniLM
    # text + frozen MobileNetV2 pooled image token; Adam 1e-4, e_joint × √D on entry to the fusion module)
    "quick": Preset("quick", iterations=1600, batch_size=8, lr=1e-4, warmup_iters=50, milestones=(1280,),
                    input_size=128, backbone="mobilenetv2_s16"),
    # the default job's preset (baselines.common.budget) with the fusion module's FFN at 1·D (official 4·D) and
    # no dropout, and the image tower on the 128² crop itself (IMAGE_TOKEN_INPUTS)
    "budget": replace(LINEAGE_BUDGET, head={**LINEAGE_HEAD, "fusion_ffn_ratio": 1, "fusion_dropout": 0.0}),
}

TEXT_ENCODERS = {"official": te.CLIP, "quick": te.MINILM, "budget": te.MINILM}

#: preset → side of the query crop fed to the image tower (option ``image_token_input``; 0 = the crop as it is).
#: Officially the 224 resize CLIP needs; the budget preset feeds MobileNetV2 the 128² crop itself (a third of the
#: image tower's cost, which at 224² was two thirds of a training step's forward)
IMAGE_TOKEN_INPUTS: dict[str, int] = {"official": te.CLIP_INPUT, "quick": te.CLIP_INPUT, "budget": 0}
WRONG_CLASS_POOLS = ("all", "train", "val", "test")
_IMAGE_CACHE_SIZE = 50_000


class CapeNextModel(TextPoseModel):
    """Backbone + :class:`CapeNextHead` (keys ``backbone.*``, ``head.additional_module.*``, ``head.keypoint_head.*``).

    Args:
        backbone: image → float32[B, C, h, w].
        head: fusion module + CapeX head.
        feature_size: see :class:`TextPoseModel`.
        encode_text: cached frozen text tower.
        embed_image: float32[B, 3, S, S] ImageNet-normalised crops → float32[B, D] unit rows (frozen), or None
            without the image branch.
        text_scale: factor on the unit-norm ``e_joint`` rows on entry to the fusion module (see
            ``baselines.capex.method.TEXT_SCALES``).
    """

    def __init__(self, backbone: nn.Module, head: CapeNextHead, feature_size: int | None, encode_text,
                 embed_image, text_scale: float = 1.0) -> None:
        super().__init__(backbone, feature_size, encode_text, text_scale)
        self.head = head
        self.embed_image = embed_image

    @property
    def fuse_cfg(self) -> FuseConfig:
        return self.head.additional_module.cfg

    def class_embeddings(self, names: list[str]) -> torch.Tensor | None:
        """``e_cls`` float32[B, D] of ``"a photo of <name>"`` (None without the class-text branch)."""
        if not self.fuse_cfg.use_category_text:
            return None
        with torch.no_grad():
            return category_text_embeddings(names, self.encode_text)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor | None:
        """``e_img`` float32[B, D] of ImageNet-normalised query crops (None without the image branch)."""
        if not self.fuse_cfg.use_query_image:
            return None
        with torch.no_grad():
            return self.embed_image(images)

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Official ``forward_train`` with the module: losses of ``get_loss``, weight ``target_weight_q * mask_s``."""
        mask_s = batch["mask_s"]
        img_q = batch["img_q"]
        feat_q = self.features(img_q)
        e_joint = self.joint_embeddings(batch["descriptions"], mask_s)
        e_img = self.image_embeddings(img_q)
        e_cls = self.class_embeddings(list(batch["category_names"]))
        e_cls = None if e_cls is None else e_cls.to(img_q.device)
        outputs, _ = self.head(feat_q, e_joint, e_img, e_cls, mask_s, batch["skeletons"])
        weight = (batch["weight_q"] * mask_s)[..., None]
        return self.head.keypoint_head.get_loss(outputs, batch["kpts_q"], batch["target_q"], weight)


class _DeviceImageEmbedder:
    """Runs a frozen :class:`~baselines.common.text_encoders.ImageEmbedder` on its own device.

    Args:
        embedder: the embedder (CLIP image tower or MobileNetV2 pooled).
        device: where its modules live.
    """

    def __init__(self, embedder: te.ImageEmbedder, device: str, size: int = te.CLIP_INPUT) -> None:
        self.embedder = embedder
        self.device = device
        self.size = size
        for attr in ("model", "features"):  # ClipImageEmbedder.model / MobileNetImageEmbedder.features
            module = getattr(embedder, attr, None)
            if isinstance(module, nn.Module):
                to_inference_device(module, device)
        if isinstance(getattr(embedder, "proj", None), torch.Tensor):
            embedder.proj = embedder.proj.to(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """float32[B, 3, H, W] → float32[B, D] on the images' device."""
        return self.embedder.embed(images.to(self.device), self.size).float().to(images.device)


def category_name_pool(ann_dir: str | Path, split: int, pool: str) -> list[tuple[int, str]]:
    """(category id, name) of the category list the wrong-class probe draws from, ordered by id.

    Args:
        ann_dir: folder with ``mp100_split{k}_{train,val,test}.json``.
        split: split number.
        pool: ``"all"`` (every file of the split that exists) or one subset.

    Raises:
        FileNotFoundError: none of the files exists.
    """
    subsets = ("train", "val", "test") if pool == "all" else (pool,)
    found: dict[int, str] = {}
    files = [split_file(ann_dir, split, s) for s in subsets]
    present = [f for f in files if f.is_file()]
    if not present:
        raise FileNotFoundError(f"capenext wrong_class_name: none of {[str(f) for f in files]} exists")
    for path in present:
        for cat in json.loads(path.read_text()).get("categories", []):
            found.setdefault(int(cat["id"]), str(cat.get("name", cat["id"])))
    return sorted(found.items())


def wrong_class_name(true_name: str, pool_names: list[str], seed: int, query_ann_id: int,
                     support_ann_id: int) -> str:
    """Official ``modify_index_list`` for one query, with a keyed generator instead of the global ``random``.

    ``index = pool_names.index(true_name)`` (first occurrence); the new index is uniform over the other indices.

    Args:
        true_name: the query's category name.
        pool_names: the category-name list (duplicates allowed).
        seed: run seed.
        query_ann_id: query annotation id.
        support_ann_id: first support annotation id of the episode.

    Returns:
        the replacement name.
    """
    if true_name not in pool_names:
        raise ValueError(f"wrong_class_name: category {true_name!r} is not in the category-name list")
    n = len(pool_names)
    if n < 2:
        raise ValueError("wrong_class_name needs at least two categories to draw from")
    index = pool_names.index(true_name)
    rng = np.random.default_rng([seed, int(query_ann_id) & 0xFFFFFFFF, int(support_ann_id) & 0xFFFFFFFF])
    new = int(rng.integers(0, n - 1))
    return pool_names[new + (new >= index)]


class CapeNext(TextMethod):
    """CapeNext: CapeX whose keypoint-text tokens are refined by the class text and the query image (HCMI + DSFR).

    Args: see :class:`~baselines.capex.method.TextMethod` and the module docstring for the options.
    """

    info = MethodInfo(name="capenext", needs_images=True, reads_text=True,
                      extra_inputs=("ground-truth category name",),
                      paper="Zhu et al., CapeNext: Rethinking and Refining Dynamic Support Information for "
                            "Category-Agnostic Pose Estimation, AAAI 2026")
    presets = PRESETS
    text_encoders = TEXT_ENCODERS
    training_options = TextMethod.training_options + ("use_category_text", "use_query_image", "image_encoder",
                                                      "image_token_input")
    inference_options = TextMethod.inference_options + ("wrong_class_name", "wrong_class_pool")
    head_key_prefixes = ("fusion_",)  # the preset's head sizes of the fusion module (FuseConfig fields)

    def __init__(self, checkpoint: str = "", preset: str = "", backbone: str = "", batch_size: int = 0,
                 text_encoder: str = "", train: Mapping[str, Any] | None = None, **options: Any) -> None:
        super().__init__(checkpoint=checkpoint, preset=preset, backbone=backbone, batch_size=batch_size,
                         text_encoder=text_encoder, train=train, **options)
        self.use_category_text = bool(self.options.get("use_category_text", True))
        self.use_query_image = bool(self.options.get("use_query_image", True))
        FuseConfig(use_category_text=self.use_category_text, use_query_image=self.use_query_image)  # validates
        self.wrong_class = bool(self.run_options.get("wrong_class_name", False))
        self.wrong_class_pool = self.run_options.get("wrong_class_pool", "all")
        if self.wrong_class_pool not in WRONG_CLASS_POOLS:
            raise ValueError(f"capenext: wrong_class_pool must be one of {WRONG_CLASS_POOLS}")
        if self.wrong_class and not self.use_category_text:
            raise ValueError("capenext: wrong_class_name needs use_category_text = true")
        if not self.use_category_text:
            extra: tuple[str, ...] = ()
        elif self.wrong_class:
            extra = ("category names of the split (wrong_class_name probe: a random other category's name "
                     "replaces the ground truth)",)
        else:
            extra = ("ground-truth category name",)
        self.info = MethodInfo(**{**self.info.__dict__, "extra_inputs": extra})
        self.image: te.ImageEmbedder | None = None
        self._image_call: _DeviceImageEmbedder | None = None
        self._image_prov: dict[str, Any] = {}
        self._image_cache: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()
        self._pool: list[str] = []
        self._run_seed = 1
        self.last_class_prompts: list[str] = []

    # ------------------------------------------------------------------ encoders
    def load_encoders(self, ctx: RunContext) -> None:
        super().load_encoders(ctx)
        if not self.use_query_image:
            self.image, self._image_call = None, None
            return
        requested = self.options.get("image_encoder") or (
            te.CLIP if self.text.name == te.CLIP and self.text.weights.genuine else te.MOBILENET)
        if self.image is None:
            allow_random = bool(self.options.get("allow_random_encoders"))
            if requested in (te.CLIP, "clip") and self.text.name == te.CLIP and ctx.device == "cpu":
                self.image = self.text.image_embedder()  # the same CLIP model's image tower, no second copy
            else:
                self.image = te.get_image_embedder(requested, dim=self.text.dim, allow_random=allow_random,
                                                   cache_dir=Path(ctx.cache_dir) / "text")
            if self.image.dim != self.text.dim:
                raise ValueError(f"capenext: image token is {self.image.dim}-d, text {self.text.dim}-d")
            official = self.image.name == te.CLIP
            self._image_prov = {"requested": requested, "official": official}
            if not official:
                ctx.log(f"[bold yellow]WARNING capenext: query-image token = {self.image.name} "
                        f"({self.image.extra.get('projection', 'no projection')}), NOT the official CLIP ViT-B/32 "
                        f"image tower[/bold yellow]")
            if not self.image.weights.genuine:
                ctx.log("[bold red]WARNING capenext: the image embedder has RANDOM weights (tests/profiling "
                        "only)[/bold red]")
        self._image_call = _DeviceImageEmbedder(self.image, ctx.device, self.image_token_input())

    def image_token_input(self) -> int:
        """Side the query crop is resized to before the image tower (option ``image_token_input``, else the
        preset's :data:`IMAGE_TOKEN_INPUTS`; 0 = the crop's own side)."""
        value = self.options.get("image_token_input", IMAGE_TOKEN_INPUTS.get(self.preset.name, te.CLIP_INPUT))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"capenext: option image_token_input must be a side in pixels (0 = the crop's own), "
                             f"got {value!r}")
        return value or self.preset.input_size

    def encoder_identity(self) -> dict[str, Any]:
        out = super().encoder_identity()
        if self.image is not None:
            out["image"] = [self.image.name, self.image.weights.identity, self.image.extra]
            if self.image_token_input() != te.CLIP_INPUT:  # (the key is absent at 224: digests stay as they were)
                out["image_input_side"] = self.image_token_input()
        return out

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        backbone, channels = self.build_backbone()
        fuse_cfg = self.fuse_config()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            head = CapeNextHead(fuse_cfg, self.head_config(channels))
            head.keypoint_head.init_weights()  # official PoseHead.init_weights; the module keeps torch defaults
        return CapeNextModel(backbone, head, self.feature_size(), self.text.encode, self._image_call,
                             self.text_scale())

    def fuse_config(self) -> FuseConfig:
        """Official module sizes (8 heads, FFN 4·D, dropout 0.1) at the running text encoder's width D, with the
        preset's ``head`` keys ``fusion_<field>`` applied (e.g. ``fusion_ffn_ratio``)."""
        return self.sized_head(FuseConfig(embed_dim=self.text.dim, use_category_text=self.use_category_text,
                                          use_query_image=self.use_query_image), prefix="fusion_")

    @property
    def keypoint_head(self):
        return self.model.head.keypoint_head

    def prepare(self, ctx: RunContext) -> None:
        key = (ctx.split, ctx.dataset, ctx.ann_dir)
        if self._prepared_key != key:
            self._image_cache.clear()
            if self.wrong_class:
                pool = category_name_pool(ctx.ann_dir, ctx.split, self.wrong_class_pool)
                self._pool = [name for _, name in pool]
                ctx.log(f"capenext: wrong_class_name probe: class prompts use a random other name out of "
                        f"{len(self._pool)} categories ({self.wrong_class_pool} files of split {ctx.split})")
        self._run_seed = ctx.seed
        super().prepare(ctx)
        if self.model is not None:
            self.model.embed_image = self._image_call

    # ------------------------------------------------------------------ inference
    def class_names(self, state: TextSupportState, queries: InstanceView) -> list[str]:
        """The category name each query's class prompt is built from (the probe swaps it)."""
        return self._class_names_for(state, queries.ann_ids)

    def _class_names_for(self, state: TextSupportState, query_ann_ids) -> list[str]:
        name = state.category.name
        if not self.wrong_class:
            return [name] * len(query_ann_ids)
        first_support = int(state.support_ann_ids[0])
        return [wrong_class_name(name, self._pool, self._run_seed, int(a), first_support) for a in query_ann_ids]

    def query_image_tokens(self, crops: torch.Tensor, queries: InstanceView) -> torch.Tensor | None:
        """``e_img`` float32[Q, D], computed once per test instance of the prepared split."""
        if not self.use_query_image:
            return None
        keys = [(int(a), f) for a, f in zip(queries.ann_ids, queries.image_files, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self._image_cache]
        if todo:
            fresh = self.model.image_embeddings(crops[todo])
            for j, i in enumerate(todo):
                self._image_cache[keys[i]] = fresh[j]
                if len(self._image_cache) > _IMAGE_CACHE_SIZE:
                    self._image_cache.popitem(last=False)
        return torch.stack([self._image_cache[k] for k in keys]).to(crops.device)

    def query_tokens(self, state: TextSupportState, crops: torch.Tensor,
                     queries: InstanceView) -> dict[str, torch.Tensor | None]:
        """The fusion module's inputs for Q queries.

        Returns:
            ``e_joint`` float32[Q, K, D]; ``e_img`` float32[Q, D] or None; ``e_cls`` float32[Q, D] or None.
        """
        q = crops.shape[0]
        e_cls = None
        if self.use_category_text:
            names = self.class_names(state, queries)
            self.last_class_prompts = [category_prompt(n) for n in names]
            e_cls = self.model.class_embeddings(names).to(crops.device)
        return {"e_joint": state.e_joint.expand(q, -1, -1), "e_img": self.query_image_tokens(crops, queries),
                "e_cls": e_cls}

    def predict_normalized(self, state: TextSupportState, crops: torch.Tensor, queries: InstanceView) -> torch.Tensor:
        """float32[Q, K, 2] normalised crop coords for query crops float32[Q, 3, H, W]."""
        q = crops.shape[0]
        tokens = self.query_tokens(state, crops, queries)
        feats = self.model.features(crops)
        refined = self.model.head.additional_module(tokens["e_img"], tokens["e_joint"], tokens["e_cls"])
        return self.keypoint_head.predict(feats, refined, state.mask.expand(q, -1), skeleton=state.skeleton)

    # ------------------------------------------------------------------ per-instance stages
    def instance_stages(self) -> dict[str, str | tuple[str, ...]]:
        """The query's backbone features (stage ``image``, CapeX's: shared with the methods on the same frozen
        backbone) and, with the image branch, its ``e_img`` (stage ``image_token``, the frozen image tower)."""
        return {"query": ("image", "image_token") if self.use_query_image else "image"}

    def stage_features(self, stage: str, crops: torch.Tensor, view: InstanceView) -> dict[str, torch.Tensor]:
        if stage == "image_token":
            return {"e_img": self.model.image_embeddings(crops)}
        return {"feat": self.model.features(crops)}

    def predict_normalized_cached(self, states: list[TextSupportState], feats: dict[str, torch.Tensor],
                                  queries: InstanceView, episode: torch.Tensor) -> torch.Tensor:
        """Queries of several episodes in one forward; each query with its episode's ``e_joint``, mask and class
        name (the wrong-class probe draws per (query, first support), as in :meth:`class_names`)."""
        owner = episode.cpu().numpy()
        e_joint = torch.cat([s.e_joint for s in states])[episode]
        mask = torch.cat([s.mask for s in states])[episode]
        e_cls = None
        if self.use_category_text:
            names = [""] * len(queries)
            for e in np.unique(owner):
                rows = np.flatnonzero(owner == e)
                for r, n in zip(rows, self._class_names_for(states[e], queries.ann_ids[rows]), strict=True):
                    names[r] = n
            self.last_class_prompts = [category_prompt(n) for n in names]
            e_cls = self.model.class_embeddings(names).to(e_joint.device)
        refined = self.model.head.additional_module(feats.get("e_img"), e_joint, e_cls)
        return self.keypoint_head.predict(feats["feat"], refined, mask, skeleton=states[0].skeleton)

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["fusion_module"] = {
            "official_class": FuseConfig(use_category_text=self.use_category_text,
                                         use_query_image=self.use_query_image).official_class_name,
            "use_category_text": self.use_category_text, "use_query_image": self.use_query_image,
            "embed_dim": self.text.dim if self.text is not None else None,
        }
        if self.text is not None:
            fuse = self.fuse_config()
            out["fusion_module"].update(num_heads=fuse.num_heads, ffn_ratio=fuse.ffn_ratio, dropout=fuse.dropout)
        out["image_encoder"] = ({**self.image.provenance(), **self._image_prov,
                                 "input_side": self.image_token_input()} if self.image is not None else None)
        out["class_text"] = (None if not self.use_category_text else
                             f"wrong class name (probe; pool '{self.wrong_class_pool}', {len(self._pool)} names)"
                             if self.wrong_class else "ground-truth category name")
        return out
