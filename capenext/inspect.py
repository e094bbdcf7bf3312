"""Look inside a trained CapeNext: what HCMI + DSFR do to the keypoint-text embeddings, measured.

CapeNext's claim (Zhu et al., AAAI 2026) is that a static keypoint-text embedding is ambiguous across categories
("left front leg" of a table, of a dog) and blind to the instance, and that refining it with the class text and the
query image fixes both. DSFR refines each keypoint embedding on its own (it attends only to the two HCMI tokens, never
to the other keypoints), so its effect can be read keypoint by keypoint:

* ``moved`` = 1 − cos(e_joint, e'_joint): how far the refinement turns a keypoint's embedding (0: not at all);
* ``w_t`` / ``w_i``: the DSFR gates of the text and image streams;
* **separation of polysemous names**: for a normalised description that names keypoints of categories in different
  supercategories, the static embeddings are identical (cosine 1); the mean cosine between its refined embeddings
  in categories of *different* supercategories says how far CapeNext pulls them apart. The same statistic over
  categories of the *same* supercategory is the reference: disambiguation shows as a lower cosine across
  supercategories than within one.

:func:`inspect_split` runs the trained model of a split on its test instances (crops read once, frozen encoders as in
evaluation) and returns per-keypoint rows; :func:`separation` summarises them.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from cape_bench.data.mp100 import AnnotationSet
from cape_bench.images import CropSource, normalize_crops
from cape_bench.metrics.ambiguity import normalize_description, polysemy_flags


@torch.inference_mode()
def inspect_split(method, ann: AnnotationSet, image_root: str, vocabulary: AnnotationSet | None = None,
                  per_category: int = 10, batch: int = 16):
    """Per (category, instance, keypoint): ``moved``, the gates and the refined embedding, for a prepared CapeNext.

    Args:
        method: a prepared :class:`capenext.method.CapeNext` (its ``model`` trained for ``ann``'s split).
        ann: the evaluated annotation set (test file).
        image_root: its image folder.
        vocabulary: more categories for the polysemy flag (e.g. the split's training file).
        per_category: instances read per category (the first ones in file order).
        batch: instances per forward.

    Returns:
        (rows: pandas DataFrame with category_id, supercategory, instance, kpt, name, polysemous, moved, w_t, w_i;
        refined: float32[len(rows), D], row-aligned).
    """
    import pandas as pd  # noqa: PLC0415

    model = method.model
    fuse = model.head.additional_module
    crops = CropSource(image_root, method.preset.input_size)
    table = {c.id: {"supercategory": c.supercategory, "descriptions": list(c.descriptions)}
             for c in ann.categories.values()}
    vocab = {c.id: {"supercategory": c.supercategory, "descriptions": list(c.descriptions)}
             for c in vocabulary.categories.values()} if vocabulary is not None else None
    flags = polysemy_flags(table, vocab)
    rows, refined = [], []
    for cid, cat in ann.categories.items():
        objs = ann.cat2obj[cid][:per_category]
        k = cat.num_keypoints
        ones = torch.ones(1, k)
        e_joint = model.joint_embeddings([list(cat.descriptions)], ones)  # [1, K, D], × text_scale as in training
        e_cls = model.class_embeddings([cat.name])
        for start in range(0, len(objs), batch):
            chunk = [ann.instances[i] for i in objs[start:start + batch]]
            images = torch.from_numpy(normalize_crops(crops.crops(chunk)))
            q = len(chunk)
            e_img = model.image_embeddings(images)
            out, trace = fuse(e_img, e_joint.expand(q, -1, -1), None if e_cls is None else e_cls.expand(q, -1),
                              return_intermediates=True)
            cos = torch.nn.functional.cosine_similarity(out, e_joint.expand(q, -1, -1), dim=-1)  # [q, K]
            w_t = trace.get("gate_text_w_t")
            w_i = trace.get("gate_image_w_i")
            for j, inst in enumerate(chunk):
                for kp in range(k):
                    rows.append({
                        "category_id": cid, "category": cat.name, "supercategory": cat.supercategory,
                        "instance": inst.ann_id, "kpt": kp, "name": normalize_description(cat.descriptions[kp]),
                        "polysemous": flags[cid][kp], "moved": float(1 - cos[j, kp]),
                        "w_t": float(w_t[j, kp, 0]) if w_t is not None else np.nan,
                        "w_i": float(w_i[j, kp, 0]) if w_i is not None else np.nan,
                    })
            refined.append(out.reshape(-1, out.shape[-1]).float().numpy())
    return pd.DataFrame(rows), np.concatenate(refined) if refined else np.zeros((0, 0), np.float32)


def separation(rows, refined: np.ndarray) -> dict[str, float]:
    """Mean cosine between the refined embeddings of one polysemous name in two categories, across supercategories
    and within one (each category's embedding of the name averaged over its instances first), plus how far DSFR moves
    polysemous vs unique keypoints. Static embeddings give cosine 1 for both."""
    unit = refined / np.linalg.norm(refined, axis=1, keepdims=True)
    means: dict[tuple[str, int], tuple[str, np.ndarray]] = {}
    for (name, cid), idx in rows.groupby(["name", "category_id"]).groups.items():
        v = unit[np.asarray(list(idx))].mean(axis=0)
        means[(name, cid)] = (rows.loc[idx[0], "supercategory"], v / np.linalg.norm(v))
    across, within = [], []
    by_name: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (name, _), entry in means.items():
        by_name.setdefault(name, []).append(entry)
    for entries in by_name.values():
        for (sa, va), (sb, vb) in combinations(entries, 2):
            (across if sa != sb else within).append(float(va @ vb))
    poly = rows["polysemous"] == 1.0
    return {
        "same name, different supercategories: cosine": float(np.mean(across)) if across else float("nan"),
        "same name, same supercategory: cosine": float(np.mean(within)) if within else float("nan"),
        "name pairs across / within": f"{len(across)} / {len(within)}",
        "moved (1 - cos), polysemous keypoints": float(rows.loc[poly, "moved"].mean()),
        "moved (1 - cos), unique keypoints": float(rows.loc[rows["polysemous"] == 0.0, "moved"].mean()),
        "w_t mean": float(rows["w_t"].mean()),
        "w_i mean": float(rows["w_i"].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m capenext.inspect [--label capenext] [--split 1] [--config bench.toml] [--set KEY=VALUE …]``: run the
    split's trained model (training it first if it is not cached, as ``cape-bench run`` would) and print
    :func:`separation` of its test categories."""
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415

    from cape_bench.config import find_config, load_config  # noqa: PLC0415
    from cape_bench.data.mp100 import load_annotation_set, split_file  # noqa: PLC0415
    from cape_bench.datasets import resolve_dataset  # noqa: PLC0415
    from cape_bench.configured import create_configured_method, make_context  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m capenext.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="capenext", help="a capenext label of bench.toml (ablations count)")
    parser.add_argument("--split", type=int, default=1)
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config or find_config(), args.overrides)
    ds = resolve_dataset(cfg, print)
    method = create_configured_method(cfg, args.label)
    method.prepare(make_context(cfg, args.label, ds, args.split, 1, print))
    test = load_annotation_set(split_file(ds.ann_dir, args.split, cfg.dataset.subset))
    train = load_annotation_set(split_file(ds.ann_dir, args.split, "train"))
    rows, refined = inspect_split(method, test, str(ds.image_root), vocabulary=train, per_category=args.per_category)
    summary = separation(rows, refined)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
