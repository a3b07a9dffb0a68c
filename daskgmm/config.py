"""The job schema: one typed section per part of a job, validated up front, dotted-path errors.

A job file is YAML read with a safe loader. Every section is a dataclass; :meth:`Section.from_dict`
checks keys (unknown ones get a "did you mean" hint), types, ranges and choices, and
:meth:`Section.to_dict` gives back plain data, so ``JobConfig.from_dict(d).to_dict() == d`` for a
complete ``d``. Every mistake is one :class:`ConfigError` naming the dotted key and the file.

Only the shape of the file is checked here. Whether the named input exists, or the cluster kind
is known, is checked by the pipeline and :mod:`daskgmm.cluster` before any work starts.
"""

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Hashable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import yaml

from .options import (
    COVARIANCE_TYPES,
    CRITERIA,
    GENERATORS,
    IDENTITIES,
    INIT_METHODS,
    INPUT_FORMATS,
    PIPELINES,
)


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


def _shown(value):
    """``repr(value)``, shortened: YAML values can nest deeply, or be huge through aliases."""
    return _SHORT.repr(value)


def _join(prefix, name):
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
    return ConfigError(f"expected {_type_name(hint)}, got {_shown(value)} "
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
        raise ConfigError(f"too large for a float: {_shown(value)}", key) from None
    if not math.isfinite(number):
        raise ConfigError(f"must be a finite number, got {_shown(value)}", key)
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
            raise ConfigError(f"expected {_type_name(hint)}, got {_shown(value)}", key)
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
        raise ConfigError(f"{_shown(value)} is not one of {', '.join(map(repr, choices))}"
                          f"{suggestion}", key)
    if low is not None and not (value > low if metadata.get("low_open") else value >= low):
        relation = ">" if metadata.get("low_open") else ">="
        raise ConfigError(f"must be {relation} {low}, got {_shown(value)}", key)
    if high is not None and not value <= high:
        raise ConfigError(f"must be <= {high}, got {_shown(value)}", key)


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
            raise ConfigError(f"expected a mapping of keys, got {_shown(data)}", key)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in data:
            if name not in fields:
                raise _unknown_key(name, fields, key)
        hints = typing.get_type_hints(cls)
        values = {}
        for name, spec in fields.items():
            field_key = _join(key, name)
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
                       _join(key, name))


@dataclass
class InputConfig(Section):
    """Where the data comes from.

    ``path`` is a Zarr store (local path or fsspec URL), a folder or glob of PNG/JPEG/TIFF
    images, or CSV/Parquet files (a path or glob). ``format: auto`` tells them apart by name.
    """

    path: str = option()
    array: str | None = None
    format: str = option("auto", choices=INPUT_FORMATS)
    columns: list[str] | None = None
    channel_axis: int = -1
    nodata: float | None = None
    mask: str | None = None
    generate: str | None = option(None, choices=GENERATORS)
    ingest_to: str | None = None

    def check(self, key):
        if self.columns is not None and not self.columns:
            raise ConfigError("must name at least one column, or be null for all", f"{key}.columns")


@dataclass
class ModelConfig(Section):
    """The GaussianMixture to fit, or ``load``: a saved model to apply instead of fitting."""

    load: str | None = None
    n_components: int | None = option(None, low=1)
    covariance_type: str = option("full", choices=COVARIANCE_TYPES)
    tol: float = option(1e-3, low=0.0)
    reg_covar: float = option(1e-6, low=0.0)
    max_iter: int = option(100, low=0)
    n_init: int = option(1, low=1)
    init_params: str = option("kmeans", choices=INIT_METHODS)
    random_state: int = option(0, low=0, high=2**32 - 1)
    persist: bool = False
    split_every: int = option(8, low=2)


@dataclass
class TrainingConfig(Section):
    """Which rows (or valid pixels) the model is fitted on, and how they are scaled."""

    sample: int | None = option(None, low=1)
    standardize: bool = False


@dataclass
class OutputConfig(Section):
    """The job's output folder and what goes in it."""

    path: str = option()
    overwrite: bool = False
    probabilities: bool = False
    log_likelihood: bool = False
    preview: bool = True
    preview_channels: list[int] | None = None

    def check(self, key):
        if "://" in self.path:
            raise ConfigError("must be a local path (outputs are committed by an atomic rename); "
                              f"got {_shown(self.path)}", f"{key}.path")
        if Path(self.path).name in ("", ".."):  # the job would replace a parent folder
            raise ConfigError(f"must name the output folder itself, got {_shown(self.path)}",
                              f"{key}.path")
        if self.preview_channels is not None and len(self.preview_channels) not in (1, 3):
            raise ConfigError("must list 1 (grey) or 3 (red, green, blue) channel indices, got "
                              f"{_shown(self.preview_channels)}", f"{key}.preview_channels")


@dataclass
class CheckpointConfig(Section):
    """Saving the EM state while fitting, so ``--resume`` can continue after a crash."""

    enabled: bool = True
    every: int = option(1, low=1)


@dataclass
class BatchConfig(Section):
    """Scheduled batches (pipeline segment): each run processes only the inputs not yet done.

    The output is then a long-lived store that every run adds to: one result folder per input,
    a manifest of what is done, and a log of the runs. An input is known by its name and its
    ``identity``: ``stat`` (size and modification time) or ``content`` (a SHA-256 of its bytes);
    a changed input is processed again. ``max_inputs`` bounds the inputs one run takes on.
    ``channels`` is how many every input must have (null: the loaded model's, else that of most
    inputs of the store's first run). Runs at the same time share the inputs through a lock
    file, taken over when it is older than ``lock_timeout`` seconds or its process is gone; the
    inputs a run claimed are claimed afresh when it has recorded no progress for
    ``claim_timeout`` seconds or its process is gone.
    """

    identity: str = option("stat", choices=IDENTITIES)
    max_inputs: int | None = option(None, low=1)
    channels: int | None = option(None, low=1)
    lock_timeout: float = option(60.0, low=0.0, low_open=True)
    claim_timeout: float = option(3600.0, low=0.0, low_open=True)


@dataclass
class ClusterConfig(Section):
    """Where the Dask work runs; ``kind`` names an entry of :data:`daskgmm.cluster.KINDS`.

    ``local`` sizes a LocalCluster (``n_workers``, ``threads_per_worker``, ``memory_limit``:
    ``auto`` if not set, ``processes``: true if not set); ``address`` joins a running
    scheduler. ``slurm``, ``pbs`` and ``kubernetes`` start one worker per batch job or pod,
    each with ``cores`` threads and ``memory``; ``queue``, ``account`` and ``walltime`` go to
    the batch system, ``image``, ``namespace`` and ``spec`` (a DaskCluster manifest used as the
    template) to the Dask operator. ``n_workers`` is a fixed size; ``minimum``/``maximum``
    scale adaptively instead. Which kinds use which key is checked by
    :func:`daskgmm.cluster.check_cluster`.
    """

    kind: str = "local"
    address: str | None = None
    n_workers: int | None = option(None, low=1)
    minimum: int | None = option(None, low=0)
    maximum: int | None = option(None, low=1)
    threads_per_worker: int | None = option(None, low=1)
    memory_limit: str | int | None = None
    processes: bool | None = None
    dashboard_address: str | None = ":8787"
    timeout: float = option(30.0, low=0.0, low_open=True)
    cores: int | None = option(None, low=1)
    memory: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    image: str | None = None
    namespace: str | None = None
    spec: str | None = None

    @classmethod
    def from_dict(cls, data, key=""):
        """As :meth:`Section.from_dict`; an ``address`` without a ``kind`` means kind address."""
        if isinstance(data, Mapping) and data.get("address") and "kind" not in data:
            data = {**data, "kind": "address"}
        return super().from_dict(data, key)

    @property
    def adaptive(self):
        """Whether the worker count follows the load between ``minimum`` and ``maximum``."""
        return self.minimum is not None or self.maximum is not None

    def check(self, key):
        if self.adaptive and self.n_workers is not None:
            raise ConfigError("set either n_workers (a fixed size) or minimum/maximum "
                              "(adaptive scaling), not both", _join(key, "n_workers"))
        if self.minimum is not None and self.maximum is None:
            raise ConfigError("missing required key (adaptive scaling from cluster.minimum "
                              "needs an upper bound)", _join(key, "maximum"))
        if self.adaptive and (self.minimum or 0) > self.maximum:
            raise ConfigError(f"must be <= cluster.maximum ({self.maximum}), got "
                              f"{self.minimum}", _join(key, "minimum"))


@dataclass
class SelectConfig(Section):
    """The grid the ``select`` pipeline fits, and the criterion it ranks by."""

    n_components: list[int] = option([1, 2, 3, 4, 5, 6], low=1)
    covariance_types: list[str] = option(["full", "diag"], choices=COVARIANCE_TYPES)
    criterion: str = option("bic", choices=CRITERIA)

    def check(self, key):
        for name in ("n_components", "covariance_types"):
            values = getattr(self, name)
            if not values:
                raise ConfigError("must list at least one value", f"{key}.{name}")
            if len(set(values)) != len(values):
                raise ConfigError(f"lists a value twice: {_shown(values)}", f"{key}.{name}")


@dataclass
class AnomalyConfig(Section):
    """The threshold under which a row's log-likelihood flags it, and the data to score."""

    quantile: float | None = option(None, low=0.0, high=1.0, low_open=True)
    threshold: float | None = None
    data: InputConfig | None = None

    def check(self, key):
        if (self.quantile is None) == (self.threshold is None):
            raise ConfigError("set exactly one of quantile (of the training scores) or "
                              "threshold (a log-likelihood value)", f"{key}.quantile")


@dataclass
class JobConfig(Section):
    """A whole job: the pipeline, its input, model, output and cluster."""

    pipeline: str = option(choices=PIPELINES)
    input: InputConfig = option()
    output: OutputConfig = option()
    model: ModelConfig = option(ModelConfig)
    training: TrainingConfig = option(TrainingConfig)
    checkpoint: CheckpointConfig = option(CheckpointConfig)
    cluster: ClusterConfig = option(ClusterConfig)
    select: SelectConfig | None = None
    anomaly: AnomalyConfig | None = None
    batch: BatchConfig | None = None

    def check(self, key):
        for name, pipeline in (("select", "select"), ("anomaly", "anomaly"),
                               ("batch", "segment")):
            if getattr(self, name) is not None and self.pipeline != pipeline:
                raise ConfigError(f"applies only to pipeline: {pipeline} (this job runs "
                                  f"{self.pipeline})", name)
        if self.pipeline == "anomaly" and self.anomaly is None:
            raise ConfigError("missing required key (pipeline anomaly needs a quantile or "
                              "threshold)", "anomaly")
        self._check_model()
        if self.batch is not None:
            self._check_batch()

    def _check_batch(self):
        """Keys whose single-shot meaning has no place in a store that every run adds to."""
        unused = {
            "output.overwrite": (self.output.overwrite, "a batch store is kept and added to; "
                                 "delete it to start over"),
            "input.mask": (self.input.mask, "mark no-data pixels with input.nodata instead"),
            "input.array": (self.input.array, "every array of the Zarr group is an input"),
            "input.ingest_to": (self.input.ingest_to, "batch inputs are read where they are"),
        }
        for name, (value, reason) in unused.items():
            if value:
                raise ConfigError(f"not used in batch mode ({reason})", name)

    def _check_model(self):
        model = self.model
        if self.pipeline == "select":
            if model.load is not None:
                raise ConfigError("pipeline select fits its own models; remove model.load",
                                  "model.load")
            if model.n_components is not None:
                raise ConfigError("not used by pipeline select; list the candidates in "
                                  "select.n_components", "model.n_components")
            return
        if self.pipeline == "predict" and model.load is None:
            raise ConfigError("missing required key (pipeline predict applies a saved model)",
                              "model.load")
        if model.load is None and model.n_components is None:
            raise ConfigError("missing required key (or set model.load to apply a saved model)",
                              "model.n_components")

    @property
    def checkpoint_path(self):
        """Where the EM state is saved while fitting: a sibling of the output folder."""
        output = Path(self.output.path)
        return output.with_name(output.name + ".checkpoint")


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
                    None, None, f"key {_shown(key)} appears twice", key_node.start_mark)
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
            raise ConfigError(f"cannot set {key}: it is {_shown(child)}, not a section",
                              ".".join(parts[: depth + 1]))
        node = child
    node[parts[-1]] = value


def load_config(path, overrides=()):
    """Read, override and validate a job file.

    Parameters
    ----------
    path : str or Path
        The YAML job file.
    overrides : iterable of str
        ``dotted.key=value`` assignments applied on top of the file (``--set``).

    Returns
    -------
    JobConfig

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
            raise ConfigError(f"expected a mapping of sections at the top, got {_shown(data)}")
        for assignment in overrides:
            apply_override(data, assignment)
        return JobConfig.from_dict(data)
    except ConfigError as error:
        raise error.in_file(path) from None
