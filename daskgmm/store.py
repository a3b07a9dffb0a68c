"""Zarr in and out: opening input arrays, saving and loading fitted models, atomic writes."""

from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from . import atomic
from .guard import Guard, is_url
from .reading import as_dask_array

MODEL_FORMAT = "daskgmm.GaussianMixture"
MODEL_FORMAT_VERSION = 1
_FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
_FITTED_SCALARS = ("converged_", "n_iter_", "lower_bound_", "n_features_in_", "n_reseeded_")
# The kind of folder a saved model is, as its ownership marker names it.
MODEL = "model"


def open_array(path, component=None):
    """Open a Zarr array (a store path or fsspec URL, optionally a named array in a group) lazily.

    Raises
    ------
    FileNotFoundError
        If there is no Zarr store at ``path``.
    ValueError
        If ``path`` holds a group and ``component`` does not name one of its arrays.
    """
    path = str(path)
    if not is_url(path) and not Path(path).exists():
        raise FileNotFoundError(f"No Zarr store at {path!r}.")
    node = zarr.open(path, mode="r")
    if component is not None:
        node = _member(node, component, path)
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        raise ValueError(
            f"{path!r} is a Zarr group, not an array; name one of its arrays "
            f"({', '.join(names) or 'it has none'}), e.g. {path}/{names[0] if names else 'X'}."
        )
    return as_dask_array(node)


def _member(group, name, path):
    if not isinstance(group, zarr.Group) or name not in group:
        raise ValueError(f"No array {name!r} in the Zarr store {path!r}.")
    return group[name]


def _json_value(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return None


def write_model_group(group, model):
    """Write a fitted model's arrays and attributes into an open Zarr group."""
    for name in _FITTED_ARRAYS:
        group.create_array(name, data=np.asarray(getattr(model, name)))
    group.create_array("lower_bounds_", data=np.asarray(model.lower_bounds_, dtype=np.float64))
    params = {name: _json_value(value) for name, value in model.get_params().items()}
    group.attrs.update(
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "params": params,
            "fitted": {name: _json_value(getattr(model, name)) for name in _FITTED_SCALARS},
        }
    )


def save_model(model, path, overwrite=False):
    """Save a fitted GaussianMixture to a Zarr group at ``path``, atomically.

    Only a model daskgmm saved, holding nothing else, is replaced (with ``overwrite``).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If ``path`` holds anything but a model daskgmm saved.
    """
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
    path = Guard().check(path, "path", MODEL, replace=True)
    with atomic.atomic_directory(path, MODEL) as staging:
        write_model_group(zarr.open_group(str(staging), mode="a"), model)  # keeps the marker


def read_model_group(group, cls):
    """Rebuild a fitted model from a Zarr group written by :func:`write_model_group`."""
    attrs = dict(group.attrs)
    if attrs.get("format") != MODEL_FORMAT:
        raise ValueError(f"Zarr group holds no daskgmm model (format {attrs.get('format')!r}).")
    if attrs.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"Model format version {attrs['format_version']} is newer than this daskgmm reads "
            f"({MODEL_FORMAT_VERSION}); upgrade daskgmm."
        )
    model = cls(**attrs["params"])
    for name in _FITTED_ARRAYS:
        setattr(model, name, group[name][...])
    model.lower_bounds_ = group["lower_bounds_"][...].tolist()
    for name, value in attrs["fitted"].items():
        setattr(model, name, value)
    model._dtype = model.means_.dtype
    return model


def load_model(path, cls):
    """Load a model saved with :func:`save_model`."""
    path = str(path)
    if not is_url(path) and not Path(path).exists():
        raise FileNotFoundError(f"No saved model at {path!r}.")
    return read_model_group(zarr.open_group(path, mode="r"), cls)


# ------------------------------------------------------------------ job inputs and outputs
# Used by the pipelines of `python -m daskgmm.run`; they never open Zarr (or image files) directly.

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Pillow modes whose pixels are not 8-bit, and the NumPy dtype each decodes to.
_PILLOW_DTYPES = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.int32,
                  "F": np.float32}
_CONVERTED_MODES = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def is_zarr_store(path):
    """Whether ``path`` is a URL (assumed Zarr) or a local folder holding Zarr metadata."""
    if is_url(path):
        return True
    path = Path(path)
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("Reading and writing PNG/JPEG/TIFF needs Pillow: pip install pillow") \
            from None
    return Image


def _decoded_mode(image):
    """The mode an image's pixels are read in: palette, 1-bit and colour-space modes convert."""
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return _CONVERTED_MODES.get(image.mode, image.mode)


def image_file_info(path):
    """Return the ``(height, width, channels)`` shape and dtype of an image file, from its header.

    Raises
    ------
    ValueError
        If Pillow cannot read the file as an image.
    """
    Image = _pillow()
    try:
        with Image.open(path) as image:
            mode, (width, height) = _decoded_mode(image), image.size
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{str(path)!r} is not a readable image ({error}).") from None
    dtype = np.dtype(_PILLOW_DTYPES.get(mode, np.uint8))
    return (height, width, Image.getmodebands(mode)), dtype


def read_image_file(path):
    """Decode an image file to an array of shape ``(height, width, channels)``."""
    Image = _pillow()
    with Image.open(path) as image:
        mode = _decoded_mode(image)
        pixels = np.asarray(image if mode == image.mode else image.convert(mode))
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def open_image_files(files, shape, dtype):
    """Stack same-sized image files lazily as ``(n, height, width, channels)``, one per chunk."""
    import dask

    images = [da.from_delayed(dask.delayed(read_image_file)(str(f)), shape=shape, dtype=dtype)
              for f in files]
    return da.stack(images)


def write_png(path, pixels):
    """Write an ``(height, width, 3)`` or ``(height, width)`` uint8 array as a PNG file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _pillow().fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")


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
        target = zarr.create_array(str(staging), shape=data.shape, chunks=data.chunksize,
                                   dtype=data.dtype)
        target.attrs.update(attrs or {})
        (compute or dask.compute)(da.store(data, target, lock=False, compute=False))


def read_attrs(path):
    """Return the attributes of the Zarr array or group at ``path`` (empty if there is none)."""
    if not is_url(path) and not Path(path).exists():
        return {}
    return dict(zarr.open(str(path), mode="r").attrs)


def create_group(path):
    """Create an empty Zarr group at ``path`` (a folder inside a job's staging directory)."""
    return zarr.open_group(str(path), mode="w")


def set_attrs(group, attrs):
    """Add ``attrs`` to an open Zarr group's attributes."""
    group.attrs.update(attrs)


def store_arrays(group, arrays, fill_values=None):
    """Create one array per entry of ``arrays`` in ``group`` and return the lazy write of all.

    Parameters
    ----------
    group : zarr.Group
    arrays : dict of str to dask.array.Array
        Each is stored with its chunk size (irregular chunks are made regular first).
    fill_values : dict of str to scalar, optional
        The fill value recorded for an array (e.g. the label given to no-data pixels).

    Returns
    -------
    dask.delayed.Delayed
        Computing it writes every array; one computation shares the work the arrays have in
        common (the input is read once).
    """
    fill_values = fill_values or {}
    sources, targets = [], []
    for name, data in arrays.items():
        data = data.rechunk(data.chunksize)
        targets.append(group.create_array(name, shape=data.shape, chunks=data.chunksize,
                                          dtype=data.dtype, fill_value=fill_values.get(name)))
        sources.append(data)
    return da.store(sources, targets, lock=False, compute=False)


def write_model(path, model, attrs=None):
    """Write a fitted model to a new Zarr group at ``path`` with extra ``attrs`` (not atomic).

    Used inside a job's staging directory, which is itself committed atomically; the group reads
    back with :func:`load_model` (or ``GaussianMixture.load``).
    """
    group = zarr.open_group(str(path), mode="w")
    write_model_group(group, model)
    group.attrs.update(attrs or {})


def read_model_attrs(path):
    """Return the attributes stored with a saved model (those of :func:`write_model` included)."""
    return read_attrs(path)


def open_table(paths, file_format, columns=None):
    """Open CSV or Parquet files lazily as a ``dask.dataframe`` of numeric columns.

    Raises
    ------
    ImportError
        If ``dask[dataframe]`` (the ``tabular`` extra) is not installed.
    ValueError
        If a named column is missing or not numeric.
    """
    try:
        import dask.dataframe as dd
    except ImportError:
        raise ImportError("Reading CSV or Parquet needs dask.dataframe: "
                          "pip install 'daskgmm[tabular]'") from None
    reader = dd.read_csv if file_format == "csv" else dd.read_parquet
    frame = reader(paths)
    names = list(frame.columns)
    chosen = names if columns is None else list(columns)
    missing = [name for name in chosen if name not in names]
    if missing:
        raise ValueError(f"no column(s) {', '.join(map(repr, missing))}; the files have "
                         f"{', '.join(map(repr, names))}")
    numeric = [name for name in chosen if frame[name].dtype.kind in "biuf"]
    if columns is not None and len(numeric) < len(chosen):
        bad = [name for name in chosen if name not in numeric]
        raise ValueError(f"column(s) {', '.join(map(repr, bad))} are not numeric")
    if not numeric:
        raise ValueError("the files have no numeric column")
    return frame[numeric]


def table_rows(frame):
    """Return a dataframe's values as a 2-D Dask array with known row chunks (one pass)."""
    return frame.to_dask_array(lengths=True)


# ------------------------------------------------------------------ batch inputs
# Read by the batch mode of the segment job (pipelines/batch.py keeps its manifest and lock).


def group_array_names(path):
    """Return the names of the arrays at the top of the local Zarr group at ``path``, sorted.

    Members are found by their metadata files (``zarr.json`` or ``.zarray`` in a folder of the
    group), not opened, so that one damaged member neither hides the others nor fails the
    listing: a member whose metadata does not parse is listed (opening it says why, see
    :func:`zarr_array_error`). Subgroups are left out.

    Raises
    ------
    ValueError
        If ``path`` holds a Zarr array, not a group.
    """
    import json

    node = zarr.open(str(path), mode="r")
    if not isinstance(node, zarr.Group):
        raise ValueError(f"{str(path)!r} is a Zarr array; batch mode reads a group of arrays, "
                         "each an input")

    def is_array(folder):
        if (folder / ".zarray").is_file():
            return True
        try:
            return json.loads((folder / "zarr.json").read_text()).get("node_type") != "group"
        except FileNotFoundError:
            return False
        except (OSError, ValueError, AttributeError):  # damaged: an input that cannot be read
            return True

    return sorted(child.name for child in Path(path).iterdir()
                  if child.is_dir() and is_array(child))


def zarr_array_error(path):
    """Decode every chunk of the Zarr array at ``path``; return why that failed, or None.

    A batch checks each array of a Zarr group with this on the cluster before reading any of
    them (as image files with :func:`image_file_error`): damaged metadata shows when the array
    is opened, a corrupt or truncated chunk only when it is decoded. One chunk (or shard) is
    held at a time.
    """
    import itertools

    try:
        array = zarr.open_array(str(path), mode="r")
        step = array.shards or array.chunks
        starts = [range(0, size, length) for size, length in zip(array.shape, step)]
        for corner in itertools.product(*starts):
            array[tuple(slice(start, start + length) for start, length in zip(corner, step))]
    except Exception as error:  # zarr and its codecs raise many kinds (KeyError, RuntimeError)
        return f"not a readable Zarr array ({type(error).__name__}: {error})"
    return None


def image_file_error(path):
    """Decode every pixel of an image file; return why that failed, or None if it did not.

    A batch checks its image files with this on the cluster before reading any of them: a file
    whose header reads but whose pixels do not (truncated, corrupt) fails only when decoded.
    """
    try:
        read_image_file(path)
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error})"
    return None
