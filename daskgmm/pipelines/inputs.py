"""A job's inputs: each ``input`` section checked and described before any work, then opened.

A Zarr array is opened as it is; image files are ingested into a Zarr array first (once: a
store that holds the very same files is reused); CSV and Parquet files are read as rows; data
configured with ``generate`` is written first when it is missing.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from daskgmm import store
from daskgmm.atomic import folder_exists
from daskgmm.config import ConfigError
from daskgmm.images import (
    IMAGE_SUFFIXES,
    georeferencing,
    image_file_info,
    is_tiff,
    open_image_files,
)
from daskgmm.sample_data import OME_SAMPLES, SAMPLE, sample_layout, write_sample
from daskgmm.storage import check_url, exists, file_signature, is_url
from daskgmm.tables import TABLE_SUFFIXES, open_table, table_rows

from .input_paths import input_files, input_format
from .progress import compute

# The kind of folder image files are ingested into, as its ownership marker names it.
INGEST = "ingest"


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
    path with the guard. ``metadata`` is what the input says of where its pixels are (a
    GeoTIFF's georeferencing, an OME-Zarr image's axes), carried into the outputs' attributes;
    ``coords`` its coordinates along the outputs' dims (``row``, ``y``, ``x``). A
    ``channel_axis`` read from the input's metadata overrides ``input.channel_axis``. ``held``:
    whether a fit may hold the input in the workers' memory between its two passes.
    """

    key: str
    path: str
    kind: str
    shape: tuple
    dtype: np.dtype
    opener: object
    chunks: tuple = None
    creates: Creates = None
    metadata: dict = field(default_factory=dict)
    coords: dict = field(default_factory=dict)
    channel_axis: int = None
    held: bool = True

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


def generates(config):
    """Whether the job writes its input first: it is configured to, and the input is missing."""
    return config.generate is not None and not (
        exists(config.path) if is_url(config.path) else Path(config.path).exists())


def _zarr_source(config, key):
    check_url(config.path, f"{key}.path")
    try:
        array = store.open_array(config.path, config.array)
    except FileNotFoundError:
        raise ConfigError(f"no Zarr store at {config.path!r}", f"{key}.path") from None
    except PermissionError as error:
        raise ConfigError(str(error), f"{key}.path") from None
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


def _image_layout(files, key):
    """The ``(height, width, channels)`` shape and dtype all the image files share."""
    try:
        layouts = [image_file_info(f) for f in files]
    except (ValueError, PermissionError) as error:
        raise ConfigError(str(error), f"{key}.path") from None
    for name, layout in zip(files, layouts):
        if layout != layouts[0]:
            raise ConfigError(f"images must share one size and pixel type: {files[0]} is "
                              f"{layouts[0][0]} {layouts[0][1]}, {name} is {layout[0]} "
                              f"{layout[1]}", f"{key}.path")
    return layouts[0]


def _image_source(config, key, ingest_to):
    files = input_files(config.path, key, IMAGE_SUFFIXES, "PNG/JPEG/TIFF")
    shape, dtype = _image_layout(files, key)
    stack = (len(files) * shape[0],) + shape[1:]
    if all(is_tiff(f) for f in files):  # read by their tiles as they are: no copy
        # and read again for the labels: a tenth slower than held, at half the peak memory
        # (bench/README.md)
        return Source(key, config.path, f"{len(files)} TIFF file(s), read by tiles", stack,
                      dtype, lambda guard: open_image_files(files, shape, dtype),
                      metadata=_georeferencing(files, shape[0], key), held=False)
    creates = Creates(config.ingest_to or ingest_to, f"{key}.ingest_to", INGEST, replace=True)
    return Source(key, config.path, f"{len(files)} image file(s), ingested to {creates.path}",
                  stack, dtype,
                  lambda guard: _ingested(files, shape, dtype, creates.check(guard)),
                  creates=creates)


def _georeferencing(files, pages, key):
    """``{"geotiff": [tags of each image]}`` for GeoTIFF files, else an empty dict."""
    try:
        tags = [georeferencing(f) for f in files]
    except (ValueError, PermissionError) as error:
        raise ConfigError(str(error), f"{key}.path") from None
    return {"geotiff": [t for t in tags for _ in range(pages)]} if any(tags) else {}


def _ingested(files, shape, dtype, target):
    """The image files as a Zarr array at ``target``, written unless it holds these very files.

    ``target`` is cleared by the job's guard: it is new, or a store daskgmm ingested before.
    """
    signature = [file_signature(f) for f in files]
    if not folder_exists(target) or store.read_attrs(target).get("sources") != signature:
        images = open_image_files(files, shape, dtype)
        store.write_array(target, images, INGEST, attrs={"sources": signature},
                          compute=lambda write: compute(write, label=f"ingesting to {target}"))
    return store.open_array(target)


def _table_source(config, key, kind):
    files = input_files(config.path, key, tuple(TABLE_SUFFIXES), "CSV/Parquet")
    try:
        frame = open_table(files, kind, config.columns)
    except ImportError as error:
        raise ConfigError(str(error), f"{key}.format") from None
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.columns") from None
    except OSError as error:
        raise ConfigError(f"cannot read {config.path!r}: {error}", f"{key}.path") from None
    dtype = frame.to_dask_array().dtype
    label = f"{kind}, {len(files)} file(s), columns {', '.join(map(str, frame.columns))}"
    return Source(key, config.path, label, (None, len(frame.columns)), dtype,
                  lambda guard: table_rows(frame))


def _generated_source(config, key):
    shape, dtype = sample_layout(config.generate)
    creates = Creates(config.path, f"{key}.path", SAMPLE, replace=False)
    ome = config.generate in OME_SAMPLES
    kind = f"{'OME-Zarr 0.5 image, ' if ome else ''}{config.generate}, generated now"
    source = Source(key, config.path, kind, shape, dtype, None, creates=creates,
                    channel_axis=-1 if ome else None)

    def generate(guard):
        path = creates.check(guard)
        write_sample(config.generate, path,
                     compute=lambda write: compute(write, label=f"generating {config.path}"))
        if not ome:
            return store.open_array(path)
        from .described_inputs import ome_source  # it builds on Source

        written = ome_source(config, key)
        source.metadata.update(written.metadata)
        return written.opener(guard)

    source.opener = generate
    return source


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
    if generates(config):
        return _generated_source(config, key)
    kind = input_format(config, key)
    if kind in ("ome-zarr", "xarray"):
        from .described_inputs import ome_source, xarray_source  # they build on Source

        return (ome_source if kind == "ome-zarr" else xarray_source)(config, key)
    if kind == "zarr":
        return _zarr_source(config, key)
    if kind == "images":
        return _image_source(config, key, ingest_to)
    return _table_source(config, key, kind)


def resolve_table(config, key):
    """As :func:`resolve_source`, for an input that must be 2-D ``(rows, features)``.

    Raises
    ------
    ConfigError
        If the input is not 2-D.
    """
    source = resolve_source(config, key)
    if len(source.shape) != 2:
        raise ConfigError(f"expected a 2-D array (rows, features), got shape "
                          f"{tuple(source.shape)}; for images use pipeline: segment",
                          f"{key}.path")
    return source
