"""Zarr arrays in and out: inputs opened lazily, job arrays written, stores checked.

The pipelines of ``python -m daskgmm.run`` read and write Zarr only through this module (and
:mod:`daskgmm.model_format` for models); they never open Zarr directly.
"""

import itertools
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import dask.array as da
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import StorePath

from . import atomic
from .generation_store import location
from .object_record import committed_location
from .reading import as_dask_array
from .storage import exists, is_url, naming, url_options


# The outputs' codec: LZ4 with byte shuffling compresses labels and scores about as well as
# Zarr's default Zstandard at several times its speed, so writing never limits a job
# (bench/README.md).
OUTPUT_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
# Every chunk is written, even one of only the fill value: zarr's check for such chunks cost
# more than the chunk's compression and write together (bench/README.md).
OUTPUT_CONFIG = {"write_empty_chunks": True}


def open_array(path, component=None):
    """Open a Zarr array (a store path or fsspec URL, optionally a named array in a group) lazily.

    Parameters
    ----------
    path : str, Path or zarr.storage.StorePath
        A StorePath is a node of a store a job writes (a generation in a bucket).
    component : str, optional
        The array's name, when ``path`` holds a group.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    FileNotFoundError
        If there is no Zarr store at ``path``.
    PermissionError
        If the object store refuses the read (the message names the credentials found).
    ValueError
        If ``path`` holds a group and ``component`` does not name one of its arrays.
    """
    if not isinstance(path, StorePath):
        path = str(path)
        if not is_url(path) and not Path(path).exists():
            raise FileNotFoundError(f"No Zarr store at {path!r}.")
    node = open_node(path)
    if component is not None:
        node = _member(node, component, path)
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        raise ValueError(
            f"{path!r} is a Zarr group, not an array; name one of its arrays "
            f"({', '.join(names) or 'it has none'}), e.g. {path}/{names[0] if names else 'X'}."
        )
    return as_dask_array(node)


def open_node(path, mode="r", options=None):
    """``zarr.open`` of a local path or URL (with its :func:`~daskgmm.storage.storage_options`,
    or ``options``); a refused or missing URL is an error that names it.

    A URL inside a folder that daskgmm replaces in object storage is read through that folder's
    committed generation (:func:`~daskgmm.object_record.committed_location`): never a write in
    progress, never half of one.
    """
    with naming(path, f"No Zarr store at {str(path)!r}."):
        committed = committed_location(path, options) if is_url(path) and mode == "r" else None
        if committed is not None:
            return zarr.open(committed, mode=mode)
        return zarr.open(location(path), mode=mode, **url_options(path, options))


def _member(group, name, path):
    if not isinstance(group, zarr.Group) or name not in group:
        raise ValueError(f"No array {name!r} in the Zarr store {path!r}.")
    return group[name]


def is_zarr_store(path):
    """Whether ``path`` is a local folder or a URL prefix holding Zarr metadata."""
    names = ("zarr.json", ".zarray", ".zgroup")
    if is_url(path):
        return any(exists(f"{str(path).rstrip('/')}/{name}") for name in names)
    return any((Path(path) / name).exists() for name in names)


def write_array(path, data, kind, attrs=None, compute=None):
    """Write a NumPy or Dask array as a Zarr array store at ``path``, atomically.

    Parameters
    ----------
    path : Path
        Cleared by the job's :class:`~daskgmm.guard.Guard` (an existing store there is replaced).
    data : ndarray or dask.array.Array
        Written with its chunks (Dask) or as one chunk (NumPy).
    kind : str
        What the store is, recorded in its ownership marker (``ingest``, ``sample``).
    attrs : dict, optional
        Attributes recorded with the array.
    compute : callable, optional
        Runs the lazy write (e.g. with a progress bar); ``dask.compute`` when None.
    """
    import dask

    data = data if isinstance(data, da.Array) else da.from_array(data, chunks=data.shape)
    data = data.rechunk(data.chunksize)
    with atomic.atomic_directory(path, kind) as staging:
        target = zarr.create_array(location(staging), shape=data.shape, chunks=data.chunksize,
                                   dtype=data.dtype)
        target.attrs.update(attrs or {})
        (compute or dask.compute)(da.store(data, target, lock=False, compute=False))


def read_attrs(path):
    """Return the attributes of the Zarr array or group at ``path`` (empty if there is none)."""
    if not is_url(path) and not Path(path).exists():
        return {}
    return dict(open_node(path).attrs)


def write_attrs(path, attrs):
    """Add ``attrs`` to the attributes of the Zarr group at ``path``, creating the group if new."""
    zarr.open_group(location(path), mode="a").attrs.update(attrs)


class ArraySpec(NamedTuple):
    """An output array to create: its shape, chunks, dtype, fill value and dimension names.

    A chunk not yet written reads as the fill value. The dimension names (Zarr v3
    ``dimension_names``) are what ``xarray.open_zarr`` names the array's dims by.
    """

    shape: tuple
    chunks: tuple
    dtype: object
    fill_value: object = None
    dims: tuple = None


def create_group(path, zarr_format=3):
    """Create a new, empty Zarr group at ``path`` (inside a job's staging directory) in
    ``zarr_format`` (2 for OME-NGFF 0.4 images); return it."""
    return zarr.open_group(location(path), mode="w", zarr_format=zarr_format)


def consolidate(path):
    """Record the metadata of every array of the Zarr group at ``path`` in its root, so that
    ``xarray.open_zarr`` reads the group in one request and without a warning."""
    group = zarr.open_group(location(path), mode="a")  # created if new: a job of attributes
    with warnings.catch_warnings():  # zarr warns that Zarr v3 has no such extension yet
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        zarr.consolidate_metadata(group.store_path)


def create_arrays(path, specs):
    """Create empty arrays in the Zarr group at ``path`` (created if new); return them by name.

    Parameters
    ----------
    path : Path
        Inside a job's staging directory.
    specs : dict of str to ArraySpec

    Returns
    -------
    dict of str to zarr.Array
    """
    group = zarr.open_group(location(path), mode="a")
    return {name: group.create_array(name, shape=spec.shape, chunks=spec.chunks,
                                     dtype=spec.dtype, fill_value=spec.fill_value,
                                     dimension_names=spec.dims,
                                     compressors=OUTPUT_COMPRESSOR, config=OUTPUT_CONFIG)
            for name, spec in specs.items()}


def store_arrays(path, arrays, fill_values=None, dims=None):
    """Create one array per entry of ``arrays`` in the Zarr group at ``path``; return the lazy
    write of all.

    Parameters
    ----------
    path : Path
        The group, created if new (inside a job's staging directory).
    arrays : dict of str to dask.array.Array
        Each is stored with its chunk size (irregular chunks are made regular first).
    fill_values : dict of str to scalar, optional
        The fill value recorded for an array (e.g. the label given to no-data pixels).
    dims : dict of str to tuple of str, optional
        The dimension names of an array.

    Returns
    -------
    dask.delayed.Delayed
        Computing it writes every array; one computation shares the work the arrays have in
        common (the input is read once).
    """
    fill_values, dims = fill_values or {}, dims or {}
    sources = {name: data.rechunk(data.chunksize) for name, data in arrays.items()}
    targets = create_arrays(path, {name: ArraySpec(data.shape, data.chunksize, data.dtype,
                                                   fill_values.get(name), dims.get(name))
                                   for name, data in sources.items()})
    return da.store(list(sources.values()), list(targets.values()), lock=False, compute=False)


# ------------------------------------------------------------------ batch inputs
# Read by the batch mode (daskgmm/pipelines/batch_inputs.py lists, batch_run.py checks).


def _is_array_folder(folder):
    """Whether a member folder of a group holds an array (a damaged one counts: it is an input)."""
    if (folder / ".zarray").is_file():
        return True
    try:
        return json.loads((folder / "zarr.json").read_text()).get("node_type") != "group"
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):  # damaged: an input that cannot be read
        return True


def group_array_names(path):
    """Return the names of the arrays at the top of the local Zarr group at ``path``, sorted.

    Members are found by their metadata files (``zarr.json`` or ``.zarray`` in a folder of the
    group), not opened, so that one damaged member neither hides the others nor fails the
    listing: a member whose metadata does not parse is listed (opening it says why, see
    :func:`zarr_array_error`). Subgroups are left out.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        If ``path`` holds a Zarr array, not a group.
    """
    node = open_node(path)
    if not isinstance(node, zarr.Group):
        raise ValueError(f"{str(path)!r} is a Zarr array; batch mode reads a group of arrays, "
                         "each an input")
    if is_url(path):  # no folders to look into: the group's own listing of its arrays
        return sorted(name for name, _ in node.arrays())
    return sorted(child.name for child in Path(path).iterdir()
                  if child.is_dir() and _is_array_folder(child))


def zarr_array_error(path, options=None):
    """Decode every chunk of the Zarr array at ``path``; return why that failed, or None.

    A batch checks each array of a Zarr group with this on the cluster before reading any of
    them (as image files with :func:`daskgmm.images.image_file_error`): damaged metadata shows
    when the array is opened, a corrupt or truncated chunk only when it is decoded. One chunk
    (or shard) is held at a time.
    """
    try:
        array = zarr.open_array(str(path), mode="r", **url_options(path, options))
        step = array.shards or array.chunks
        starts = [range(0, size, length) for size, length in zip(array.shape, step)]
        for corner in itertools.product(*starts):
            array[tuple(slice(start, start + length) for start, length in zip(corner, step))]
    except Exception as error:  # zarr and its codecs raise many kinds (KeyError, RuntimeError)
        return f"not a readable Zarr array ({type(error).__name__}: {error})"
    return None
