"""Settings as documented fields: one declaration per setting.

A setting is a dataclass field declared with :func:`setting`: its default, its kind
(int, float, bool, str, duration, list, enum), its bounds, a one-line doc and its TOML
key. The dataclass holds the values; the declaration in the field's metadata is what
the TOML file, the SAHAYAK_* environment, the `serve` flags, the bounds checks,
`sahayak-rpc config --explain` and the README's settings table are all made from
(config.py, settings.py). No dependency: a dataclass with a little metadata does it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

KINDS = ("int", "float", "bool", "str", "duration", "list", "enum")
T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """What one setting is: its kind, bounds, doc and where it is set."""

    kind: str
    doc: str
    # (TOML section, key); its environment variable is SAHAYAK_<SECTION>_<KEY>. None: set per model only.
    key: tuple[str, str] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    # An enum's values; a list's allowed items (it must name at least one).
    choices: tuple[str, ...] = ()
    # The reason given when a value is out of bounds, where the derived one would say too little.
    reason: str = ""
    # The `sahayak-rpc serve` flag that sets it, if any.
    flag: str = ""

    @property
    def env(self) -> str:
        return f"SAHAYAK_{self.key[0]}_{self.key[1]}".upper() if self.key else ""

    @property
    def toml(self) -> str:
        return f"[{self.key[0]}] {self.key[1]}" if self.key else ""

    def rule(self) -> str:
        """The bounds as a sentence ("must be in (0, 1]"); empty when any value of the kind will do."""
        if self.reason:
            return self.reason
        if self.kind == "enum":
            return f"must be one of {', '.join(self.choices)}"
        if self.kind == "list" and self.choices:
            return f"must name at least one of {', '.join(self.choices)}"
        show = _seconds if self.kind == "duration" else _number
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"must be in {'(' if self.lo_open else '['}{show(lo)}, {show(hi)}{')' if self.hi_open else ']'}"
        if lo is not None:
            if self.lo_open:
                return f"must be > {_number(lo)}"
            return "must be >= 0" if lo == 0 else f"must be at least {show(lo)}"
        if hi is not None:
            return f"must be {'<' if self.hi_open else '<='} {show(hi)}"
        return ""

    def allows(self, value: Any) -> bool:
        if self.kind == "enum":
            return value in self.choices
        if self.kind == "list":
            return not self.choices or (bool(value) and all(v in self.choices for v in value))
        if self.kind not in ("int", "float", "duration"):
            return True
        if self.kind != "int" and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)


def setting(default: T, kind: str, doc: str, **spec: Any) -> T:
    """A dataclass field that is a setting (see :class:`Spec` for the keywords)."""
    assert kind in KINDS, kind
    declared = Spec(kind, doc, **spec)
    return dataclasses.field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class Declared:
    """A setting where it sits: its attribute path from the root dataclass, and its field path."""

    attrs: tuple[str, ...]  # ("training", "retrain_interval_s")
    path: str  # "training.retrain_interval": the name in errors and on the wire (durations lose "_s")
    spec: Spec
    default: Any

    def get(self, obj: Any) -> Any:
        for a in self.attrs:
            obj = getattr(obj, a)
        return obj


def declared(cls: type, attrs: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> list[Declared]:
    """Every setting of a dataclass and the dataclasses it holds, in declaration order."""
    out: list[Declared] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if not (isinstance(nested, type) and dataclasses.is_dataclass(nested)):
                raise TypeError(f"{cls.__name__}.{f.name} is neither a setting nor a dataclass of settings")
            out += declared(nested, (*attrs, f.name), (*names, f.name))
            continue
        name = f.name[:-2] if spec.kind == "duration" and f.name.endswith("_s") else f.name
        out.append(Declared((*attrs, f.name), ".".join((*names, name)), spec, f.default))
    return out


def problems(obj: Any, prefix: str) -> list[tuple[str, str]]:
    """(field path, reason) for every value of ``obj`` out of its bounds."""
    return [
        (f"{prefix}.{d.path}" if prefix else d.path, d.spec.rule())
        for d in declared(type(obj))
        if not d.spec.allows(d.get(obj))
    ]


def build(cls: type[T], values: dict[tuple[str, ...], Any]) -> T:
    """An instance of ``cls`` with the given values (by attribute path) and defaults elsewhere."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        inner = {k[1:]: v for k, v in values.items() if k[0] == f.name and len(k) > 1}
        if inner:
            kwargs[f.name] = build(f.default_factory, inner)  # type: ignore[arg-type]
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _seconds(x: float) -> str:
    return f"{_number(x * 1000)}ms" if 0 < x < 1 else f"{_number(x)}s"


def show_duration(seconds: float) -> str:
    """90 -> "90s", 300 -> "5m", 604800 -> "7d", 0.05 -> "50ms"."""
    if 0 < seconds < 1:
        return f"{_number(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{_number(seconds)}s"


def show(value: Any, kind: str) -> str:
    """A value as the TOML file would say it (durations with a unit, lists comma-separated)."""
    if kind == "duration":
        return show_duration(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "list":
        return ", ".join(value)
    if kind == "str" and value == "":
        return '""'
    return _number(value) if kind in ("int", "float") else str(value)
