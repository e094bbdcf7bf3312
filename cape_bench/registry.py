"""Method registry: a lazy table of built-ins plus the ``cape_bench.methods`` entry-point group.

Nothing is imported until a method is asked for by name, so ``cape-bench ls methods`` and
``--help`` stay instant and a broken plug-in never breaks ``import cape_bench``. Built-ins win
on a name clash with an entry point.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "cape_bench.methods"

# name → "module:attr"; the module is imported only when the method is used.
BUILTIN_METHODS: dict[str, str] = {
    "support-copy": "cape_bench.methods.reference:SupportCopy",
    "text-prior": "cape_bench.methods.reference:TextPrior",
    "oracle": "cape_bench.methods.reference:Oracle",
    "pomnet": "baselines.pomnet.method:POMNet",
    "capeformer": "baselines.capeformer.method:CapeFormer",
    "graphcape": "baselines.graphcape.method:GraphCape",
    "capex": "baselines.capex.method:CapeX",
    "capenext": "capenext.method:CapeNext",
}


# what `cape-bench ls <what>` can list beyond methods: name → "module:function" returning a list of row dicts,
# imported only when asked for (the model packages own their backbones and encoders)
CATALOGS: dict[str, str] = {
    "backbones": "baselines.common.backbones:catalog",
    "text-encoders": "baselines.common.text_encoders:catalog",
}


def load_catalog(what: str) -> list[dict[str, str]]:
    """The rows of catalog ``what`` (see :data:`CATALOGS`)."""
    module_name, _, attr = CATALOGS[what].partition(":")
    return getattr(importlib.import_module(module_name), attr)()


class UnknownMethodError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class MethodEntry:
    name: str
    target: str  # "module:attr"
    source: str  # "built-in" or the distribution that registered the entry point


def list_methods() -> dict[str, MethodEntry]:
    """Every registered method, without importing any of them."""
    table: dict[str, MethodEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        table[ep.name] = MethodEntry(ep.name, ep.value, f"entry point ({dist.name if dist else 'unknown'})")
    for name, target in BUILTIN_METHODS.items():
        table[name] = MethodEntry(name, target, "built-in")
    return dict(sorted(table.items()))


def resolve(name: str) -> MethodEntry:
    """The entry for ``name``; raises :class:`UnknownMethodError` with "did you mean" suggestions."""
    table = list_methods()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownMethodError(f"unknown method {name!r}.{hint} Known methods: {', '.join(table)}.")


def load_method_class(name: str):
    """Import and return the class registered as ``name``."""
    entry = resolve(name)
    module_name, _, attr = entry.target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def create_method(name: str, **options):
    """Instantiate a registered method and check that it honours the :class:`~cape_bench.api.Method` contract."""
    from cape_bench.api import Method  # noqa: PLC0415

    method = load_method_class(name)(**options)
    if not isinstance(method, Method):
        raise TypeError(f"{resolve(name).target} does not implement the cape_bench.api.Method contract")
    return method
