"""Finding codes (:data:`CODES`), their severities, and the report the doctor returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"
_SEVERITY_OF_PREFIX = {"E": ERROR, "W": WARNING, "I": INFO}

MAX_KPT_NUM = 100  # the official loader pads every instance to 100 keypoint rows
DEFAULT_MIN_INSTANCES = 20  # 5 shots + 15 queries: the largest official test episode
TEXT_VARIANTS = ("descriptions", "synonyms", "translated", "typo")  # keys of keypoint_descriptions.json

CODES: dict[str, str] = {
    "E-json": "file missing, unreadable, not JSON or not a JSON object",
    "E-missing-field": "required field missing",
    "E-field-type": "field of the wrong type",
    "E-non-finite": "NaN, infinite or overflowing number",
    "E-dup-image-id": "duplicate image id",
    "E-dup-annotation-id": "duplicate annotation id",
    "E-dup-category-id": "duplicate category id",
    "E-unknown-image": "annotation points at an image id that is not in the file",
    "E-unknown-category": "annotation points at a category id that is not in the file",
    "E-image-size": "image width or height is not positive",
    "E-kpt-count": "keypoints list is not 3×K long for its category",
    "E-kpt-too-many": "category has more keypoints than the official padding (100)",
    "E-skeleton-range": "skeleton edge index outside 0..K-1",
    "E-images-dir": "the --images directory does not exist",
    "E-image-missing": "image file missing under --images",
    "E-image-path": "image file_name leaves the image root (absolute path or '..')",
    "E-image-corrupt": "image file cannot be decoded",
    "W-kpt-names-missing": "category has no keypoint names (K taken from its annotations)",
    "W-kpt-name-empty": "empty keypoint name",
    "W-kpt-name-duplicate": "duplicate keypoint name",
    "W-skeleton-one-based": "skeleton looks 1-based (model code reads it as 0-based)",
    "W-skeleton-duplicate": "duplicate skeleton edge (same or reversed pair)",
    "W-skeleton-self-loop": "skeleton edge joins a keypoint to itself",
    "W-bbox-degenerate": "bbox width or height is not positive",
    "W-bbox-out-of-image": "bbox extends outside the image (the official loader clips it)",
    "W-drop-crowd": "dropped by the official loader: iscrowd != 0",
    "W-drop-no-bbox": "dropped by the official loader: no bbox",
    "W-drop-area": "dropped by the official loader: area <= 0",
    "W-drop-clean-bbox": "dropped by the official loader: clean bbox is degenerate",
    "W-drop-zero-kpts": "dropped by the official loader: keypoints all zero (max == 0)",
    "W-drop-num-kpts": "dropped by the official loader: num_keypoints == 0",
    "W-num-keypoints": "num_keypoints differs from the count of keypoints with v > 0",
    "W-visibility-value": "visibility flag outside {0, 1, 2}",
    "W-kpt-out-of-image": "visible keypoint outside its image",
    "W-kpt-out-of-bbox": "visible keypoint outside its bbox",
    "W-image-folder": "image folder does not match the category name",
    "W-image-unused": "image without annotations",
    "W-few-instances": "fewer kept instances than one episode needs",
    "W-desc-missing": "category absent from the descriptions file",
    "W-desc-name": "category name differs from the descriptions file",
    "W-desc-count": "more descriptions than keypoints: paired by position, the rest never read (official)",
    "E-desc-count": "fewer descriptions than keypoints",
    "W-desc-empty": "empty description text",
    "W-desc-duplicate": "same description text for several keypoints",
    "I-skeleton-empty": "category has no skeleton edges",
    "I-kpt-hidden-coords": "keypoints with v = 0 carry non-zero coordinates",
}

_EXAMPLES_SHOWN = 3  # examples per code in the rendered table
MISSING = object()  # field absent
BAD = object()  # field present but unusable
# MP-100 stores images as "<category folder>/...". COCO's person lives under human_body/.
_FOLDER_ALIASES = {"person": "human", "human": "person"}


def severity_of(code: str) -> str:
    """Severity of a finding code, read from its stable prefix (``E-``, ``W-``, ``I-``)."""
    return _SEVERITY_OF_PREFIX[code[0]]


@dataclass(frozen=True)
class Finding:
    """One problem in one file.

    Attributes:
        code: stable code, a key of :data:`CODES` (``E-kpt-count``, ``W-bbox-out-of-image``, …).
        message: what is wrong, with the offending values.
        file: the file the problem is in (annotation or descriptions file).
        path: JSON path of the field, e.g. ``annotations[12].keypoints``; empty for the whole file.
        category_id: category concerned, when one is.
        category_name: its name in the annotation file, when known.
        annotation_id: annotation concerned, when one is.
        image_id: image concerned, when one is.
    """

    code: str
    message: str
    file: str
    path: str = ""
    category_id: Any = None
    category_name: str | None = None
    annotation_id: Any = None
    image_id: Any = None

    @property
    def severity(self) -> str:
        return severity_of(self.code)


@dataclass(frozen=True)
class CategorySummary:
    """One category as the official loader sees it.

    Attributes:
        id: category id.
        name: category name (None when missing or not a string).
        supercategory: supercategory (None when absent).
        num_keypoints: K, from the keypoint names, or from the annotations when the names are missing.
        keypoint_source: ``"names"`` or ``"annotations"``: where K came from.
        skeleton_edges: number of well-formed skeleton edges.
        skeleton_base: ``"0-based"``, ``"1-based"`` or ``"empty"``.
        num_annotations: annotations of this category.
        num_kept: instances the official loader keeps (the population of its episodes).
    """

    id: Any
    name: str | None
    supercategory: str | None
    num_keypoints: int
    keypoint_source: str
    skeleton_edges: int
    skeleton_base: str
    num_annotations: int
    num_kept: int


@dataclass(frozen=True)
class Summary:
    """File-level counts.

    Attributes:
        num_images: entries of ``images``.
        num_annotations: entries of ``annotations``.
        num_categories: entries of ``categories``.
        num_kept: instances the official loader keeps, all categories.
        categories: per-category counts, in file order.
        images_dir: the image root checked, when one was given.
        num_images_missing: image files absent under ``images_dir`` (None when not checked).
    """

    num_images: int
    num_annotations: int
    num_categories: int
    num_kept: int
    categories: tuple[CategorySummary, ...]
    images_dir: str | None = None
    num_images_missing: int | None = None


@dataclass
class DoctorReport:
    """Findings and summary of one annotation file.

    Attributes:
        file: the annotation file checked.
        findings: every finding, in discovery order.
        summary: counts, or None when the file could not be read as an MP-100 object.
    """

    file: str
    findings: list[Finding] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def has_errors(self) -> bool:
        return any(f.severity == ERROR for f in self.findings)

    def by_code(self, code: str) -> list[Finding]:
        """Findings with this code, in discovery order."""
        return [f for f in self.findings if f.code == code]

    def code_counts(self) -> dict[str, int]:
        """Number of findings per code."""
        return dict(Counter(f.code for f in self.findings))

    def severity_counts(self) -> dict[str, int]:
        """Number of findings per severity (all three keys always present)."""
        counts = Counter(f.severity for f in self.findings)
        return {s: counts.get(s, 0) for s in (ERROR, WARNING, INFO)}
