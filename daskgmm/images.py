"""Image files in and out (local or at URLs): PNG and JPEG read by Pillow, TIFF and BigTIFF by
tifffile (:mod:`daskgmm.tiff`, lazily by tiles), PNG written.

Every image file is read as a stack ``(n, height, width, channels)``: one image for PNG and
JPEG, one per page of a TIFF's first series (usually one).
"""

from pathlib import Path

import dask.array as da
import numpy as np

from . import tiff
from .storage import open_file, storage_options

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = PILLOW_SUFFIXES + tiff.TIFF_SUFFIXES
# Pillow modes whose pixels are not 8-bit, and the NumPy dtype each decodes to.
_PILLOW_DTYPES = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.int32,
                  "F": np.float32}
_CONVERTED_MODES = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("Reading and writing PNG/JPEG needs Pillow: pip install pillow") \
            from None
    return Image


def _decoded_mode(image):
    """The mode an image's pixels are read in: palette, 1-bit and colour-space modes convert."""
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return _CONVERTED_MODES.get(image.mode, image.mode)


def is_tiff(path):
    """Whether an image file is a TIFF, by its name: read by tifffile, not Pillow."""
    return Path(str(path)).suffix.lower() in tiff.TIFF_SUFFIXES


def image_file_info(path, options=None):
    """Return the ``(n, height, width, channels)`` shape and dtype of an image file, from its
    header.

    Parameters
    ----------
    path : str or Path
        A local file or a URL (:func:`daskgmm.storage.open_file`).
    options : dict, optional
        The fsspec options of a URL (the current ``storage`` section's by default).

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype

    Raises
    ------
    ValueError
        If the file cannot be read as an image.
    """
    if is_tiff(path):
        layout = tiff.tiff_layout(path, options)
        return layout.shape, layout.dtype
    Image = _pillow()
    try:
        with open_file(path, options) as file, Image.open(file) as image:
            mode, (width, height) = _decoded_mode(image), image.size
    except PermissionError:  # a refused read is not a damaged image
        raise
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{str(path)!r} is not a readable image ({error}).") from None
    dtype = np.dtype(_PILLOW_DTYPES.get(mode, np.uint8))
    return (1, height, width, Image.getmodebands(mode)), dtype


def georeferencing(path, options=None):
    """The GeoTIFF tags of an image file (:func:`daskgmm.tiff.georeferencing`); empty for a
    file that has none (every PNG and JPEG)."""
    return tiff.tiff_layout(path, options).georeferencing if is_tiff(path) else {}


def read_image_file(path, options=None):
    """Decode a PNG or JPEG file to an array of shape ``(height, width, channels)``.

    Parameters
    ----------
    path : str or Path
        A local file or a URL.
    options : dict, optional
        The fsspec options of a URL: given by the client, as a task has no ``storage`` section.

    Returns
    -------
    numpy.ndarray
        In native byte order; one channel for a grey image.
    """
    Image = _pillow()
    with open_file(path, options) as file, Image.open(file) as image:
        mode = _decoded_mode(image)
        pixels = np.asarray(image if mode == image.mode else image.convert(mode))
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def open_image_files(files, shape, dtype):
    """Stack same-sized image files lazily: a PNG or JPEG in one chunk, a TIFF by its tiles.

    Parameters
    ----------
    files : list of str or Path
    shape : tuple of int
        ``(n, height, width, channels)`` of every file (see :func:`image_file_info`).
    dtype : numpy.dtype

    Returns
    -------
    dask.array.Array of shape (n_files * n, height, width, channels)
    """
    return da.concatenate([_open_image_file(str(f), shape, dtype) for f in files])


def _open_image_file(path, shape, dtype):
    options = storage_options(path)
    if is_tiff(path):
        return tiff.open_tiff(path, tiff.tiff_layout(path, options), options)
    import dask

    return da.from_delayed(dask.delayed(read_image_file)(path, options), shape=shape[1:],
                           dtype=dtype)[None]


def image_file_error(path, options=None):
    """Decode every pixel of an image file; return why that failed, or None if it did not.

    A batch checks its image files with this on the cluster before reading any of them: a file
    whose header reads but whose pixels do not (truncated, corrupt) fails only when decoded.
    """
    if is_tiff(path):
        return tiff.tiff_file_error(path, options)
    try:
        read_image_file(path, options)
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error})"
    return None


def encode_png(pixels):
    """The bytes of a PNG file of an ``(height, width, 3)`` or ``(height, width)`` uint8 array."""
    import io

    buffer = io.BytesIO()
    _pillow().fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path, pixels):
    """Write an ``(height, width, 3)`` or ``(height, width)`` uint8 array as a PNG file.

    Parameters
    ----------
    path : str or Path
        Its folder is created if missing.
    pixels : numpy.ndarray
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(encode_png(pixels))
