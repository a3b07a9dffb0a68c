"""The segment job's one pass over an image: every chunk labelled, scored and written in place.

Each task reads one chunk of pixels, evaluates the mixture's log-densities once
(:func:`daskgmm.evaluation.evaluate_rows`), and writes the chunk's labels, log-likelihood and
probabilities straight into the staged output arrays, whose chunks are the input's. Only the
chunk's counts per component come back, merged in a tree. So the image is read once for the
output, no pixel leaves its chunk, and nothing of the image's size passes through the client.
"""

import dask
import numpy as np
from dask.base import tokenize

from daskgmm.evaluation import evaluate_rows
from daskgmm.kernels import count_nonfinite_rows
from daskgmm.store import ArraySpec
from daskgmm.threads import single_threaded_blas

from .colour_table import colour_table, look_up, worth_a_table
from .pixels import chunk_pixels, chunk_size, tree_merge, valid_pixels
from .predictions import PIXEL_DIMS, dimension_names, label_dtype, no_data_label


def output_arrays(config, shape, chunks, n_components):
    """Name -> :class:`~daskgmm.store.ArraySpec` of the arrays the pass writes.

    Parameters
    ----------
    config : OutputConfig
    shape, chunks : tuple
        Of the images' pixels, ``(n, H, W)``: the outputs' chunks follow the input's.
    n_components : int
    """
    labels = label_dtype(n_components)
    specs = {"labels": (shape, chunks, labels, no_data_label(labels))}
    if config.probabilities:
        specs["probabilities"] = (shape + (n_components,), chunks + (n_components,),
                                  np.dtype(np.float32), np.nan)
    if config.log_likelihood:
        specs["log_likelihood"] = (shape, chunks, np.dtype(np.float32), np.nan)
    return {name: ArraySpec(*spec, dims=dimension_names(spec[0], PIXEL_DIMS))
            for name, spec in specs.items()}


def label_chunk(parts, mask, region, targets, density, transform, nodata, table=None,
                preview_step=None):
    """Label, score and write one chunk; return its pixel count per component (and no-data).

    With a colour ``table`` (:func:`.colour_table.colour_table`), the outputs are looked up.
    With a ``preview_step``, the chunk's part of its image's preview comes back too.

    Returns
    -------
    counts : ndarray of shape (n_components + 1,)
        Pixels given each label 0..K-1, then the pixels with a NaN or an infinity.
    piece : ndarray of shape (h, w) or None
        The chunk's labels at the rows and columns that are multiples of ``preview_step`` in
        its image (:func:`preview_piece`); None without a step.
    """
    pixels = chunk_pixels(parts)
    valid = valid_pixels(pixels, nodata, mask)
    rows = pixels if valid is None or valid.all() else np.where(valid[:, None], pixels, 0)
    if table is not None:
        outputs = look_up(table, rows)
    else:
        outputs = _evaluate(rows, targets, density, transform)
    if valid is not None:
        for name, values in outputs.items():
            values[~valid] = targets[name].fill_value
    shape = tuple(part.stop - part.start for part in region)
    for name, values in outputs.items():
        targets[name][region] = values.reshape(shape + values.shape[1:])
    labels = outputs["labels"] if valid is None else outputs["labels"][valid]
    counts = np.bincount(labels, minlength=density.n_components)
    n_non_finite = count_nonfinite_rows(pixels) if pixels.dtype.kind == "f" else 0
    piece = None
    if preview_step is not None:
        piece = preview_piece(outputs["labels"].reshape(shape)[0], region, preview_step)
    return np.append(counts, n_non_finite), piece


def preview_piece(labels, region, step):
    """The labels of one chunk (``(h, w)`` at ``region``) at its image's every ``step``-th row
    and column: its part of ``image[::step, ::step]``, placed by :func:`assemble_preview`."""
    rows, columns = region[1:3]
    return labels[-rows.start % step::step, -columns.start % step::step].copy()


def assemble_preview(pieces, regions, shape, step, dtype):
    """Join the :func:`preview_piece` of every chunk of one image into ``image[::step, ::step]``.

    Parameters
    ----------
    pieces : list of ndarray
    regions : list of tuple of slice
        Where each piece's chunk lies, ``(image, rows, columns)``.
    shape : tuple of int
        The image's ``(H, W)``.
    step : int
    dtype : numpy dtype
        Of the labels.
    """
    preview = np.empty((-(-shape[0] // step), -(-shape[1] // step)), dtype=dtype)
    for piece, (_, rows, columns) in zip(pieces, regions):
        top, left = -(-rows.start // step), -(-columns.start // step)
        preview[top:top + piece.shape[0], left:left + piece.shape[1]] = piece
    return preview


def _evaluate(rows, targets, density, transform):
    if transform is not None:
        rows = transform(rows)
    outputs = {name: np.empty((len(rows),) + target.shape[3:], dtype=target.dtype)
               for name, target in targets.items()}
    with single_threaded_blas():  # the cluster's threads are the parallelism
        evaluate_rows(rows, density, **outputs)
    return outputs


def _sum(*counts):
    return np.sum(counts, axis=0)


def label_pixels(chunks, targets, density, transform=None, nodata=None, pixels=None,
                 preview_step=None):
    """The lazy pass writing every chunk's outputs; computed, it gives the per-label counts.

    Images of many more pixels than they have possible colours (8-bit RGB and narrower) are
    labelled through a table of every colour's outputs (:mod:`.colour_table`).

    Parameters
    ----------
    chunks : list of PixelChunk
    targets : dict of str to zarr.Array
        The arrays of :func:`output_arrays`, created empty (``labels`` among them).
    density : LogDensity
        The model, for rows of the pixels' dtype (after ``transform``).
    transform : callable, optional
        Maps pixel rows to the model's features (the job's standardisation).
    nodata : float, optional
    pixels : tuple of (numpy dtype, int), optional
        The pixels' dtype and number of channels; without it, every pixel is evaluated.
    preview_step : int, optional
        Also take every chunk's part of its image's preview at this step (:func:`preview_piece`),
        so previews need no second read of the labels.

    Returns
    -------
    counts : dask.delayed.Delayed
        Of an ndarray: pixels given each label, then the pixels with NaN or infinity.
    pieces : list of dask.delayed.Delayed
        Each chunk's preview piece (None without ``preview_step``), in the order of ``chunks``.
    """
    table = None
    n_pixels = sum(chunk_size(chunk) for chunk in chunks)
    if pixels is not None and worth_a_table(*pixels, n_pixels, targets):
        table = colour_table(*pixels, targets, density, transform)
    # Named from one token of the arguments the tasks share: tokenizing the Zarr targets anew
    # for every task held the pass back by 0.1 s of the client's time (bench/README.md).
    shared = tokenize(targets, density, transform, nodata, table, preview_step)
    task = dask.delayed(label_chunk, nout=2)
    results = [task(chunk.parts, chunk.mask, chunk.region, targets, density, transform, nodata,
                    table, preview_step,
                    dask_key_name="label-chunk-" + tokenize(shared, chunk.parts, chunk.mask,
                                                            chunk.region))
               for chunk in chunks]
    return tree_merge([counts for counts, _ in results], _sum), [piece for _, piece in results]
