"""A job's output: its paths cleared by the job's guard, then written in a staging folder.

One staging path serves a single job's ``output.path`` (:func:`job_output`) and each result of
a batch (:func:`staged_output`, in the batch store's ``.staging/``): the folder appears whole,
with ``result.zarr``'s record of the job written last, or not at all. In object storage the
folder is a new generation, committed by one conditional write
(:mod:`daskgmm.object_output`).
"""

import io
import logging
from contextlib import contextmanager
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da

import daskgmm
from daskgmm import atomic, object_output, store
from daskgmm.guard import Guard
from daskgmm.images import encode_png
from daskgmm.model_format import write_model
from daskgmm.storage import is_url

from .inputs import generates
from .job_model import model_summary
from .predictions import ROW_DIMS, dimension_names
from .progress import compute

logger = logging.getLogger(__name__)

RESULT_NAME, MODEL_NAME = "result.zarr", "model.zarr"
# The kind of folder a job's output is, as its ownership marker names it.
OUTPUT = "output"


def job_guard(config):
    """The job's :class:`~daskgmm.guard.Guard`: every path it reads, from its config."""
    inputs = {key: path for key, path in config.paths().items()
              if key not in ("output.path", "input.ingest_to")}  # those two it writes
    if generates(config.input):
        del inputs["input.path"]  # written by the job first (a Creates of its source)
    return Guard(inputs)


def check_output(config, guard):
    """Clear ``output.path`` with the job's guard; return the real path to write.

    Only a previous job's output (or an empty folder) is replaced, and only with
    ``output.overwrite``: a folder holding anything else is never deleted, whatever the config
    says. A batch job's output is a store that every run adds to (see :mod:`.batch`), never
    replaced; the store checks what it holds.

    Parameters
    ----------
    config : JobConfig
    guard : Guard

    Returns
    -------
    Path

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


class JobOutput:
    """A job's output folder while it is written, in a staging directory.

    ``result.zarr`` holds the arrays and, written last, the attributes that record the job;
    ``model.zarr`` the model; any other files (previews, tables, plots) sit beside them.

    Parameters
    ----------
    prepared : Prepared
    root : Path or zarr.storage.StorePath
        The staging folder, or the root of a new generation in object storage.
    write_file : callable
        Writes a file's bytes at a name relative to ``root``.
    path : str or Path
        Where the folder will be once complete (what relative links inside it start from).
    """

    def __init__(self, prepared, root, write_file, path):
        self.prepared = prepared
        self.root = root
        self.path = str(path)
        self.result = self.root / RESULT_NAME
        self.summary = {"output": prepared.config.output.path}
        self._write_file = write_file

    def write_arrays(self, arrays, fill_values=None, also=()):
        """Write per-row Dask arrays into ``result.zarr`` in one computation (dims ``row``, and
        ``component`` for a per-component axis); return ``also`` computed."""
        dims = {name: dimension_names(data.shape, ROW_DIMS) for name, data in arrays.items()}
        writes = store.store_arrays(self.result, arrays, fill_values, dims)
        results = compute(writes, *also, label=f"wrote {', '.join(arrays)}")
        return results[1:]

    def write_coords(self, coords):
        """Write 1-D coordinates (dim name -> values) into ``result.zarr``, each as an array of
        its own dim, which ``xarray.open_zarr`` takes as that dim's coordinate."""
        if coords:
            arrays = {name: da.from_array(values, chunks=len(values))
                      for name, values in coords.items()}
            compute(store.store_arrays(self.result, arrays, dims={name: (name,) for name in
                                                                  coords}),
                    label=f"wrote coordinates {', '.join(coords)}")

    def create_arrays(self, specs):
        """Create empty arrays in ``result.zarr`` (see :func:`daskgmm.store.create_arrays`) for
        tasks to write their chunks into; return them by name."""
        return store.create_arrays(self.result, specs)

    def read_array(self, name):
        """Read back an array written by :meth:`write_arrays` (lazily)."""
        return store.open_array(self.result, name)

    def write_model(self, fitted):
        """Save the model to ``model.zarr``, with the scaling of its features; summarise it."""
        scaling = None if fitted.scaler is None else fitted.scaler.to_attrs()
        write_model(self.root / MODEL_NAME, fitted.model, {"preprocessing": scaling})
        self.summary["model"] = model_summary(fitted.model)

    def write_png(self, name, pixels):
        """Write a PNG file beside ``result.zarr`` (see :func:`daskgmm.images.encode_png`)."""
        self._write_file(name, encode_png(pixels))

    def write_stream(self, name, write):
        """Write a file beside ``result.zarr`` by calling ``write(file)`` on a binary file: on
        disk straight into the staging folder, in object storage buffered and put whole."""
        if isinstance(self.root, Path):
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as file:
                write(file)
            return
        buffer = io.BytesIO()
        write(buffer)
        self._write_file(name, buffer.getvalue())

    def write_attrs(self, attrs):
        """Add ``attrs`` to ``result.zarr``'s attributes (what the input said of its pixels)."""
        store.write_attrs(self.result, attrs)

    def write_text(self, name, text):
        """Write a text file beside ``result.zarr``."""
        self._write_file(name, text.encode())

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
        store.consolidate(self.result)
        store.write_attrs(self.result, {"daskgmm": record})


@contextmanager
def staged_output(prepared, path, kind, staging_parent=None):
    """Yield a :class:`JobOutput` in a staging folder; it replaces ``path`` if the block succeeds.

    ``path`` must have been cleared by the job's guard. Staging folders that dead jobs left
    while writing ``path`` are removed first.

    Parameters
    ----------
    prepared : Prepared
    path : Path
    kind : str
        What the folder is, recorded in its ownership marker.
    staging_parent : Path, optional
        Where the staging folder is made; beside ``path`` when None.
    """
    if is_url(path):
        with object_output.replacing(path, kind) as generation:
            output = JobOutput(prepared, generation.root, generation.write_file, path)
            yield output
            output.finish()
        return
    path = Path(path)
    parent = staging_parent or path.parent
    atomic.remove_dead_staging(parent, kind, path.name)
    with atomic.atomic_directory(path, kind, staging_parent) as staging:
        output = JobOutput(prepared, staging, partial(_write_local, staging), path)
        yield output
        output.finish()


def _write_local(folder, name, data):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


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
