"""What the pipelines share: inputs checked and opened, the model fitted or loaded, outputs staged.

A pipeline module has ``prepare(config, resume=False) -> Prepared``, which checks everything
that can be checked without doing work (raising :class:`~daskgmm.config.ConfigError`) and
describes the plan, and ``run(prepared) -> dict``, which does the work on the current Dask client
and returns a summary. All reading and writing goes through :mod:`daskgmm.store`.
"""

import glob
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dask
import dask.array as da
import numpy as np

import daskgmm
from daskgmm import GaussianMixture, atomic, store
from daskgmm.config import ConfigError
from daskgmm.guard import Guard
from daskgmm.sample_data import SAMPLE, sample_layout, write_sample

from .training import (
    Checkpoint,
    Standardizer,
    fingerprint,
    fit_mixture,
    sample_rows,
    transform,
)

logger = logging.getLogger(__name__)

RESULT = "result.zarr"
MODEL = "model.zarr"
# Kinds of folder a job writes, as their ownership markers name them.
OUTPUT, INGEST = "output", "ingest"


def compute(*collections, label=None):
    """Compute Dask collections on the job's client (a progress bar on a terminal).

    Returns
    -------
    tuple
        One result per collection.
    """
    try:
        from distributed import get_client, progress

        client = get_client()
    except (ImportError, ValueError):
        return dask.compute(*collections)
    started = time.perf_counter()
    futures = client.compute(list(collections))
    if label and sys.stdout.isatty():
        progress(futures)
    results = tuple(client.gather(futures))
    if label:
        logger.info("%s (%.1fs)", label, time.perf_counter() - started)
    return results


# ------------------------------------------------------------------ inputs


@dataclass
class Creates:
    """A path a source writes before it is read: an ingest store, or generated data."""

    path: str
    key: str
    kind: str
    replace: bool

    def check(self, guard):
        """Clear the path with the job's guard; return where to write."""
        return guard.check(self.path, self.key, self.kind, replace=self.replace)


@dataclass
class Source:
    """One input, described before any work; :meth:`open` returns its lazy Dask array.

    ``opener(guard)`` returns the array; a source that writes first (``creates``) clears that
    path with the guard.
    """

    key: str
    path: str
    kind: str
    shape: tuple
    dtype: np.dtype
    opener: object
    chunks: tuple = None
    creates: Creates = None

    def open(self, guard=None):
        """Return the input as a Dask array (ingesting or generating it first if needed)."""
        array = self.opener(guard)
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks
        return array

    def describe(self):
        """One line for the plan."""
        shape = "(" + ", ".join("?" if size is None else str(size) for size in self.shape) + ")"
        if None in self.shape:
            shape += " (rows counted when read)"
        chunks = "" if self.chunks is None else f" chunks {tuple(c[0] for c in self.chunks)}"
        return f"{self.key}: {self.path} [{self.kind}] shape {shape} {self.dtype}{chunks}"

    def record(self):
        """What the output records about its input: path, kind, shape, chunks, dtype."""
        return {"path": self.path, "kind": self.kind, "shape": list(self.shape),
                "chunks": [list(c) for c in self.chunks or ()], "dtype": str(self.dtype)}


def _is_glob(path):
    return any(char in path for char in "*?[")


def _input_format(config, key):
    """The input's format: as configured, or told from its name."""
    if config.format != "auto":
        return config.format
    path = config.path
    if "://" in path or path.rstrip("/").endswith(".zarr") or store.is_zarr_store(path):
        return "zarr"
    if Path(path).is_dir():
        return "images"
    matches = sorted(glob.glob(path)) if _is_glob(path) else [path]
    if not matches or not (_is_glob(path) or Path(path).exists()):
        raise ConfigError(f"no such file, folder or Zarr store: {path!r}", f"{key}.path")
    suffix = Path(matches[0]).suffix.lower()
    if suffix in store.IMAGE_SUFFIXES:
        return "images"
    if suffix in store.TABLE_SUFFIXES:
        return store.TABLE_SUFFIXES[suffix]
    raise ConfigError(f"cannot tell the format of {path!r} from its name; set {key}.format to "
                      "zarr, images, csv or parquet", f"{key}.format")


def _files(config, key, suffixes, what):
    path = Path(config.path)
    if _is_glob(config.path):
        files = sorted(glob.glob(config.path))
    elif path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in suffixes)
    else:
        files = [config.path] if path.exists() else []
    if not files:
        raise ConfigError(f"no {what} files at {config.path!r}", f"{key}.path")
    return files


def _zarr_source(config, key):
    try:
        array = store.open_array(config.path, config.array)
    except FileNotFoundError:
        raise ConfigError(f"no Zarr store at {config.path!r}", f"{key}.path") from None
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.array" if config.array else f"{key}.path") from None
    except Exception as error:  # zarr's own errors for a folder that holds no Zarr metadata
        raise ConfigError(f"cannot open {config.path!r} as Zarr ({error})", f"{key}.path") \
            from None
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{config.path!r} holds {array.dtype} values; need numbers",
                          f"{key}.path")
    return Source(key, config.path, "zarr", array.shape, array.dtype, lambda guard: array,
                  array.chunks)


def _image_source(config, key, ingest_to):
    files = _files(config, key, store.IMAGE_SUFFIXES, "PNG/JPEG/TIFF")
    try:
        layouts = [store.image_file_info(f) for f in files]
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.path") from None
    for name, layout in zip(files, layouts):
        if layout != layouts[0]:
            raise ConfigError(f"images must share one size and pixel type: {files[0]} is "
                              f"{layouts[0][0]} {layouts[0][1]}, {name} is {layout[0]} "
                              f"{layout[1]}", f"{key}.path")
    shape, dtype = layouts[0]
    creates = Creates(config.ingest_to or ingest_to, f"{key}.ingest_to", INGEST, replace=True)
    return Source(key, config.path, f"{len(files)} image file(s), ingested to {creates.path}",
                  (len(files),) + shape, dtype,
                  lambda guard: _ingested(files, shape, dtype, creates.check(guard)),
                  creates=creates)


def _ingested(files, shape, dtype, target):
    """The image files as a Zarr array at ``target``, written unless it holds these very files.

    ``target`` is cleared by the job's guard: it is new, or a store daskgmm ingested before.
    """
    signature = [[str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns]
                 for f in files]
    if not target.exists() or store.read_attrs(target).get("sources") != signature:
        images = store.open_image_files(files, shape, dtype)
        store.write_array(target, images, INGEST, attrs={"sources": signature},
                          compute=lambda write: compute(write, label=f"ingesting to {target}"))
    return store.open_array(target)


def _table_source(config, key, kind):
    files = _files(config, key, tuple(store.TABLE_SUFFIXES), "CSV/Parquet")
    try:
        frame = store.open_table(files, kind, config.columns)
    except ImportError as error:
        raise ConfigError(str(error), f"{key}.format") from None
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.columns") from None
    except OSError as error:
        raise ConfigError(f"cannot read {config.path!r}: {error}", f"{key}.path") from None
    dtype = frame.to_dask_array().dtype
    label = f"{kind}, {len(files)} file(s), columns {', '.join(map(str, frame.columns))}"
    return Source(key, config.path, label, (None, len(frame.columns)), dtype,
                  lambda guard: store.table_rows(frame))


def _generated_source(config, key):
    shape, dtype = sample_layout(config.generate)
    creates = Creates(config.path, f"{key}.path", SAMPLE, replace=False)

    def generate(guard):
        path = creates.check(guard)
        write_sample(config.generate, path,
                     compute=lambda write: compute(write, label=f"generating {config.path}"))
        return store.open_array(path)

    return Source(key, config.path, f"{config.generate}, generated now", shape, dtype, generate,
                  creates=creates)


def resolve_source(config, key, ingest_to=None):
    """Check an ``input`` section and describe its data without reading it.

    Parameters
    ----------
    config : InputConfig
    key : str
        The section's dotted path, for messages.
    ingest_to : str, optional
        Where image files are ingested when ``ingest_to`` is not configured.

    Returns
    -------
    Source
    """
    if config.generate is not None and not Path(config.path).exists():
        return _generated_source(config, key)
    kind = _input_format(config, key)
    if kind == "zarr":
        return _zarr_source(config, key)
    if kind == "images":
        return _image_source(config, key, ingest_to)
    return _table_source(config, key, kind)


def resolve_table(config, key):
    """As :func:`resolve_source`, for an input that must be 2-D ``(rows, features)``."""
    source = resolve_source(config, key)
    if len(source.shape) != 2:
        raise ConfigError(f"expected a 2-D array (rows, features), got shape "
                          f"{tuple(source.shape)}; for images use pipeline: segment",
                          f"{key}.path")
    return source


# ------------------------------------------------------------------ model


@dataclass
class Plan:
    """What a job will do, for ``--dry-run`` and the start of a run."""

    pipeline: str
    inputs: list
    steps: list
    outputs: list


@dataclass
class Prepared:
    """A checked job: its config, inputs, saved model (if applied) and checkpoint."""

    config: object
    sources: dict
    checkpoint: Checkpoint
    guard: Guard
    loaded: GaussianMixture = None
    scaler: Standardizer = None
    resumed: object = None
    plan: Plan = None
    extra: dict = field(default_factory=dict)
    #: The summary of a job found to have nothing to do: the runner then opens no cluster.
    nothing_to_do: dict = None

    @property
    def n_components(self):
        """Components of the model the job applies: the loaded one's, or ``model``'s."""
        return self.loaded.n_components if self.loaded else self.config.model.n_components


def _load_model(config, n_features):
    """The model (and its scaling) saved at ``model.load``, checked against the input."""
    path = config.load
    try:
        model = GaussianMixture.load(path)
    except FileNotFoundError:
        raise ConfigError(f"no saved model at {path!r}", "model.load") from None
    except Exception as error:
        raise ConfigError(f"{path!r} is not a saved daskgmm model ({error})", "model.load") \
            from None
    if n_features is not None and model.n_features_in_ != n_features:
        raise ConfigError(f"the model at {path!r} expects {model.n_features_in_} features, the "
                          f"input has {n_features}", "model.load")
    return model, Standardizer.from_attrs(store.read_model_attrs(path).get("preprocessing"))


def job_guard(config):
    """The job's :class:`~daskgmm.guard.Guard`: every path it reads, from its config."""
    inputs = {"input.path": config.input.path, "input.mask": config.input.mask,
              "model.load": config.model.load}
    if config.input.generate is not None and not Path(config.input.path).exists():
        del inputs["input.path"]  # written by the job first (a Creates of its source)
    if config.anomaly is not None and config.anomaly.data is not None:
        inputs.update({"anomaly.data.path": config.anomaly.data.path,
                       "anomaly.data.mask": config.anomaly.data.mask})
    return Guard(inputs)


def check_output(config, guard):
    """Clear ``output.path`` with the job's guard; return the real path to write.

    Only a previous job's output (or an empty folder) is replaced, and only with
    ``output.overwrite``: a folder holding anything else is never deleted, whatever the config
    says. A batch job's output is a store that every run adds to (see :mod:`.batch`), never
    replaced; the store checks what it holds.

    Raises
    ------
    ConfigError
        If the output may not be written (see :mod:`daskgmm.guard`).
    """
    path = config.output.path
    if config.batch is not None:
        return guard.check(path, "output.path", "batch-store", grows=True)
    return guard.check(path, "output.path", OUTPUT, replace=config.output.overwrite,
                       empty_ok=True,
                       fix="set output.overwrite: true to replace it (the old output stays "
                           "until the new one is complete) or choose another path")


def prepare_job(config, sources, n_features, resume, fit_sections=()):
    """Clear every path the job writes, load ``model.load`` and find a checkpoint to resume.

    Parameters
    ----------
    config : JobConfig
    sources : dict of str to Source
    n_features : int
        Features (channels) of the input, checked against a loaded model.
    resume : bool
        Continue from the checkpoint if there is one.
    fit_sections : tuple of Section
        Sections besides input, model and training that change what is fitted.
    """
    guard = job_guard(config)
    check_output(config, guard)
    for source in sources.values():
        if source.creates is not None:
            source.creates.check(guard)
    loaded, scaler = (None, None) if config.model.load is None else \
        _load_model(config.model, n_features)
    sections = (config.input, config.model, config.training) + tuple(fit_sections)
    checkpoint = Checkpoint(str(config.checkpoint_path), config.checkpoint.every,
                            fingerprint(*sections), _checkpoints(config, loaded), guard)
    if checkpoint.enabled:
        checkpoint.clear()
    resumed = checkpoint.load() if resume else None
    return Prepared(config, sources, checkpoint, guard, loaded, scaler, resumed)


def _checkpoints(config, loaded):
    """Whether the job saves a checkpoint: only when it fits, and not in batch mode (a killed
    run's inputs are claimed afresh and refitted)."""
    return config.checkpoint.enabled and loaded is None and config.batch is None


def describe_fit(prepared, rows_name="rows"):
    """Plan lines for how the model is obtained."""
    config = prepared.config
    if prepared.loaded is not None:
        model = prepared.loaded
        scaled = ", standardized as when it was fitted" if prepared.scaler else ""
        return [f"apply the model saved at {config.model.load} ({model.n_components} "
                f"{model.covariance_type} components{scaled})"]
    model = config.model
    sample = config.training.sample
    rows = f"all {rows_name}" if sample is None else f"about {sample} random {rows_name}"
    lines = [f"fit GaussianMixture(n_components={model.n_components}, covariance_type="
             f"{model.covariance_type!r}, max_iter={model.max_iter}, tol={model.tol}, n_init="
             f"{model.n_init}, init_params={model.init_params!r}, random_state="
             f"{model.random_state}) on {rows}"
             + (", standardized per feature" if config.training.standardize else "")]
    return lines + [describe_checkpoint(prepared)]


def describe_checkpoint(prepared, when=None):
    """Plan line for checkpointing and resuming (saved ``when``: every few iterations)."""
    checkpoint = prepared.checkpoint
    if not checkpoint.enabled:
        return "checkpoint: off"
    when = when or f"every {checkpoint.every} iteration(s)"
    line = f"checkpoint: {checkpoint.path}, {when}"
    if prepared.resumed is not None:
        line += f"; resuming from it ({_resume_point(prepared.resumed)})"
    return line


def _resume_point(saved):
    if isinstance(saved, tuple):  # a grid's progress
        return f"{len(saved[1].get('rows', []))} model(s) already fitted"
    run = saved.current
    iteration = f", iteration {run.n_iter}" if run is not None else " (starting)"
    return f"initialisation {saved.init + 1}{iteration}"


@dataclass
class Fitted:
    """The job's model, the scaling of its features, and the rows it was fitted on (or None)."""

    model: GaussianMixture
    scaler: Standardizer
    rows: object = None

    def features(self, rows):
        """Rows as the model sees them (scaled when the model was fitted on scaled rows)."""
        return transform(self.scaler, rows)


def finite_rows(rows):
    """Return which rows hold only finite values, or None when all do, and how many do not.

    Rows with a NaN or an infinity are no data: they take no part in fitting, and get the
    no-data label and a NaN score. Only a float table can hold them; counting them takes one
    pass over it.

    Parameters
    ----------
    rows : dask.array.Array of shape (n_rows, n_features)

    Returns
    -------
    valid : dask.array.Array of shape (n_rows,) of bool, or None
    n_non_finite : int
    """
    if rows.dtype.kind not in "fc":
        return None, 0
    valid = da.isfinite(rows).all(axis=1)
    (n_non_finite,) = compute((~valid).sum(), label="counted rows with NaN or infinite values")
    if not n_non_finite:
        return None, 0
    logger.warning("%d of %d rows hold NaN or infinite values: they are left out of fitting and "
                   "get the no-data label and a NaN score", n_non_finite, rows.shape[0])
    return valid, int(n_non_finite)


def training_rows(config, rows, valid=None):
    """The rows (of the valid ones) to fit on, drawn as ``training.sample`` says."""
    return sample_rows(rows, valid, config.training.sample, config.model.random_state)


def training_features(config, rows, valid=None):
    """Return the rows to fit on, their scaling (or None) and the scaled rows.

    Parameters
    ----------
    config : JobConfig
    rows : dask.array.Array of shape (n_rows, n_features)
    valid : dask.array.Array of shape (n_rows,) of bool, optional
        Rows to leave out of fitting are False.
    """
    fit_rows = training_rows(config, rows, valid)
    scaler = Standardizer.fit(fit_rows, compute) if config.training.standardize else None
    X = transform(scaler, fit_rows)
    return fit_rows, scaler, (X.persist() if config.model.persist else X)


def fit_or_load(prepared, rows, valid=None):
    """Return the loaded model, or fit one (checkpointed, resumed if asked) on ``rows``.

    Parameters are those of :func:`training_features`, after the :class:`Prepared` job.
    """
    if prepared.loaded is not None:
        return Fitted(prepared.loaded, prepared.scaler)
    fit_rows, scaler, X = training_features(prepared.config, rows, valid)
    model = fit_mixture(X, prepared.config.model, prepared.checkpoint, prepared.resumed)
    return Fitted(model, scaler, fit_rows)


def where_valid(array, valid, fill):
    """``array`` where ``valid`` (rows), ``fill`` elsewhere (lazily)."""
    condition = valid if array.ndim == 1 else valid[:, None]
    return da.where(condition, array, np.asarray(fill, dtype=array.dtype))


def prediction_arrays(fitted, rows, output, valid=None):
    """Lazy per-row outputs: ``labels``, and ``probabilities``/``log_likelihood`` when asked.

    Parameters
    ----------
    fitted : Fitted
    rows : dask.array.Array of shape (n_rows, n_features)
    output : OutputConfig
    valid : dask.array.Array of shape (n_rows,) of bool, optional
        Rows without data get the no-data label and NaN.

    Returns
    -------
    arrays : dict of str to dask.array.Array
        labels (smallest unsigned dtype), probabilities (n_rows, K) and log_likelihood (n_rows,)
        in float32.
    fill_values : dict of str to scalar
    """
    model = fitted.model
    X = fitted.features(rows if valid is None else where_valid(rows, valid, 0))
    dtype = label_dtype(model.n_components)
    arrays = {"labels": model.predict(X).astype(dtype)}
    if output.probabilities:
        arrays["probabilities"] = model.predict_proba(X).astype(np.float32)
    if output.log_likelihood:
        arrays["log_likelihood"] = model.score_samples(X).astype(np.float32)
    if valid is None:
        return arrays, {}
    fills = {"labels": no_data_label(dtype), "probabilities": np.nan, "log_likelihood": np.nan}
    return ({name: where_valid(array, valid, fills[name]) for name, array in arrays.items()},
            {name: fills[name] for name in arrays})


def _dims(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def describe_predictions(output, shape, n_components):
    """Plan lines for the arrays of :func:`prediction_arrays` (each row shaped ``shape``)."""
    lines = [f"result.zarr/labels {_dims(shape)} {label_dtype(n_components)}"]
    if output.probabilities:
        lines.append(f"result.zarr/probabilities {_dims(shape + (n_components,))} float32")
    if output.log_likelihood:
        lines.append(f"result.zarr/log_likelihood {_dims(shape)} float32")
    return lines + ["model.zarr"]


def component_counts(labels, n_components):
    """Lazy number of rows (pixels) given each label 0..K-1."""
    top = int(np.iinfo(labels.dtype).max) + 1
    return da.bincount(labels.ravel(), minlength=top)[:n_components]


def label_dtype(n_components):
    """The smallest unsigned integer dtype holding labels 0..K-1 and a no-data label."""
    return np.min_scalar_type(n_components)


def no_data_label(dtype):
    """The label given to rows or pixels without data: the largest value of ``dtype``."""
    return np.iinfo(dtype).max


def model_summary(model):
    """JSON-ready facts about a fitted model, for the runner's report and the output attrs."""
    return {"n_components": int(model.n_components), "covariance_type": model.covariance_type,
            "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
            "lower_bound": float(model.lower_bound_)}


# ------------------------------------------------------------------ outputs


class JobOutput:
    """A job's output folder while it is written, in a staging directory.

    ``result.zarr`` holds the arrays and, written last, the attributes that record the job;
    ``model.zarr`` the model; any other files (previews, tables, plots) sit beside them.
    """

    def __init__(self, prepared, staging):
        self.prepared = prepared
        self.root = Path(staging)
        self.result = store.create_group(self.root / RESULT)
        self.summary = {"output": prepared.config.output.path}

    def write_arrays(self, arrays, fill_values=None, also=()):
        """Write Dask arrays into ``result.zarr`` in one computation; return ``also`` computed."""
        writes = store.store_arrays(self.result, arrays, fill_values)
        results = compute(writes, *also, label=f"wrote {', '.join(arrays)}")
        return results[1:]

    def read_array(self, name):
        """Read back an array written by :meth:`write_arrays` (lazily)."""
        return store.open_array(self.root / RESULT, name)

    def write_model(self, fitted):
        """Save the model to ``model.zarr``, with the scaling of its features; summarise it."""
        scaling = None if fitted.scaler is None else fitted.scaler.to_attrs()
        store.write_model(self.root / MODEL, fitted.model, {"preprocessing": scaling})
        self.summary["model"] = model_summary(fitted.model)

    def write_png(self, name, pixels):
        store.write_png(self.root / name, pixels)

    def write_text(self, name, text):
        (self.root / name).write_text(text)

    def finish(self):
        """Record the job in ``result.zarr``'s attributes: the last write of a complete output."""
        prepared = self.prepared
        record = {
            "version": daskgmm.__version__,
            "pipeline": prepared.config.pipeline,
            "config": prepared.config.to_dict(),
            "inputs": {key: source.record() for key, source in prepared.sources.items()},
            "summary": self.summary,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "complete": True,
        }
        store.set_attrs(self.result, {"daskgmm": record})


@contextmanager
def staged_output(prepared, path, kind, staging_parent=None):
    """Yield a :class:`JobOutput` in a staging folder; it replaces ``path`` if the block succeeds.

    ``path`` must have been cleared by the job's guard. Staging folders that dead jobs left
    while writing ``path`` are removed first.
    """
    path = Path(path)
    parent = staging_parent or path.parent
    atomic.remove_dead_staging(parent, kind, path.name)
    with atomic.atomic_directory(path, kind, staging_parent) as staging:
        output = JobOutput(prepared, staging)
        yield output
        output.finish()


@contextmanager
def job_output(prepared):
    """Yield a :class:`JobOutput`; it replaces ``output.path`` only if the block succeeds.

    A failed or killed job leaves no folder at ``output.path`` (an existing one is untouched);
    on success the checkpoint is deleted.
    """
    path = check_output(prepared.config, prepared.guard)
    with staged_output(prepared, path, OUTPUT) as output:
        yield output
    prepared.checkpoint.remove()
    logger.info("wrote %s", prepared.config.output.path)
