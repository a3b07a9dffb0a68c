"""TIFF and BigTIFF files read lazily through tifffile (any number of bands, 8/16/32-bit integer
and float, tiled or striped), their GeoTIFF georeferencing, and tiled GeoTIFF writing.

A file's first series is an ``(n, height, width, channels)`` Dask array of chunks of whole tiles
(or strips) and every channel; each task opens the file and decodes only the tiles it touches.
"""

import functools
import math
import zlib
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import zarr
from dask.array.core import normalize_chunks
from dask.base import tokenize

from .storage import open_file, storage_options

TIFF_SUFFIXES = (".tif", ".tiff")
# Few tasks per file, yet a thread holds little: decoding takes about twice a chunk's bytes, and
# the segment job's float32 pixels twice again for 16-bit bands (bench/README.md).
CHUNK_BYTES = 8 * 2**20
# The tile of written GeoTIFFs; write_geotiff takes the image in bands of GEOTIFF_TILE[0] rows.
GEOTIFF_TILE = (256, 256)
# Classic TIFF offsets are 32-bit: past 2 GiB of pixels a written file is a BigTIFF.
BIGTIFF_BYTES = 2**31
# The GeoTIFF (and GDAL) tags kept from a file and written back: name -> (code, TIFF type).
GEOTIFF_TAGS = {
    "ModelPixelScaleTag": (33550, "d"),
    "ModelTiepointTag": (33922, "d"),
    "ModelTransformationTag": (34264, "d"),
    "GeoKeyDirectoryTag": (34735, "H"),
    "GeoDoubleParamsTag": (34736, "d"),
    "GeoAsciiParamsTag": (34737, "s"),
    "GDAL_METADATA": (42112, "s"),
    "GDAL_NODATA": (42113, "s"),
}
# Series axes that hold the bands of a pixel: samples of a page, or channels across pages.
CHANNEL_AXES = ("S", "C")


@dataclass(frozen=True)
class TiffLayout:
    """What a TIFF file's first series holds, from its header: enough to read it in chunks.

    Attributes
    ----------
    shape : tuple of int
        ``(n, height, width, channels)``.
    dtype : numpy.dtype
        The pixels' type, in native byte order.
    chunks : tuple of int
        ``(1, rows, cols, channels)``: whole tiles or strips, about :data:`CHUNK_BYTES`.
    axes : str
        The tifffile series axes (``"YXS"``, ``"SYX"``, ``"QYX"``...).
    georeferencing : dict
        The GeoTIFF tags of the first page (:func:`georeferencing`); empty if none.
    """

    shape: tuple
    dtype: np.dtype
    chunks: tuple
    axes: str
    georeferencing: dict = field(default_factory=dict)


def _tifffile():
    try:
        import tifffile
    except ImportError:
        raise ImportError("Reading and writing TIFF files needs tifffile: pip install tifffile") \
            from None
    return tifffile


def _axis_roles(axes, shape):
    """The positions of the Y, X and channel axes (None if no channel axis has more than one
    band) and of the other axes longer than one, which stack into the leading image axis."""
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"the series' axes {axes!r} have no Y and X image axes")
    channels = [i for i, axis in enumerate(axes) if axis in CHANNEL_AXES and shape[i] > 1]
    if len(channels) > 1:
        raise ValueError(f"the series' axes {axes!r} of shape {tuple(shape)} have both samples "
                         "(S) and channels (C); only one of them may hold the bands")
    others = [i for i, axis in enumerate(axes)
              if axis not in ("Y", "X", *CHANNEL_AXES) and shape[i] > 1]
    return axes.index("Y"), axes.index("X"), (channels or [None])[0], others


def _pixel_dtype(dtype, path):
    """The native-order dtype the pixels are read in; bilevel images read as uint8."""
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind not in "uif":
        raise ValueError(f"{str(path)!r} holds {dtype} pixels; only integer and float TIFF "
                         "images are read")
    return dtype.newbyteorder("=")


def _chunk_extent(height, width, unit, pixel_bytes):
    """Rows and columns of a chunk of whole units (tiles, or full-width strips) of about
    CHUNK_BYTES, squarish, never more than the image."""
    unit_rows, unit_cols = unit
    budget = max(1, CHUNK_BYTES // (unit_rows * unit_cols * pixel_bytes))
    rows_of_units, cols_of_units = -(-height // unit_rows), -(-width // unit_cols)
    across = min(cols_of_units, math.isqrt(budget))
    down = min(rows_of_units, max(1, budget // across))
    across = min(cols_of_units, max(1, budget // down))
    return min(down * unit_rows, height), min(across * unit_cols, width)


def _chunk_unit(page, height, width):
    """The tile, or the strip of full width, that the page stores its pixels in."""
    if page.is_tiled:
        return page.tilelength, page.tilewidth
    rows = page.rowsperstrip
    return (min(rows, height) if rows > 0 else height), width


def tiff_layout(path, options=None):
    """Return the layout of a TIFF file's first series, from its header alone.

    ``path`` is a local file or a URL, read with the fsspec ``options`` (the ``storage``
    section's by default; see :func:`daskgmm.storage.open_file`).

    Returns
    -------
    TiffLayout

    Raises
    ------
    ValueError
        If tifffile cannot read the file, or its pixels are neither integer nor float.
    PermissionError
        If the store refuses the read.
    """
    tifffile = _tifffile()
    try:
        with open_file(path, options) as file, tifffile.TiffFile(file) as tiff:
            series = tiff.series[0]
            axes, sizes, page = series.axes, series.shape, series.keyframe
            dtype, geo = np.dtype(series.dtype), georeferencing(page)
            y, x, channel, others = _axis_roles(axes, sizes)
            unit = _chunk_unit(page, sizes[y], sizes[x])
    except PermissionError:  # a refused read is not a damaged file
        raise
    except (tifffile.TiffFileError, OSError, IndexError) as error:
        raise ValueError(f"{str(path)!r} is not a readable TIFF file ({error}).") from None
    except ValueError as error:
        raise ValueError(f"{str(path)!r} is not a readable TIFF image: {error}.") from None
    dtype = _pixel_dtype(dtype, path)
    channels = 1 if channel is None else sizes[channel]
    shape = (math.prod(sizes[i] for i in others), sizes[y], sizes[x], channels)
    rows, cols = _chunk_extent(shape[1], shape[2], unit, channels * dtype.itemsize)
    return TiffLayout(shape, dtype, (1, rows, cols, channels), axes, geo)


def _json_value(value):
    """A tag's raw value as JSON: a str for ASCII, else a list of Python ints or floats."""
    if isinstance(value, str):
        return value
    return np.atleast_1d(np.asarray(value)).ravel().tolist()


def georeferencing(page):
    """Return the GeoTIFF tags of a page, raw, as a JSON-serialisable dict keyed by tag name.

    Parameters
    ----------
    page : tifffile.TiffPage

    Returns
    -------
    dict
        Of the names in :data:`GEOTIFF_TAGS` the page has: a list of numbers per numeric tag,
        a str per ASCII one. :func:`write_geotiff` writes them back unchanged.
    """
    tags = {name: page.tags.get(code) for name, (code, _) in GEOTIFF_TAGS.items()}
    return {name: _json_value(tag.value) for name, tag in tags.items() if tag is not None}


def _selection(axes, shape, index, rows, cols):
    """The Zarr selection of one image's region, and the axis order that makes it
    ``(rows, cols, channels)``."""
    y, x, channel, others = _axis_roles(axes, shape)
    key = [0] * len(axes)
    for axis, at in zip(others, np.unravel_index(index, [shape[i] for i in others])):
        key[axis] = int(at)
    key[y], key[x] = slice(*rows), slice(*cols)
    if channel is not None:
        key[channel] = slice(None)
    wanted = [axis for axis in (y, x, channel) if axis is not None]
    return tuple(key), [sorted(wanted).index(axis) for axis in wanted]


def read_region(path, layout, region, options=None):
    """Decode one region of a TIFF file, reading only the tiles or strips it touches.

    Parameters
    ----------
    path : str
    layout : TiffLayout
        The file's layout (:func:`tiff_layout`).
    region : tuple
        ``(index, (row_start, row_stop), (col_start, col_stop))``: one image of the leading
        axis, and a window of it.
    options : dict, optional
        The fsspec options of a URL: given by the client, as a task has no ``storage`` section.

    Returns
    -------
    numpy.ndarray of shape (1, rows, cols, channels), of ``layout.dtype``
    """
    index, rows, cols = region
    tifffile = _tifffile()
    with open_file(path, options) as file, tifffile.TiffFile(file) as tiff:
        with tiff.series[0].aszarr(level=0, read_only=True) as store:
            array = zarr.open_array(store, mode="r")
            key, order = _selection(layout.axes, array.shape, index, rows, cols)
            block = np.transpose(array[key], order)
    block = block.reshape(1, rows[1] - rows[0], cols[1] - cols[0], layout.shape[3])
    return np.ascontiguousarray(block, dtype=layout.dtype)


def _read_block(path, layout, options, block_info=None):
    """The chunk of :func:`open_tiff` that dask asks for, by its place in the array."""
    location = block_info[None]["array-location"]
    return read_region(path, layout, (location[0][0], location[1], location[2]), options)


def open_tiff(path, layout, options=None):
    """Open a TIFF file's first series lazily, one task per chunk.

    Parameters
    ----------
    path : str or Path
    layout : TiffLayout
        The file's layout (:func:`tiff_layout`); it is not read again.
    options : dict, optional
        The fsspec options of a URL (the current ``storage`` section's by default), resolved
        now so that the tasks carry them.

    Returns
    -------
    dask.array.Array
        Of ``layout.shape``, ``layout.chunks`` and ``layout.dtype``, in native byte order.
    """
    options = storage_options(path) if options is None else options
    reader = functools.partial(_read_block, str(path), layout, options)
    return da.map_blocks(reader, chunks=normalize_chunks(layout.chunks, layout.shape),
                         dtype=layout.dtype, meta=np.empty((0,) * 4, layout.dtype),
                         name=f"tiff-{tokenize(str(path), layout, options)}")


def chunk_regions(layout):
    """The regions (:func:`read_region`) of every chunk of a layout, in C order."""
    n, height, width, _ = layout.shape
    _, rows, cols, _ = layout.chunks
    for index in range(n):
        for top in range(0, height, rows):
            for left in range(0, width, cols):
                yield index, (top, min(top + rows, height)), (left, min(left + cols, width))


def tiff_file_error(path, options=None):
    """Decode every chunk of a TIFF file, one at a time; return why that failed, or None.

    A batch checks its files with this before reading any of them: a file whose header reads
    but whose pixels do not (truncated, corrupt) fails only when decoded. A refused read
    (PermissionError) is raised, not returned.
    """
    try:
        layout = tiff_layout(path, options)
        for region in chunk_regions(layout):
            read_region(path, layout, region, options)
    except PermissionError:
        raise
    except (OSError, ValueError, zlib.error) as error:
        return f"not a readable TIFF file ({error})"
    return None


def _tiles(blocks, shape, tile, dtype):
    """The tiles of an image given in bands of whole tile rows, in row-major tile order; the
    tiles of the right and bottom edges are short (tifffile pads them with zeros)."""
    height, width = shape
    done = 0
    for band in blocks:
        band = np.asarray(band)
        fits = band.ndim == 2 and band.shape[1] == width and done + len(band) <= height
        if done % tile[0] or not fits:
            raise ValueError(f"write_geotiff takes full-width bands of whole tile rows "
                             f"({tile[0]}) of a {height} x {width} image; got a band of "
                             f"shape {band.shape} at row {done}")
        band = band.astype(dtype, copy=False)
        for top in range(0, band.shape[0], tile[0]):
            for left in range(0, width, tile[1]):
                yield band[top:top + tile[0], left:left + tile[1]]
        done += band.shape[0]
    if done != height:
        raise ValueError(f"write_geotiff was given {done} rows of an image of {height}")


def _extratags(georeferencing):
    """tifffile's extra tags for a :func:`georeferencing` dict, each with its GeoTIFF type."""
    unknown = sorted(set(georeferencing) - set(GEOTIFF_TAGS))
    if unknown:
        raise ValueError(f"georeferencing has unknown tags {unknown}; expected some of "
                         f"{sorted(GEOTIFF_TAGS)}")
    tags = []
    for name, value in georeferencing.items():
        code, kind = GEOTIFF_TAGS[name]
        number = {"d": float, "H": int}.get(kind)
        values = str(value) if number is None else tuple(number(v) for v in value)
        tags.append((code, kind, 0 if number is None else len(values), values, True))
    return tags


def write_geotiff(file, blocks, shape, dtype, georeferencing=None, tile=GEOTIFF_TILE):
    """Write a single-band image as a tiled, deflate-compressed (Geo)TIFF, band by band.

    Parameters
    ----------
    file : str, Path or binary file
        Where to write; a partial file is left if ``blocks`` fails.
    blocks : iterable of numpy.ndarray
        The image top to bottom, in full-width bands of whole tile rows: each ``tile[0]`` rows
        (or a multiple), the last possibly shorter. Only one band is held at a time.
    shape : tuple of int
        ``(height, width)``.
    dtype : numpy.dtype
    georeferencing : dict, optional
        GeoTIFF tags (:func:`georeferencing`), written with their codes and types.
    tile : tuple of int
        ``(rows, cols)`` of a tile, multiples of 16.
    """
    tifffile = _tifffile()
    dtype = np.dtype(dtype).newbyteorder("<")
    height, width = shape
    tifffile.imwrite(file, _tiles(blocks, shape, tile, dtype), shape=(height, width),
                     dtype=dtype, tile=tuple(tile), compression="zlib",
                     photometric="minisblack", metadata=None, byteorder="<",
                     bigtiff=height * width * dtype.itemsize > BIGTIFF_BYTES,
                     extratags=_extratags(georeferencing or {}))
