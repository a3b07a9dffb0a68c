"""Outputs of every possible colour, evaluated once: the segment job's shortcut for 8-bit images.

A pixel's label, log-likelihood and probabilities depend only on its value. An 8-bit RGB image
has at most 2**24 colours, so an image of many more pixels than that is labelled faster by
evaluating each colour once, in a table, and looking every pixel's colour up in it (about a
sixth of the per-pixel evaluation's time, bench/README.md). The table's entries come from the
same evaluation as the pixels' (:func:`daskgmm.evaluation.evaluate_rows`, same density, same
transform), so the outputs are the same.
"""

import dask
import numpy as np

from daskgmm.evaluation import evaluate_rows
from daskgmm.threads import single_threaded_blas

# The largest table: every colour of 8-bit RGB. Wider pixels are evaluated pixel by pixel.
MAX_COLOURS = 1 << 24
# A table pays when the image has at least this many pixels per colour.
MIN_PIXELS_PER_COLOUR = 2
# The table's largest size in bytes, all outputs together (probabilities take K floats each).
MAX_TABLE_BYTES = 512 * 2**20
# Colours evaluated per task while the table is built.
COLOURS_PER_TASK = 1 << 20


def n_colours(dtype, n_channels):
    """The number of values a pixel of ``n_channels`` integers of ``dtype`` can take, or None
    if that is more than :data:`MAX_COLOURS` (or the pixels are not integers)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return None
    bits = 8 * dtype.itemsize * n_channels
    return 1 << bits if (1 << bits) <= MAX_COLOURS else None


def worth_a_table(dtype, n_channels, n_pixels, targets):
    """Whether labelling ``n_pixels`` pixels through a colour table is cheaper.

    Parameters
    ----------
    dtype : numpy dtype
        Of the pixels' channels.
    n_channels : int
    n_pixels : int
        All pixels the pass labels.
    targets : dict of str to array
        The output arrays; the table holds one entry of each per colour.
    """
    colours = n_colours(dtype, n_channels)
    if colours is None or n_pixels < MIN_PIXELS_PER_COLOUR * colours:
        return False
    entry_bytes = sum(np.dtype(target.dtype).itemsize * int(np.prod(target.shape[3:]))
                      for target in targets.values())
    return colours * entry_bytes <= MAX_TABLE_BYTES


def colour_rows(start, stop, dtype, n_channels):
    """The pixels whose codes (:func:`pixel_codes`) are ``start .. stop - 1``, as rows."""
    codes = np.arange(start, stop, dtype=np.uint32)
    bits = 8 * np.dtype(dtype).itemsize
    unsigned = np.empty((len(codes), n_channels), dtype=np.dtype(dtype).str.replace("i", "u"))
    for channel in range(n_channels):  # a column at a time: no (n, C) uint32 temporary
        shift = np.uint32(bits * (n_channels - 1 - channel))
        unsigned[:, channel] = (codes >> shift) & np.uint32((1 << bits) - 1)
    return unsigned.view(dtype)


def pixel_codes(pixels):
    """Each integer pixel row's code: its channels' bits side by side, the first channel highest."""
    bits = 8 * pixels.dtype.itemsize
    unsigned = pixels.view(pixels.dtype.str.replace("i", "u"))
    codes = unsigned[:, 0].astype(np.uint32)
    for channel in range(1, pixels.shape[1]):
        codes <<= np.uint32(bits)
        codes |= unsigned[:, channel]
    return codes


def _table_part(start, stop, dtype, n_channels, density, transform, entries):
    rows = colour_rows(start, stop, dtype, n_channels)
    if transform is not None:
        rows = transform(rows)
    outputs = {name: np.empty((len(rows),) + shape, dtype=entry_dtype)
               for name, (shape, entry_dtype) in entries.items()}
    with single_threaded_blas():
        evaluate_rows(rows, density, **outputs)
    return outputs


def _join(*parts):
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def colour_table(dtype, n_channels, targets, density, transform=None):
    """The lazy table of every colour's outputs, built in tasks of :data:`COLOURS_PER_TASK`.

    Parameters
    ----------
    dtype : numpy dtype
        Of the pixels' channels (integers; :func:`n_colours` not None).
    n_channels : int
    targets : dict of str to array
        The output arrays ``(n, H, W, ...)``: the table has one entry of each per colour.
    density : LogDensity
    transform : callable, optional
        Maps pixel rows to the model's features, as for the pixels.

    Returns
    -------
    dask.delayed.Delayed
        Of a dict of output name to array, indexed by the colour's code (:func:`pixel_codes`).
    """
    colours = n_colours(dtype, n_channels)
    entries = {name: (tuple(target.shape[3:]), target.dtype) for name, target in targets.items()}
    task = dask.delayed(_table_part, pure=True)
    parts = [task(start, min(start + COLOURS_PER_TASK, colours), dtype, n_channels, density,
                  transform, entries)
             for start in range(0, colours, COLOURS_PER_TASK)]
    return dask.delayed(_join, pure=True)(*parts)


def look_up(table, pixels):
    """Each output of the rows ``pixels`` (integers), taken from the colour table."""
    codes = pixel_codes(pixels)
    return {name: values.take(codes, axis=0) for name, values in table.items()}
