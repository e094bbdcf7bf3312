"""The bridge between a PyTorch CAPE model and the harness contract (:mod:`cape_bench.api`).

:class:`TorchMethod` implements ``prepare`` (official checkpoint, cached trained weights, or
training with a preset), ``encode_support`` and ``predict`` (batched queries, crop → image
pixels) once; a method subclasses it with its model builder, its presets and how its model
turns support crops into a state.

It also implements the per-instance cache contract (:class:`cape_bench.api.InstanceCachedMethod`): a subclass
that declares its per-instance stages (:meth:`TorchMethod.instance_stages`, :meth:`TorchMethod.stage_features`)
and the pair-dependent rest (:meth:`TorchMethod.support_state_cached`,
:meth:`TorchMethod.predict_normalized_cached`) gets ``instance_features``, ``encode_support_cached`` and
``predict_cached`` (normalisation, keypoint frames, batching) from here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common.trainer import EpisodeStream, Preset, load_checkpoint, sized_head, to_inference_device, train
from cape_bench.api import InstanceView, MethodInfo, RunContext, role_stages
from cape_bench.data.geometry import crop_to_image, image_to_crop
from cape_bench.data.mp100 import AnnotationSet, load_annotation_set, load_descriptions, split_file
from cape_bench.images import normalize_crops

TRAINING_CODE_VERSION = "train-3"  # bump when training semantics change (invalidates cached models); 3: frozen
# backbones channels-last on CPU, POMNet per-keypoint BatchNorm as one native pass (equal up to float rounding)

#: training annotations by (file stamps, text variant, description drop), shared by every method of the process
_TRAINING_ANNOTATIONS: dict[tuple, AnnotationSet] = {}


def module_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a module's architecture (its repr) and of every weight and buffer, by name."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:16]


class TorchMethod:
    """Base class of the PyTorch methods.

    Subclasses set ``info``, ``presets`` and ``sigma``, and implement :meth:`build_model`,
    :meth:`support_state` and :meth:`predict_normalized`.

    Args:
        checkpoint: a trained checkpoint (ours: ``model.safetensors``; official: ``*.pth``).
        preset: training preset name when no checkpoint is given (default ``budget`` where defined, else the
            first of ``presets``).
        train: overrides of the preset's fields (``[methods.<name>.train]``, e.g. ``{iterations = 2000}``).
        backbone: backbone name (see ``baselines.common.backbones.available_backbones()``).
        batch_size: queries per forward pass, and instances per backbone pass (default 64).
        **options: method-specific options (``[methods.<name>.options]``).
    """

    info: MethodInfo
    presets: dict[str, Preset]
    sigma: float = 2.0
    train_shots: int = 1
    trainable = True  # ``cape-bench train`` can train it
    pad_to: int | None = None  # keypoint slots in training batches (the lineage heads use the official 100)

    def __init__(self, checkpoint: str = "", preset: str = "", backbone: str = "", batch_size: int = 0,
                 train: Mapping[str, Any] | None = None, **options: Any) -> None:
        # default: the budget preset where the method has one, else its first (a plug-in may define only its own)
        preset = preset or ("budget" if "budget" in self.presets else next(iter(self.presets)))
        if preset not in self.presets:
            raise ValueError(f"{self.info.name}: unknown preset {preset!r}; choose from {', '.join(self.presets)}")
        self.preset = self.presets[preset].with_overrides(train or {}, where=f"methods.{self.info.name}.train")
        self.preset_overrides = dict(train or {})
        self.checkpoint = checkpoint
        self.backbone_name = backbone or self.preset.backbone
        self.batch_size = batch_size or 64
        self.options = options
        self.model: torch.nn.Module | None = None
        self.device = "cpu"
        self.log = print
        self._provenance: dict[str, Any] = {}
        self._prepared_key: tuple | None = None
        self._model_version = 0
        self._stage_fingerprints: dict[tuple[str, int], str] = {}
        # the crop size depends on the preset: the harness reads it from ``info`` to cut crops
        self.info = MethodInfo(**{**self.info.__dict__, "input_size": self.preset.input_size})

    # ------------------------------------------------------------------ to implement
    def build_model(self) -> torch.nn.Module:
        """The trainable model: an ``nn.Module`` with ``training_losses(batch)``."""
        raise NotImplementedError

    def support_state(self, crops: torch.Tensor, kpts_norm: torch.Tensor, visible: torch.Tensor,
                      support: InstanceView) -> Any:
        """State from S support crops float32[S, 3, H, W], keypoints float32[S, K, 2] (normalised crop
        coords) and visibility float32[S, K]."""
        raise NotImplementedError

    def predict_normalized(self, state: Any, crops: torch.Tensor, queries: InstanceView) -> torch.Tensor:
        """float32[Q, K, 2] normalised crop coords for query crops float32[Q, 3, H, W]."""
        raise NotImplementedError

    #: prefixes of the preset's ``head`` keys that size another module than the keypoint head (CapeNext: fusion_)
    head_key_prefixes: tuple[str, ...] = ()

    def sized_head(self, config: Any, prefix: str = "") -> Any:
        """``config`` with the preset's ``head`` sizes applied (checked, named errors): the keys starting with
        ``prefix``, or, without one, the keys of no module in :attr:`head_key_prefixes`."""
        if prefix:
            sizes = {k: v for k, v in self.preset.head.items() if k.startswith(prefix)}
        else:
            sizes = {k: v for k, v in self.preset.head.items()
                     if not any(k.startswith(p) for p in self.head_key_prefixes)}
        return sized_head(config, sizes, f"methods.{self.info.name}.train", prefix)

    def training_identity(self) -> dict[str, Any]:
        """Extra facts that make a trained model different (e.g. the text encoder that really ran)."""
        return {}

    # ------------------------------------------------------------------ to implement for the instance cache
    def instance_stages(self) -> dict[str, str]:
        """Role (``"support"``, ``"query"``) → per-instance stage name; empty: the method runs uncached."""
        return {}

    def stage_features(self, stage: str, crops: torch.Tensor, view: InstanceView) -> dict[str, torch.Tensor]:
        """Per-instance tensors (first dim N) of ``stage`` for N normalised crops float32[N, 3, H, W]."""
        raise NotImplementedError

    def support_state_cached(self, feats: dict[str, torch.Tensor], kpts_norm: torch.Tensor, visible: torch.Tensor,
                             support: InstanceView) -> Any:
        """:meth:`support_state` from the support role's cached stage tensors (stacked over the S shots)."""
        raise NotImplementedError

    def predict_normalized_cached(self, states: list[Any], feats: dict[str, torch.Tensor], queries: InstanceView,
                                  episode: torch.Tensor) -> torch.Tensor:
        """float32[Q, K, 2] normalised crop coords; query ``q`` uses ``states[episode[q]]``, ``feats`` are the query
        role's cached stage tensors stacked over the Q queries."""
        raise NotImplementedError

    def load_official_checkpoint(self, path: Path) -> dict:
        """Load an officially released checkpoint; methods with a converter override this."""
        raise ValueError(f"{self.info.name}: {path} is not a cape-bench checkpoint (model.safetensors) and this "
                         "method has no converter for official checkpoints")

    # ------------------------------------------------------------------ random init (profiling)
    @classmethod
    def random_init_options(cls, preset: str, backbone: str, batch_size: int) -> dict[str, Any]:
        """Options that build ``preset``'s architecture with a random-init backbone (:class:`cape_bench.api.
        RandomInitMethod`); text methods add random-init encoders where genuine ones are absent."""
        opts: dict[str, Any] = {"preset": preset, "batch_size": batch_size, "backbone_weights": "random"}
        if backbone:
            opts["backbone"] = backbone
        return opts

    def load_encoders(self, ctx: RunContext) -> None:
        """Load frozen encoders the model is built around (text methods); nothing here."""

    def random_init(self, ctx: RunContext, workdir: str | Path, seed: int = 0) -> Path:
        """Write ``model.safetensors`` of :meth:`build_model` with seeded random weights under ``workdir`` and
        ``prepare`` from it: exactly the code an evaluation runs, without training."""
        from safetensors.torch import save_file  # noqa: PLC0415

        self.load_encoders(ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build_model()
        tag = f"{self.info.name}-{self.preset.name}-{self.backbone_name}-{seed}"
        path = Path(workdir) / "weights" / tag / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
        self.checkpoint = str(path)
        self._prepared_key = None
        self.prepare(ctx)
        return path

    # ------------------------------------------------------------------ contract
    def prepare(self, ctx: RunContext) -> None:
        # a checkpoint path with "{shots}" names one model per shot count; a trained model serves both
        key = (ctx.split, ctx.dataset, ctx.ann_dir, ctx.shots if "{shots}" in self.checkpoint else None)
        if self._prepared_key == key:
            return
        self.device = ctx.device
        self.log = ctx.log
        torch.manual_seed(ctx.seed)  # the initial weights (and so a trained model) follow the run seed
        self.model = self.build_model()
        if self.checkpoint:
            path = Path(self.checkpoint.format(split=ctx.split, shots=ctx.shots))
            if not path.is_file():
                raise FileNotFoundError(f"{self.info.name}: checkpoint not found: {path}")
            if path.suffix == ".safetensors":
                meta = load_checkpoint(self.model, path)
                self._provenance = {"checkpoint": str(path), "trained": meta.get("preset", {}).get("name", "?")}
            else:
                self._provenance = {"checkpoint": str(path), **self.load_official_checkpoint(path)}
        else:
            self._provenance = self._train_or_reuse(ctx)
        to_inference_device(self.model, self.device).eval()
        self._prepared_key = key
        self._model_version += 1  # cached per-instance features of an earlier model are stale now

    def pending_training(self, ctx: RunContext) -> tuple[int, str]:
        """(iterations ``prepare(ctx)`` will train — 0 with a checkpoint or a model trained earlier —, the model's
        cache folder): the harness's job plan and ETA (:class:`cape_bench.api.TrainedMethod`)."""
        if self.checkpoint:
            return 0, self.checkpoint
        self.load_encoders(ctx)  # a text model's identity names the encoder that runs
        _, _, out_dir = self._training_job(ctx)
        return (0 if (out_dir / "model.safetensors").exists() else self.preset.iterations), str(out_dir)

    def _training_job(self, ctx: RunContext) -> tuple[AnnotationSet, dict, Path]:
        """The training annotations, the trained model's identity and its cache folder (keyed on the identity)."""
        train_file = split_file(ctx.ann_dir, ctx.split, "train")
        if not ctx.image_root:
            raise FileNotFoundError(f"{self.info.name}: training needs images; no image root is configured")
        ann = self._training_annotations(train_file, ctx)
        ident = {
            "method": self.info.name, "preset": asdict(self.preset), "backbone": self.backbone_name,
            "train_file_sha256": ann.sha256, "train_shots": self.train_shots, "seed": ctx.seed,
            "options": self.options, "code": TRAINING_CODE_VERSION, **self.training_identity(),
        }
        if self.info.reads_text:  # the texts a text model trains on are part of what it is
            ident["descriptions"] = hashlib.sha256(json.dumps(
                [ann.categories[c].descriptions for c in ann.categories]).encode()).hexdigest()
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        folder = f"split{ctx.split}-{self.preset.name}-{digest}"
        return ann, ident, Path(ctx.cache_dir) / "models" / self.info.name / folder

    def _training_annotations(self, train_file: Path, ctx: RunContext) -> AnnotationSet:
        """The split's training annotations, read once per process for the job plan and every method's training
        (again only when the file, or the descriptions the texts come from, changed on disk)."""
        sources = [train_file, *([Path(ctx.descriptions)] if ctx.descriptions else [])]
        key = (tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sources), ctx.text_variant,
               repr(ctx.description_drop))
        if key not in _TRAINING_ANNOTATIONS:
            texts = (load_descriptions(ctx.descriptions, ctx.text_variant, ctx.description_drop)
                     if ctx.descriptions else None)
            if len(_TRAINING_ANNOTATIONS) >= 5:  # MP-100's five splits; a changed file drops the oldest
                del _TRAINING_ANNOTATIONS[next(iter(_TRAINING_ANNOTATIONS))]
            _TRAINING_ANNOTATIONS[key] = load_annotation_set(train_file, descriptions=texts)
        return _TRAINING_ANNOTATIONS[key]

    def _train_or_reuse(self, ctx: RunContext) -> dict:
        ann, ident, out_dir = self._training_job(ctx)
        train_file = ann.path
        reused = (out_dir / "model.safetensors").exists()
        changed = "".join(f", {k}={v}" for k, v in self.preset_overrides.items())
        if not reused:
            ctx.log(f"{self.info.name}: training split {ctx.split} with preset '{self.preset.name}'{changed} "
                    f"({self.preset.iterations} iterations, batch {self.preset.batch_size}) → {out_dir}")
        stream = EpisodeStream(ann, ctx.image_root, self.train_shots, self.preset, self.sigma, ctx.seed,
                               pad_to=self.pad_to)
        from cape_bench.environment import git_state  # noqa: PLC0415

        # train() loads the weights into self.model whether it trains them or finds them trained
        result = train(self.model, stream, self.preset, out_dir, device=ctx.device, log=ctx.log,
                       meta={**ident, "split": ctx.split, "train_file": str(train_file), "git": git_state()})
        if reused:
            ctx.log(f"{self.info.name}: reusing the model trained earlier: {out_dir}")
        return {
            "checkpoint": str(result.checkpoint),
            "trained": f"here with preset '{self.preset.name}' ({self.preset.iterations} iterations{changed})",
            "train_seconds": result.meta.get("train_seconds_this_session"),
            "final_loss": result.meta.get("final_loss"),
        }

    @torch.inference_mode()
    def encode_support(self, support: InstanceView) -> Any:
        size = self.preset.input_size
        crops = torch.from_numpy(normalize_crops(support.crops)).to(self.device)
        kpts = image_to_crop(support.keypoints_px, support.center_px, support.scale, (size, size)) / size
        vis = support.visible.astype(np.float32)
        return self.support_state(crops, torch.from_numpy(kpts.astype(np.float32)).to(self.device),
                                  torch.from_numpy(vis).to(self.device), support)

    @torch.inference_mode()
    def predict(self, state: Any, queries: InstanceView) -> np.ndarray:
        size = self.preset.input_size
        out = []
        for start in range(0, len(queries), self.batch_size):
            part = queries.take(slice(start, start + self.batch_size))
            crops = torch.from_numpy(normalize_crops(part.crops)).to(self.device)
            out.append(self.predict_normalized(state, crops, part).float().cpu().numpy())
        norm = np.concatenate(out)
        return crop_to_image(norm * size, queries.center_px, queries.scale, (size, size)).astype(np.float32)

    # ------------------------------------------------------------------ instance-cache contract
    def instance_cache_identity(self) -> str:
        """Changes with every model ``prepare`` builds or loads (features of another model are never reused)."""
        return f"{self.info.name}-{id(self):x}-model{self._model_version}"

    @torch.inference_mode()
    def instance_features(self, view: InstanceView, stage: str) -> dict[str, torch.Tensor]:
        if not any(stage in names for names in role_stages(self.instance_stages()).values()):
            raise ValueError(f"{self.info.name}: unknown per-instance stage {stage!r}")
        crops = torch.from_numpy(normalize_crops(view.crops)).to(self.device)
        return self.stage_features(stage, crops, view)

    def shared_stage(self, stage: str) -> tuple[str, torch.nn.Module] | None:
        """``(recipe, module)`` when ``stage``'s arrays are ``module`` applied to the normalised crop and nothing of
        this model else, ``recipe`` naming the rest (array names, resizing); None: the stage is this model's own."""
        return None

    def stage_fingerprint(self, stage: str) -> str | None:
        """The instance cache's fingerprint of a :meth:`shared_stage` (:class:`cape_bench.api.InstanceCachedMethod`):
        the recipe, the crop size, the device and a digest of the module's architecture, weights and buffers,
        computed once per model. Methods sitting on the same frozen backbone get equal fingerprints."""
        shared = self.shared_stage(stage)
        if shared is None:
            return None
        key = (stage, self._model_version)
        if key not in self._stage_fingerprints:
            recipe, module = shared
            self._stage_fingerprints[key] = (f"{recipe} | {self.preset.input_size} px crop on {self.device} | "
                                             f"{module_digest(module)}")
        return self._stage_fingerprints[key]

    def _tensors(self, feats: dict[str, np.ndarray], rows: slice | None = None) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v if rows is None else v[rows])).to(self.device)
                for k, v in feats.items()}

    @torch.inference_mode()
    def encode_support_cached(self, support: InstanceView, feats: dict[str, np.ndarray]) -> Any:
        size = self.preset.input_size
        kpts = image_to_crop(support.keypoints_px, support.center_px, support.scale, (size, size)) / size
        vis = support.visible.astype(np.float32)
        return self.support_state_cached(self._tensors(feats),
                                         torch.from_numpy(kpts.astype(np.float32)).to(self.device),
                                         torch.from_numpy(vis).to(self.device), support)

    @torch.inference_mode()
    def predict_cached(self, states: list[Any], queries: InstanceView, feats: dict[str, np.ndarray],
                       episode: np.ndarray) -> np.ndarray:
        size = self.preset.input_size
        episode = np.asarray(episode, dtype=np.int64)
        if episode.shape != (len(queries),) or (len(episode) and not 0 <= episode.min() <= episode.max() < len(states)):
            raise ValueError(f"{self.info.name}: episode must index states for each of the {len(queries)} queries")
        out = []
        for start in range(0, len(queries), self.batch_size):
            rows = slice(start, start + self.batch_size)
            part = queries.take(rows)
            pred = self.predict_normalized_cached(states, self._tensors(feats, rows), part,
                                                  torch.from_numpy(episode[rows]).to(self.device))
            out.append(pred.float().cpu().numpy())
        norm = np.concatenate(out) if out else np.zeros((0, queries.category.num_keypoints, 2), np.float32)
        return crop_to_image(norm * size, queries.center_px, queries.scale, (size, size)).astype(np.float32)

    def provenance(self) -> dict[str, Any]:
        return {"backbone": self.backbone_name, **self._provenance}
