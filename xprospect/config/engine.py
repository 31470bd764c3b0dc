"""The config engine: typed dataclass schemas read from YAML, checked with one-line errors.

A schema is a tree of dataclasses whose field annotations say what each key holds (``int``,
``float``, ``bool``, ``str``, ``Literal[...]``, ``list[T]``, ``dict[str, T]``, ``T | None``,
``Any`` or another dataclass: a nested section). The engine turns parsed YAML into that tree and
back; each schema adds its own range checks on top. The experiment (:mod:`xprospect.config`),
style (:mod:`xprospect.style.config`) and tune (:mod:`xprospect.tuning.config`) files all use it::

    @dataclass
    class MyConfig:
        steps: int = 10
        name: Literal["a", "b"] = "a"

    def my_config_from_dict(data, source=None) -> MyConfig:
        src = None if source is None else str(source)
        config = build(MyConfig, data, source=src)           # types, unknown keys
        check(config.steps >= 1, "steps", "must be >= 1", src)  # ranges
        return config

    config = load_file(resolve_path(path, MY_DIR, "my config"), my_config_from_dict, ["steps=3"])

Every error is a :class:`~xprospect.errors.ConfigError` whose message is one line: the file (or
``--set KEY`` / ``--set overrides``), the dotted key, and what was expected, e.g.
``exp.yaml: training.steps: expected an integer or null, got 'many'``. Numbers given as strings
(YAML reads ``1e-4`` as a string) are converted where the field is a number; a ``Literal`` matches
case-insensitively. See ``docs/configuration.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from xprospect.errors import ConfigError, ResourceLimitError
from xprospect.utils import atomic_path

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "FromDict",
    "apply_overrides",
    "build",
    "check",
    "convert",
    "describe_type",
    "dump",
    "load_file",
    "parse_override",
    "read_mapping",
    "read_yaml_file",
    "resolve_path",
    "safe_load_yaml",
    "shipped",
    "to_dict",
    "unknown_key",
]

T = TypeVar("T")

FromDict = Callable[[Mapping[str, Any] | None, "str | os.PathLike[str] | None"], T]
"""``from_dict(data, source)``: builds and validates a schema's root from plain data (e.g.
:func:`xprospect.config.config_from_dict`); ``source`` names where the data came from."""


# === Type-driven conversion ===


def describe_type(tp: Any) -> str:
    """What a value of type ``tp`` looks like in YAML, for error messages (``an integer or
    null``, ``one of adam, nadam``, ``a list of numbers``)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {describe_type(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if origin is dict:
        return f"a mapping of names to {describe_type(typing.get_args(tp)[1]).removeprefix('a ')}s"
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        parts = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    return str(tp)


def _type_error(where: str, tp: Any, value: Any, source: str | None) -> ConfigError:
    return ConfigError(f"{where}: expected {describe_type(tp)}, got {value!r}", source)


def convert(value: Any, tp: Any, where: str, source: str | None = None) -> Any:
    """Checks ``value`` against the type ``tp`` and returns it converted.

    Dataclasses are built (:func:`build`), whole numbers become ``int``, numeric strings
    become numbers, ``Literal`` choices match case-insensitively; nothing else is coerced.

    Args:
        value: Plain data (parsed YAML).
        tp: A type a schema field may have (see the module docstring).
        where: The dotted key, for the message.
        source: The file or override text the value came from, for the message.

    Raises:
        ConfigError: ``where: expected DESCRIPTION, got VALUE`` (or an unknown key below it).
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, where, source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _type_error(where, tp, value, source)
        for arg in args:
            if arg is type(None):
                continue
            if isinstance(value, Mapping) and dataclasses.is_dataclass(arg):
                # A mapping for an optional section: its own error (an unknown or mistyped key
                # inside it) says more than "expected a mapping or null".
                return convert(value, arg, where, source)
            try:
                return convert(value, arg, where, source)
            except ConfigError:
                continue
        raise _type_error(where, tp, value, source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str):
            for choice in choices:
                if value.strip().lower() == str(choice).lower():
                    return choice
        raise _type_error(where, tp, value, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(where, tp, value, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # PyYAML reads 1e4 as a string and 1.0e+4 as a float; accept whole numbers either way.
        number = _number(value)
        if number is not None and number.is_integer():
            return int(number)
        raise _type_error(where, tp, value, source)
    if tp is float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise _type_error(where, tp, value, source)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(where, tp, value, source)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise _type_error(where, tp, value, source)
        (item,) = typing.get_args(tp)
        return [convert(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(where, tp, value, source)
        _, val_tp = typing.get_args(tp)  # keys: always strings (checked below)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {k!r}", source)
            out[k] = convert(v, val_tp, f"{where}.{k}", source)
        return out
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug in the schema


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _hints(cls: type) -> dict[str, Any]:
    # Annotations are strings under `from __future__ import annotations`; resolve them here.
    return typing.get_type_hints(cls)


def unknown_key(
    where: str, key: Any, valid: Sequence[str], source: str | None = None
) -> ConfigError:
    """The error for a key that is not in a section: ``unknown key 'WHERE.KEY' (did you mean
    'X'?); valid keys: ...``.

    Args:
        where: The dotted section ("" at the top level).
        key: The unknown key.
        valid: The section's keys, in the schema's order.
        source: The file or override text, for the message.
    """
    name = f"{where}.{key}" if where else str(key)
    hint = difflib.get_close_matches(str(key), valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(
        f"unknown key {name!r}{did_you_mean}; valid keys: {', '.join(valid)}", source
    )


def build(cls: type[T], value: Any, where: str = "", source: str | None = None) -> T:
    """An instance of the dataclass ``cls`` from a mapping; missing keys take their defaults.

    Args:
        cls: The schema (or section) dataclass.
        value: A mapping of its field names (None: all defaults).
        where: The dotted key of this section ("" for the top level), for messages.
        source: The file or override text, for messages.

    Raises:
        ConfigError: Not a mapping, an unknown key (:func:`unknown_key`) or a value of the wrong
            type (:func:`convert`).
    """
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _type_error(where or "top level", cls, value, source)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, val in value.items():
        if key not in hints:
            raise unknown_key(where, key, names, source)
        kwargs[key] = convert(val, hints[key], f"{where}.{key}" if where else key, source)
    return cls(**kwargs)


def check(ok: bool, where: str, message: str, source: str | None = None) -> None:
    """A range or consistency check types cannot express.

    Raises:
        ConfigError: ``where: message`` when ``ok`` is false.
    """
    if not ok:
        raise ConfigError(f"{where}: {message}", source)


# === Files ===


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB; the biggest shipped config is a few KiB)."""
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of mappings and lists in a config file (the schemas nest 3 levels)."""


class _Refused(yaml.MarkedYAMLError):
    """YAML the config loader does not accept (anchors, aliases); carries the position."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _TooDeep(yaml.MarkedYAMLError):
    """Nesting beyond the loader's limit; carries the position."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses anchors and aliases (an alias bomb is never expanded:
    the first anchor stops the parse) and nesting deeper than ``max_depth``."""

    max_depth = MAX_CONFIG_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                f"aliases (*{event.anchor}) are not allowed in config files; write the value out",
                event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused(
                f"anchors (&{anchor}) are not allowed in config files; write the value out",
                event.start_mark,
            )
        if not isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _TooDeep(
                    f"mappings and lists nest deeper than the limit of {self.max_depth} levels",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_error(exc: yaml.YAMLError, source: str | os.PathLike[str] | None) -> Exception:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or exc
    if isinstance(exc, _TooDeep):
        return ResourceLimitError(f"{where}{problem}", source)
    if isinstance(exc, _Refused):
        return ConfigError(f"{where}{problem}", source)
    return ConfigError(f"invalid YAML: {where}{_one_line(str(problem))}", source)


def safe_load_yaml(
    text: str,
    source: str | os.PathLike[str] | None = None,
    *,
    max_depth: int = MAX_CONFIG_DEPTH,
) -> Any:
    """Parses YAML text like ``yaml.safe_load``, refusing anchors, aliases and deep nesting.

    Args:
        text: The YAML text.
        source: Where it came from (a file, ``--set KEY``), for the message.
        max_depth: Deepest nesting of mappings and lists accepted.

    Returns:
        The parsed value (None for an empty document).

    Raises:
        ConfigError: Invalid YAML, an anchor or an alias (``invalid YAML: line L, column C: ...``).
        ResourceLimitError: Nesting deeper than ``max_depth``.
    """
    try:
        loader = _ConfigLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()


def read_yaml_file(
    file: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_CONFIG_BYTES,
    max_depth: int = MAX_CONFIG_DEPTH,
) -> Any:
    """Reads and parses a YAML file with :func:`safe_load_yaml`, refusing files that are too
    large or not text before parsing them.

    Raises:
        ConfigError: Unreadable, not UTF-8 text (binary), invalid YAML, anchors or aliases.
        ResourceLimitError: Larger than ``max_bytes``, or nesting deeper than ``max_depth``.
    """
    path = Path(file)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", path) from None
    if len(data) > max_bytes:
        raise ResourceLimitError(
            f"config file is larger than the limit of {max_bytes // 1024} KiB; not read", path
        )
    if b"\0" in data:
        raise ConfigError("not a text file (it holds NUL bytes); expected a YAML config", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "expected a YAML config",
            path,
        ) from None
    return safe_load_yaml(text, path, max_depth=max_depth)


def read_mapping(file: Path) -> tuple[Mapping[str, Any] | None, Path]:
    """The parsed YAML mapping of a config file (None for an empty file) and the file.

    The file is read with :func:`read_yaml_file`: at most :data:`MAX_CONFIG_BYTES`, UTF-8 text,
    no anchors or aliases, nesting at most :data:`MAX_CONFIG_DEPTH` deep.

    Raises:
        ConfigError: Unreadable or binary file, bad YAML (with its line), anchors or aliases, or
            not a mapping.
        ResourceLimitError: The file is too large or nests too deeply.
    """
    data = read_yaml_file(file)
    if data is not None and not isinstance(data, Mapping):
        shown = repr(data) if len(repr(data)) <= 80 else repr(data)[:77] + "..."
        raise ConfigError(f"expected a mapping of sections at the top, got {shown}", file)
    return data, file


def shipped(directory: Path) -> dict[str, Path]:
    """Name → path of the YAML files in ``directory`` (the configs shipped with the package)."""
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def resolve_path(path: str | os.PathLike[str], directory: Path, what: str = "config") -> Path:
    """An existing file as given, else a file of ``directory`` by name (``demo``,
    ``512-dense.yaml``).

    Args:
        path: A file, or the name of a file of ``directory``.
        directory: Where the shipped files live.
        what: The kind of file, for the message.

    Raises:
        ConfigError: Neither exists (the message lists the shipped names).
    """
    p = Path(path)
    if p.is_file():
        return p
    files = shipped(directory)
    name = p.name.removesuffix(".yaml").removesuffix(".yml").lower()
    if p.parent == Path(".") and name in files:
        return files[name]
    if p.exists():
        raise ConfigError("is not a file", p)
    names = ", ".join(files) or "none"
    raise ConfigError(f"{what} file not found (shipped: {names})", p)


def load_file(
    file: Path,
    from_dict: FromDict[T],
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> T:
    """Reads a config file, builds it with ``from_dict`` and applies dotted overrides.

    Args:
        file: The YAML file (see :func:`resolve_path` for names of shipped files).
        from_dict: Builds and validates the schema's root (:data:`FromDict`).
        overrides: Optional ``{"training.steps": 100}`` or ``["training.steps=100"]``.

    Raises:
        ConfigError: Unreadable file, bad YAML, unknown key, wrong type or value.
    """
    data, file = read_mapping(file)
    config = from_dict(data, file)
    if overrides:
        config = apply_overrides(config, overrides, from_dict)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts and lists (YAML/JSON-ready) of a config."""
    return dataclasses.asdict(config)


def dump(config: Any, path: str | os.PathLike[str]) -> Path:
    """Writes a config as YAML (atomically) that its ``from_dict`` reads back unchanged.

    Returns:
        The path written.
    """
    text = yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# === Dotted overrides (the CLI's --set) ===


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``"section.key=value"`` and parses the value as YAML (``1e-4`` stays a string
    until the typed field converts it).

    Raises:
        ConfigError: No ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = safe_load_yaml(raw, f"--set {key}") if raw.strip() else None
    except (ConfigError, ResourceLimitError):
        value = raw
    return key, value


def apply_overrides(
    config: T, overrides: Mapping[str, Any] | Sequence[str], from_dict: FromDict[T]
) -> T:
    """Returns a copy of ``config`` with dotted-key overrides applied and validated.

    Keys follow the schema's sections (checked against it, so a typo is an unknown key);
    below a ``dict`` field any key goes (``model.overrides.base_filters``).

    Args:
        config: The base config, an instance of a schema's root dataclass (left unchanged).
        overrides: ``{"training.steps": 100, "model.overrides.base_filters": 8}`` or the CLI form
            ``["training.steps=100"]`` (values parsed as YAML).
        from_dict: Builds and validates the root from the overridden data.

    Raises:
        ConfigError: Unknown key (listing the valid ones), wrong type or invalid value; the
            message starts with ``--set KEY`` or ``--set overrides``.
    """
    items = (
        list(overrides.items())
        if isinstance(overrides, Mapping)
        else [parse_override(o) for o in overrides]
    )
    data = to_dict(config)
    for key, value in items:
        _set_dotted(data, key, value, type(config))
    # The base config was valid, so whatever fails now came from the overrides.
    return from_dict(data, "--set overrides")


def _set_dotted(data: dict[str, Any], key: str, value: Any, root: type) -> None:
    parts = key.split(".")
    node: Any = data
    cls: Any = root
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        last = i == len(parts) - 1
        if cls is not None:
            hints = _hints(cls)
            if part not in hints:
                names = [f.name for f in dataclasses.fields(cls)]
                raise unknown_key(where, part, names, f"--set {key}")
            tp = hints[part]
            cls = tp if dataclasses.is_dataclass(tp) else None
        elif not isinstance(node, dict):
            raise ConfigError(f"{where} is not a mapping", f"--set {key}")
        if last:
            node[part] = copy.deepcopy(value)
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
