"""Typed config sections: dataclasses built from plain YAML data, every mistake a dotted-path error.

A section is a dataclass deriving from :class:`Section` whose fields are declared with
:func:`option` (a default, or none for a required key; choices; a range). Its
:meth:`Section.from_dict` checks keys (an unknown one gets a "did you mean" hint), types, ranges
and choices, and :meth:`Section.to_dict` gives back plain data, so ``from_dict(d).to_dict() ==
d`` for a complete ``d``. YAML is read with a safe loader that refuses a key given twice, and
``--set dotted.key=value`` overrides are applied to the parsed data before it is checked. Every
mistake is one :class:`ConfigError`. Nothing here knows what a job's sections are.
"""

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Hashable, Mapping
from dataclasses import MISSING, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A mistake in a job configuration, naming the dotted key and (once known) the file.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    key : str, default=''
        The dotted path of the offending key, e.g. ``'model.n_components'``.
    file : str, optional
        The configuration file the key came from.
    """

    def __init__(self, message, key="", file=None):
        self.message = message
        self.key = key
        self.file = file
        super().__init__(message)

    def __str__(self):
        parts = [part for part in (self.file, self.key) if part]
        return ": ".join(parts + [self.message])

    def in_file(self, file):
        """Return this error attributed to ``file`` (keeps a file already named)."""
        return ConfigError(self.message, self.key, self.file or str(file))


def option(default=MISSING, *, choices=None, low=None, high=None, low_open=False):
    """Declare a config field: its default (none means required), allowed choices and range."""
    metadata = {"choices": choices, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    if isinstance(default, type) and issubclass(default, Section):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 6, 6, 200


def shown(value):
    """``repr(value)``, shortened: YAML values can nest deeply, or be huge through aliases."""
    return _SHORT.repr(value)


def join_key(prefix, name):
    """The dotted path of key ``name`` inside the section at ``prefix`` ('' at the top)."""
    return f"{prefix}.{name}" if prefix else str(name)


def _type_name(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, Section):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _type_error(hint, value, key):
    return ConfigError(f"expected {_type_name(hint)}, got {shown(value)} "
                       f"({type(value).__name__})", key)


def _scalar(value, hint, key):
    """Check a YAML scalar against int, float, bool or str (a float must be finite)."""
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot) as a string; accept what float() accepts.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        type(None): value is None,
    }[hint]
    if not ok:
        raise _type_error(hint, value, key)
    if hint is not float:
        return value
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"too large for a float: {shown(value)}", key) from None
    if not math.isfinite(number):
        raise ConfigError(f"must be a finite number, got {shown(value)}", key)
    return number


def _convert(value, hint, key):
    """Return ``value`` checked (and nested sections built) against the type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if value is None and type(None) in members:
            return None
        for member in members:
            try:
                return _convert(value, member, key)
            except ConfigError as error:
                if error.key != key:  # a mistake inside a nested value: report that one
                    raise
        raise _type_error(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected {_type_name(hint)}, got {shown(value)}", key)
        (item_hint,) = typing.get_args(hint)
        return [_convert(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint.from_dict(value, key)
    return _scalar(value, hint, key)


def _check_value(value, metadata, key):
    """Check choices and range of a scalar, or of each item of a list."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, metadata, f"{key}[{i}]")
        return
    if value is None or isinstance(value, (bool, Section)):
        return
    choices, low, high = metadata.get("choices"), metadata.get("low"), metadata.get("high")
    if choices is not None and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"{shown(value)} is not one of {', '.join(map(repr, choices))}"
                          f"{suggestion}", key)
    if low is not None and not (value > low if metadata.get("low_open") else value >= low):
        relation = ">" if metadata.get("low_open") else ">="
        raise ConfigError(f"must be {relation} {low}, got {shown(value)}", key)
    if high is not None and not value <= high:
        raise ConfigError(f"must be <= {high}, got {shown(value)}", key)


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class Section:
    """Base of the config sections: building from, and turning back into, plain data."""

    @classmethod
    def from_dict(cls, data, key=""):
        """Build the section from a mapping, checking every key; ``key`` is its dotted path."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of keys, got {shown(data)}", key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in data:
            if name not in fields:
                raise _unknown_key(name, fields, key)
        hints = typing.get_type_hints(cls)
        values = {}
        for name, spec in fields.items():
            field_key = join_key(key, name)
            if name in data:
                values[name] = _convert(data[name], hints[name], field_key)
                _check_value(values[name], spec.metadata, field_key)
            elif spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError("missing required key", field_key)
        section = cls(**values)
        section.check(key)
        return section

    def to_dict(self):
        """Return the section as plain data (dicts, lists and scalars)."""
        return {spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)}

    def check(self, key):
        """Check rules that involve more than one key of the section (none by default)."""


def _unknown_key(name, fields, key):
    valid = sorted(fields)
    hint = difflib.get_close_matches(str(name), valid, n=1)
    suggestion = f"did you mean {hint[0]!r}? " if hint else ""
    return ConfigError(f"unknown key; {suggestion}valid keys here: {', '.join(valid)}",
                       join_key(key, name))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    Merge keys (``<<: *defaults``) are left to PyYAML, whose keys they may override; so are
    unhashable keys, which it reports.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                break
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key)} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text, key=""):
    """Parse YAML text with the safe loader; a syntax error becomes a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"not valid YAML: {' '.join(str(error).split())}", key) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", key) from None
    except ValueError as error:  # a scalar PyYAML cannot build: a date out of range, a huge int
        raise ConfigError(f"not valid YAML: {error}", key) from None


def apply_override(data, assignment):
    """Set one ``dotted.key=value`` (value parsed as a YAML scalar) in nested dicts, in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}", "--set")
    value = parse_yaml(text, key) if text.strip() else None
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: it is {shown(child)}, not a section",
                              ".".join(parts[: depth + 1]))
        node = child
    node[parts[-1]] = value


def load_section(cls, path, overrides=()):
    """Read the YAML file at ``path``, apply ``overrides`` and build the Section ``cls`` from it.

    Raises
    ------
    ConfigError
        For any mistake, naming the dotted key and the file.
    """
    try:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read the job file: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"the job file is not UTF-8 text ({error.reason} at byte "
                              f"{error.start})") from None
        data = parse_yaml(text)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping of sections at the top, got {shown(data)}")
        for assignment in overrides:
            apply_override(data, assignment)
        return cls.from_dict(data)
    except ConfigError as error:
        raise error.in_file(path) from None
