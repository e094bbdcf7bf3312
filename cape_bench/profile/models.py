"""Methods built with random-init weights for profiling; their parameters, FLOPs, text encoders, compile."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.api import supports_random_init

# ----------------------------------------------------------------------------------------------------------------
# Building methods with random-init weights


def method_options(cls, preset: str, backbone: str, batch_size: int) -> dict[str, Any]:
    """Constructor options that build ``cls`` at ``preset``'s architecture with random-init weights and no
    download (:meth:`cape_bench.api.RandomInitMethod.random_init_options`; none for methods without weights)."""
    return cls.random_init_options(preset, backbone, batch_size) if supports_random_init(cls) else {}


def build_method(name: str, *, preset: str, backbone: str, device: str, batch_size: int, workdir: Path,
                 shots: int = 1, seed: int = 0, log: Callable[[str], None] = print):
    """A registered method, prepared on ``device`` with random-init weights at ``preset``'s architecture.

    Returns:
        (method, checkpoint path or None for methods without a model).
    """
    from cape_bench.api import RunContext  # noqa: PLC0415
    from cape_bench.registry import create_method, load_method_class  # noqa: PLC0415

    cls = load_method_class(name)
    method = create_method(name, **method_options(cls, preset, backbone, batch_size))
    ctx = RunContext(dataset="profile", split=1, shots=shots, ann_dir=str(workdir), image_root=None,
                     cache_dir=str(workdir / "cache"), options={}, device=device, seed=seed, log=log)
    if not supports_random_init(method):
        method.prepare(ctx)
        return method, None
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # messages a method prints before it has ctx.log
        checkpoint = method.random_init(ctx, workdir, seed)
    for line in captured.getvalue().splitlines():
        if line.strip():
            log(line)
    return method, checkpoint


# ----------------------------------------------------------------------------------------------------------------
# Parameters, FLOPs, text encoders, compile


def _tensors_of(obj, exclude: tuple[str, ...] = ()) -> list:
    """Weight tensors an encoder object holds: an ``nn.Module``'s parameters and buffers, a dict of tensors, or
    the usual attributes (``model``, ``features``, ``params``, ``proj``)."""
    import torch  # noqa: PLC0415

    if obj is None:
        return []
    if isinstance(obj, torch.nn.Module):
        skip = set()
        for name in exclude:
            sub = getattr(obj, name, None)
            if isinstance(sub, torch.nn.Module):
                skip |= {id(t) for t in sub.parameters()} | {id(t) for t in sub.buffers()}
        return [t for t in [*obj.parameters(), *obj.buffers()] if id(t) not in skip]
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [v for v in obj.values() if isinstance(v, torch.Tensor)]
    out = []
    for attr in ("model", "features", "params", "proj"):
        out += _tensors_of(getattr(obj, attr, None), exclude)
    return out


def count_parameters(method) -> dict[str, Any]:
    """Parameter counts of a prepared method.

    Returns:
        ``params_total`` (model + frozen encoders, shared tensors once), ``params_trainable`` (model parameters the
        preset trains: all but a frozen backbone), ``params_frozen``, ``params_backbone``, ``params_text_encoder``,
        ``params_image_encoder`` and ``weights_mb`` (bytes of every weight tensor, buffers included).
    """
    import torch  # noqa: PLC0415

    model = getattr(method, "model", None)
    groups: dict[str, list] = {"model": [], "backbone": [], "text": [], "image": []}
    if isinstance(model, torch.nn.Module):
        groups["model"] = list(model.parameters())
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, torch.nn.Module):
            groups["backbone"] = list(backbone.parameters())
    text = getattr(method, "text", None)
    image = getattr(method, "image", None)
    # CLIP's text encoder holds the whole CLIP model: its image tower belongs to the image-token count
    groups["text"] = _tensors_of(text, exclude=("visual",))
    groups["image"] = _tensors_of(getattr(image, "model", None).visual if image is not None and hasattr(
        getattr(image, "model", None), "visual") else image)

    def numel(tensors, seen: set) -> int:
        total = 0
        for t in tensors:
            key = (t.data_ptr(), t.numel()) if t.numel() else id(t)
            if key not in seen:
                seen.add(key)
                total += t.numel()
        return total

    model_params = numel(groups["model"], set())
    backbone_params = numel(groups["backbone"], set())
    seen: set = set()
    total = numel(groups["model"], seen)
    text_params = numel(groups["text"], seen)
    image_params = numel(groups["image"], seen)
    total += text_params + image_params
    preset = getattr(method, "preset", None)
    frozen_backbone = bool(getattr(preset, "freeze_backbone", False))
    trainable = model_params - (backbone_params if frozen_backbone else 0)
    weight_tensors = [*groups["model"], *groups["text"], *groups["image"]]
    if isinstance(model, torch.nn.Module):
        weight_tensors += list(model.buffers())
    seen_bytes: set = set()
    nbytes = 0
    for t in weight_tensors:
        key = (t.data_ptr(), t.numel()) if t.numel() else id(t)
        if key not in seen_bytes:
            seen_bytes.add(key)
            nbytes += t.numel() * t.element_size()
    return {
        "params_total": int(total), "params_trainable": int(trainable), "params_frozen": int(total - trainable),
        "params_backbone": int(backbone_params), "params_text_encoder": int(text_params),
        "params_image_encoder": int(image_params), "backbone_frozen": frozen_backbone,
        "weights_mb": nbytes / 2**20,
    }


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (``FlopCounterMode``: matmuls, convolutions, attention;
    element-wise operations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def uncached_text_encoder(method) -> Callable[[Sequence[str]], np.ndarray] | None:
    """The method's frozen text encoder network with **no** embedding cache (every call runs the network), or None
    for a method without one. The call counts the strings it encodes in its ``.encoded`` attribute."""
    encoder = getattr(method, "text", None)
    if encoder is None or not callable(getattr(encoder, "_encode_all", None)):
        return None

    def encode(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        encode.encoded += len(texts)
        if not texts:
            return np.zeros((0, encoder.dim), np.float32)
        return encoder._encode_all(texts)  # noqa: SLF001  (the network itself, bypassing the cache on purpose)

    encode.encoded = 0
    return encode


@contextlib.contextmanager
def text_cache_bypassed(method):
    """Inside the block the method's model calls the text encoder uncached (the official behaviour).

    Yields the uncached encoder (``.encoded`` counts strings) or None when the method reads no text.
    """
    model = getattr(method, "model", None)
    encode = uncached_text_encoder(method)
    if encode is None or model is None or not hasattr(model, "encode_text"):
        yield None
        return
    previous = model.encode_text
    model.encode_text = encode
    try:
        yield encode
    finally:
        model.encode_text = previous


def outermost_modules(model, calls: Sequence[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """The submodules of ``model`` that ``calls`` invoke while no other submodule of it is running (the entry
    points of a forward that goes through plain methods, e.g. ``head.predict``), in first-call order."""
    import torch  # noqa: PLC0415

    names = {id(m): n for n, m in model.named_modules()}
    depth = [0]
    found: dict[int, tuple[str, Any]] = {}
    handles = []

    def pre(module, _args):
        if depth[0] == 0 and id(module) not in found:
            found[id(module)] = (names[id(module)] or "<model>", module)
        depth[0] += 1

    def post(_module, _args, _out):
        depth[0] -= 1

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.inference_mode():
            for call in calls:
                depth[0] = 0
                call()
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def compile_model(method, calls: Sequence[Callable[[], Any]], backend: str = "inductor") -> list[str]:
    """``nn.Module.compile`` (in place) on every outermost module the calls run (see :func:`outermost_modules`).

    Returns:
        the compiled modules' names (empty for a method without a model).
    """
    import torch  # noqa: PLC0415

    model = getattr(method, "model", None)
    if not isinstance(model, torch.nn.Module):
        return []
    compiled = []
    for name, module in outermost_modules(model, calls):
        module.compile(backend=backend)
        compiled.append(name)
    return compiled
