"""The method contract: what the harness hands a CAPE method and what it expects back.

The harness owns the loop (episodes, batching, caching, timing, storage); a method only
turns a support set into a reusable state and predicts query keypoints from it.

Frames and units used throughout cape-bench:

* ``*_px``      original image pixels (the frame of the COCO annotation file);
* ``*_crop``    pixels of the square crop the official pipeline warps each instance to
                (``input_size`` × ``input_size``, 1.25-padded clean bbox, no rotation);
* ``dist_norm`` a distance divided by the query's clean-bbox max side (the PCK normaliser).

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Category:
    """One category of an MP-100-format annotation file.

    Attributes:
        id: COCO category id.
        name: category name, e.g. ``"klipspringer_face"``.
        supercategory: e.g. ``"animal_face"``.
        keypoint_names: the file's ``keypoints`` entries (K strings).
        descriptions: the keypoint texts a text-based method reads (K strings): from a
            descriptions file when one is given, else ``keypoint_names`` with ``_`` → space.
        skeleton: int[E, 2], 0-based keypoint indices.
    """

    id: int
    name: str
    supercategory: str
    keypoint_names: tuple[str, ...]
    descriptions: tuple[str, ...]
    skeleton: np.ndarray = field(repr=False)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


@dataclass(frozen=True)
class InstanceView:
    """A batch of N instances of one category, as the harness presents them to a method.

    Attributes:
        category: the category all instances belong to.
        ann_ids: int64[N], COCO annotation ids.
        image_files: N file names relative to the image root.
        bbox_px: float64[N, 4] clean bbox ``[x, y, w, h]`` (official sanitised box).
        center_px: float64[N, 2] official crop centre.
        scale: float64[N, 2] official crop scale (side / 200, 1.25-padded, square).
        crops: uint8[N, S, S, 3] RGB crops warped with the official affine, or ``None`` when
            the method does not need pixels (``MethodInfo.needs_images`` is False).
        keypoints_px: float32[N, K, 2] ground truth, given for supports always and for
            queries only to methods with ``MethodInfo.reads_query_ground_truth``.
        visible: bool[N, K] visibility (COCO v > 0), same availability as ``keypoints_px``.
    """

    category: Category
    ann_ids: np.ndarray
    image_files: tuple[str, ...]
    bbox_px: np.ndarray
    center_px: np.ndarray
    scale: np.ndarray
    crops: np.ndarray | None = None
    keypoints_px: np.ndarray | None = None
    visible: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ann_ids)

    def take(self, rows: slice) -> InstanceView:
        """The instances ``rows`` (a slice) as a view of their own (same category)."""

        def cut(a):
            return None if a is None else a[rows]

        return InstanceView(
            category=self.category, ann_ids=self.ann_ids[rows], image_files=self.image_files[rows],
            bbox_px=self.bbox_px[rows], center_px=self.center_px[rows], scale=self.scale[rows],
            crops=cut(self.crops), keypoints_px=cut(self.keypoints_px), visible=cut(self.visible),
        )


@dataclass(frozen=True)
class MethodInfo:
    """Static facts about a method that the harness and the report need.

    Attributes:
        name: registry name (lower-case CLI alias).
        needs_images: the harness must load and crop pixels for it.
        input_size: side of the square crop in pixels (ignored without images).
        reads_text: reads keypoint descriptions (text probes apply).
        extra_inputs: inputs beyond the support set that a fair comparison must mention,
            e.g. ``("ground-truth category name",)``.
        reads_query_ground_truth: only for test doubles such as ``oracle``.
        paper: short citation.
    """

    name: str
    needs_images: bool = True
    input_size: int = 256
    reads_text: bool = False
    extra_inputs: tuple[str, ...] = ()
    reads_query_ground_truth: bool = False
    paper: str = ""


@dataclass(frozen=True)
class RunContext:
    """What a method may use to get ready for one (split, shots) cell.

    Attributes:
        dataset: dataset name (``"mp100"`` or ``"cape-synth"``).
        split: split number 1..5.
        shots: number of support instances.
        ann_dir: folder holding ``mp100_split{k}_{train,val,test}.json``.
        image_root: folder the ``file_name`` entries are relative to, or None.
        cache_dir: where a method may keep trained weights and embeddings.
        options: method options from ``bench.toml`` (``[methods.<name>]``) and the CLI.
        descriptions: the keypoint-descriptions file the run uses (None: the annotation files' names),
            so a method trains on the same texts it is evaluated with.
        text_variant: regular | synonyms | translated | typo (of ``descriptions``).
        description_drop: category id → descriptions-file entries to drop before pairing by position
            (``dataset.description_drop``); pass it to ``load_descriptions`` with the file.
        subset: the evaluated subset, test or val.
        device: ``"cpu"`` or ``"cuda"``.
        seed: run seed.
        log: callable taking one message string (shown in the terminal and kept in run.json).
    """

    dataset: str
    split: int
    shots: int
    ann_dir: str
    image_root: str | None
    cache_dir: str
    options: dict[str, Any]
    device: str = "cpu"
    seed: int = 1
    log: Any = print
    descriptions: str | None = None
    text_variant: str = "regular"
    subset: str = "test"
    description_drop: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    """The contract every CAPE method implements (see docs in README, "Adding a method")."""

    info: MethodInfo

    def prepare(self, ctx: RunContext) -> None:
        """Load a checkpoint or train for ``ctx.split``; called once per (split, shots) cell."""

    def encode_support(self, support: InstanceView) -> Any:
        """Turn S support instances (ground truth given) into a reusable state."""

    def predict(self, state: Any, queries: InstanceView) -> np.ndarray:
        """Return float32[Q, K, 2] predicted keypoints in *original image pixels*."""

    def provenance(self) -> dict[str, Any]:
        """Checkpoint, backbone / text weights (genuine or random init), preset — for run.json."""


#: roles an instance plays in a pair
ROLES = ("support", "query")


@runtime_checkable
class InstanceCachedMethod(Method, Protocol):
    """Optional extension of :class:`Method`: per-instance stages computed once per split.

    At test time an instance's crop, backbone features (and e.g. CapeNext's image embedding) are the same in
    every pair it appears in (~30–60 pairs per split). A method that implements the five members below lets
    the harness compute those per-instance stages once per distinct instance (in batches), keep them in a
    bounded cache (:class:`cape_bench.feature_cache.FeatureCache`, memory limit ``[run] feature_cache_mb``,
    spilling to disk), and run only the pair-dependent part per episode, several episodes of one category
    per call. A method that declares nothing runs, uncached, through ``encode_support`` / ``predict``; the
    two paths must give the same predictions (to float tolerance).

    The harness calls, per (split, shots) cell, after ``prepare``:

    1. ``instance_stages()`` once;
    2. for each category, for each stage, ``instance_features(view, stage)`` on the instances (with crops)
       whose features are not cached yet, in batches;
    3. per episode ``encode_support_cached(support, feats)``; per group of episodes of one category
       ``predict_cached(states, queries, feats, episode)``. Views given to these two carry no crops.

    Optional: ``stage_fingerprint(stage) -> str | None``. A stage whose arrays depend on nothing but the crop
    and a fixed computation (a frozen pretrained backbone) may name that computation: a digest of the weights,
    the input size, the resizing. Stages of different methods with equal fingerprints share one cache entry per
    instance, so a run whose five methods sit on the same frozen backbone computes its features once. None (or
    no such member): the stage is this model's own.

    Optional: ``support_state_key(state) -> Hashable | None``. Two episodes whose states have equal keys give
    every query the same prediction (CapeX and CapeNext: the support is the category's texts and a keypoint
    mask, so the ~30 episodes a query appears in collapse to its few distinct masks); the harness then runs the
    head once per distinct (query, key) pair. None, or no such member: every episode is distinct.
    """

    def instance_stages(self) -> dict[str, str | tuple[str, ...]]:
        """Role (``"support"`` / ``"query"``) → the name of the per-instance stage that role needs, or a tuple of
        stage names whose arrays the role gets merged (array names must differ between them).

        Roles that share a stage name share cached features (e.g. one backbone for support and query:
        ``{"support": "image", "query": "image"}``); a role left out needs no per-instance work (CapeX reads no
        support pixels: ``{"query": "image"}``), and its view then has no crops at all. Several stages keep a
        shareable part apart from a method's own (CapeNext: ``{"query": ("image", "image_token")}``).
        """

    def instance_cache_identity(self) -> str:
        """A string that changes whenever the weights behind the per-instance features change (a new
        checkpoint, a retrained model); cached features are scoped by it."""

    def instance_features(self, view: InstanceView, stage: str) -> dict[str, Any]:
        """Per-instance arrays of ``stage`` for the N instances of ``view`` (crops given, no ground truth: the
        same features serve an instance as support and as query): ``{name: np.ndarray | torch.Tensor with first
        dim N}``; a name must be an identifier. Must not depend on which other instances share the batch."""

    def encode_support_cached(self, support: InstanceView, feats: dict[str, np.ndarray]) -> Any:
        """``encode_support`` from cached features: ``feats`` = the support role's stage arrays stacked over
        the S supports (``{}`` when the support role has no stage); ``support`` has ground truth, no crops."""

    def predict_cached(self, states: list[Any], queries: InstanceView, feats: dict[str, np.ndarray],
                       episode: np.ndarray) -> np.ndarray:
        """float32[Q, K, 2] predictions in original image pixels for Q queries of one category drawn from
        several episodes: query ``q`` belongs to the episode whose state is ``states[episode[q]]``; ``feats``
        are the query role's stage arrays stacked over the Q queries. Must equal ``predict`` episode by
        episode."""


_CACHED_MEMBERS = ("instance_stages", "instance_cache_identity", "instance_features", "encode_support_cached",
                   "predict_cached")


def supports_instance_cache(method: Any) -> bool:
    """True when ``method`` implements every member of :class:`InstanceCachedMethod` and declares a stage."""
    if not all(callable(getattr(method, m, None)) for m in _CACHED_MEMBERS):
        return False
    stages = method.instance_stages()
    unknown = set(stages) - set(ROLES)
    if unknown:
        raise ValueError(f"{getattr(getattr(method, 'info', None), 'name', method)}: instance_stages() names unknown "
                         f"role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    return bool(stages)


def role_stages(stages: dict[str, str | tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """``instance_stages()`` with every role's stages as a tuple of names."""
    return {role: (names,) if isinstance(names, str) else tuple(names) for role, names in stages.items()}


class RandomInitMethod(Method, Protocol):
    """Optional extension of :class:`Method`: a method with learned weights that can be built untrained.

    ``cape-bench profile`` measures speed, which does not depend on the weights' values: it builds each method
    with :meth:`random_init_options`, then calls :meth:`random_init` instead of ``prepare`` (no training, no
    download), so a fresh machine profiles every method in seconds.
    """

    @classmethod
    def random_init_options(cls, preset: str, backbone: str, batch_size: int) -> dict[str, Any]:
        """Constructor options for ``preset``'s architecture (``backbone``: "" for the preset's) with random
        weights everywhere genuine ones would be needed (encoders: genuine where on disk, else random)."""

    def random_init(self, ctx: RunContext, workdir: str | Path, seed: int = 0) -> Path | None:
        """Get ready for ``ctx`` with seeded random-init weights, through the method's ordinary loading path;
        return the weights file written under ``workdir`` (None if none was needed)."""


def supports_random_init(method_or_class: Any) -> bool:
    """True when a method (or its class) implements :class:`RandomInitMethod`."""
    return all(callable(getattr(method_or_class, m, None)) for m in ("random_init_options", "random_init"))


class TrainedMethod(Method, Protocol):
    """Optional extension of :class:`Method`: a method that trains its model on first use (inside ``prepare``).

    Before the grid runs the harness asks how much training each split needs, to say what the job will do and how
    long it has left (:mod:`cape_bench.job_clock`); nothing is trained by the question.
    """

    def pending_training(self, ctx: RunContext) -> tuple[int, str]:
        """(training iterations ``prepare(ctx)`` will run — 0 when the model is given or already trained —, a key
        naming the model, e.g. its folder: two labels that share a model train it once)."""


def pending_training(method: Any, ctx: RunContext) -> tuple[int, str]:
    """:meth:`TrainedMethod.pending_training`; (0, "") for a method without the hook."""
    hook = getattr(method, "pending_training", None)
    if not callable(hook):
        return 0, ""
    iterations, key = hook(ctx)
    return int(iterations), str(key)
