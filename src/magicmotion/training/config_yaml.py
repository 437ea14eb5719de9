"""A tree of dataclasses from a YAML mapping, and back: the reading half of `training.config`.

Every key must be a field (a typo is a ConfigError naming the key, with the nearest field as a hint),
every value must fit its field's annotation (`int`, `float`, `str`, `bool`, `tuple[...]`, each maybe
`| None`), and a field whose default is a dataclass is a section read the same way. `--set key=value`
overrides take dotted keys (`optim.lr=1e-4`) or, where unambiguous, a section's bare leaf name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ConfigError

MAX_INT = 2**53  # integer fields beyond this are typos (and float(x) would no longer be exact)


def build(cls, data: Any, source: str, prefix: str = ""):
    """`cls` (a dataclass) from a nested dict; unknown keys and wrong types -> ConfigError naming
    `source` and the dotted key (`prefix` is the key of `data` itself, "" at the root)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            hint = _nearest(key, fields)
            raise ConfigError(
                f"{source}: unknown key {prefix + str(key)!r}" + (f" (did you mean {prefix + hint!r}?)" if hint else "")
            )
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[key] = build(type(default), {} if value is None else value, source, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, default, f.type, source, prefix + key)
    return cls(**kwargs)


def _nearest(key: str, names) -> str | None:
    import difflib

    match = difflib.get_close_matches(str(key), list(names), n=1, cutoff=0.75)
    return match[0] if match else None


def _coerce(value: Any, default: Any, type_text: str, source: str, key: str):
    """Check/convert a YAML value against the field's declared type (given as a string annotation)."""
    optional = "None" in str(type_text)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    kind = str(type_text).replace(" | None", "")
    try:
        if kind.startswith("tuple"):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ValueError
            item = float if "float" in kind else int
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
                raise ValueError
            out = tuple(item(v) for v in value)
            if item is int and any(float(v) != int(v) or abs(v) > MAX_INT for v in value):
                raise ValueError
            return out
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind == "int":  # integers only (1e3 is one), finite and within MAX_INT
            if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(float(value)):
                raise ValueError
            if abs(int(float(value))) > MAX_INT:
                raise ValueError
            return int(float(value))
        if kind == "float":  # finite: .nan / .inf are refused here, not found as NaN weights later
            if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{source}: {key} must be {_describe(kind, default)}, got {_short(value)}") from None
    return value


def _describe(kind: str, default) -> str:
    if kind.startswith("tuple"):
        return f"a list of {len(default)} finite numbers"
    return {"bool": "true or false", "int": f"an integer (at most {MAX_INT} in size)", "float": "a finite number",
            "str": "a string"}.get(kind, kind)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def apply_override(data: dict, item: str, source: str, root, sections: dict) -> None:
    """`a.b=value` (or a unique leaf name `b=value` of one of `sections`, {name: dataclass}) into the
    nested dict; value parsed as YAML. `root` is the dataclass `data` is read as."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = _resolve_key(key, root, sections)
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {key}: {part} is not a section")
    node[parts[-1]] = value


def _resolve_key(key: str, root, sections: dict) -> list[str]:
    if "." in key or key in {f.name for f in dataclasses.fields(root)}:
        return key.split(".")
    owners = [name for name, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) > 1:
        raise ConfigError(f"--set {key}: ambiguous, say which section: " + ", ".join(f"{o}.{key}" for o in owners))
    return [owners[0], key] if owners else [key]  # unknown keys are reported by build


def plain(value):
    """A dataclasses.asdict tree with tuples as lists: what yaml.safe_dump writes as plain YAML."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
