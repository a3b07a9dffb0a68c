"""Images as the segment job reads them: chunk by chunk, never rechunked.

An image stack is ``(n, H, W, C)`` in the input's own chunks. Every step of the job is one task
per chunk of pixels (with all its channels, however the channel axis is chunked), so no pixel
ever leaves its chunk: which pixels have data, a uniform sample of them for the fit, and each
chunk's labels and scores (:mod:`.labelling`).
"""

from dataclasses import dataclass
from functools import reduce

import dask
import dask.array as da
import numpy as np

from daskgmm.lowest import merge_lowest

from .progress import compute
from .training import sample_rows

# Fan-in of the merges of the chunks' small results.
MERGE_FAN_IN = 8
# A training sample up to this size is drawn to the client and fitted in memory; a larger one
# stays on the cluster (drawn row by row as tables are, :func:`.training.sample_rows`).
SAMPLE_IN_MEMORY_BYTES = 256 * 2**20
# The largest share of the workers' memory an image stack may take to be held between passes.
HOLD_SHARE = 0.25
# The spawn key of the generator that shares a sample among the chunks.
SHARES_STREAM = 1


def image_stack(array, channel_axis):
    """Return the images of ``array`` as ``(n, H, W, C)``, in the input's chunks (no copy).

    Zarr's chunks always form a regular grid; other chunks are made regular first
    (:func:`with_regular_chunks`), the one case where the image is rechunked.
    """
    if channel_axis % array.ndim != array.ndim - 1:
        array = da.moveaxis(array, channel_axis, -1)
    return with_regular_chunks(array[None] if array.ndim == 3 else array)


def held_in_memory(images):
    """``images`` persisted on the job's cluster when they fit in :data:`HOLD_SHARE` of its
    workers' memory, else as they are (read again by each pass).

    A job that fits its model reads the image twice, for the sample and for the labels; held,
    it reads it once. Workers without a memory limit give no budget, so nothing is held.
    """
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return images
    limits = [worker.get("memory_limit") or 0
              for worker in client.scheduler_info()["workers"].values()]
    if not limits or 0 in limits or images.nbytes > HOLD_SHARE * sum(limits):
        return images
    return client.persist(images)


def with_regular_chunks(images):
    """``images`` as they are if their chunks form a regular grid (all of an axis equal but
    the last, as Zarr's are), else rechunked to one: each task writes whole output chunks."""
    regular = all(len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]
                  for sizes in images.chunks)
    return images if regular else images.rechunk(images.chunksize)


@dataclass(frozen=True)
class PixelChunk:
    """One chunk of an image stack: where it lies, and the tasks that hold its data.

    ``parts`` hold the chunk's channels (one per chunk of the channel axis), ``mask`` its part of
    the validity mask (or None); ``number`` counts the chunks of all stacks of a job in order.
    """

    number: int
    region: tuple
    parts: list
    mask: object = None


def pixel_chunks(images, mask=None, first_number=0):
    """Return the :class:`PixelChunk` list of ``images`` (``(n, H, W, C)``), in C order.

    Parameters
    ----------
    images : dask.array.Array
    mask : dask.array.Array of shape (n, H, W) or (H, W), optional
        True where pixels are valid; taken in the images' chunks (rechunked only if its own
        chunks differ).
    first_number : int
        The number of the first chunk (for the chunks of several stacks).
    """
    if mask is not None:
        mask = da.broadcast_to(mask.astype(bool), images.shape[:3])
        if mask.chunks != images.chunks[:3]:
            mask = mask.rechunk(images.chunks[:3])
        mask = mask.to_delayed()
    parts = images.to_delayed()
    offsets = [np.cumsum((0,) + sizes) for sizes in images.chunks[:3]]
    chunks = []
    for number, index in enumerate(np.ndindex(parts.shape[:3]), start=first_number):
        region = tuple(slice(int(offsets[axis][i]), int(offsets[axis][i + 1]))
                       for axis, i in enumerate(index))
        chunks.append(PixelChunk(number, region, list(parts[index]),
                                 None if mask is None else mask[index]))
    return chunks


def chunk_pixels(parts):
    """The pixels of one chunk as rows ``(pixels, C)``, from its channel parts."""
    block = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    return block.reshape(-1, block.shape[-1])


def valid_pixels(pixels, nodata=None, mask=None):
    """Return which rows of ``pixels`` have data (booleans), or None when all have.

    A pixel has no data where a float channel is NaN or infinite, where any channel equals
    ``nodata``, or where ``mask`` (the chunk's part of ``input.mask``) is False.
    """
    checks = []
    if pixels.dtype.kind == "f":
        checks.append(np.isfinite(pixels).all(axis=1))
    if nodata is not None:
        checks.append((pixels != nodata).all(axis=1))
    if mask is not None:
        checks.append(np.asarray(mask, dtype=bool).reshape(-1))
    if not checks:
        return None
    valid = checks[0]
    for check in checks[1:]:
        valid &= check
    return valid


def tree_merge(values, merge):
    """Merge delayed values with ``merge(*values)`` in tasks of :data:`MERGE_FAN_IN`."""
    task = dask.delayed(merge, pure=True)
    while len(values) > 1:
        values = [task(*values[i : i + MERGE_FAN_IN])
                  for i in range(0, len(values), MERGE_FAN_IN)]
    return values[0]


# ------------------------------------------------------------------ the training sample


def training_pixels(config, stacks, chunks):
    """The pixels to fit on: about ``training.sample`` of the valid ones, or all of them.

    Parameters
    ----------
    config : JobConfig
    stacks : list of dask.array.Array of shape (n, H, W, C)
        The images of ``chunks`` (several stacks for a batch, of the same channels).
    chunks : list of PixelChunk

    Returns
    -------
    ndarray or dask.array.Array of shape (n_rows, C)
        In memory when the sample is small (:data:`SAMPLE_IN_MEMORY_BYTES`), else on the cluster.
    """
    size, seed = config.training.sample, config.model.random_state
    nodata, channels = config.input.nodata, stacks[0].shape[-1]
    dtype = np.result_type(*(images.dtype for images in stacks))
    if size is not None and size * channels * dtype.itemsize <= SAMPLE_IN_MEMORY_BYTES:
        return sample_valid_pixels(chunks, size, seed, dtype, nodata)
    rows, valid = all_pixel_rows(chunks, dtype, channels, nodata)
    return sample_rows(rows, valid, size, seed)


def _sample_chunk(parts, mask, number, seed, size, dtype, nodata):
    """The chunk's ``size`` lowest keys and their valid pixels, as ``(keys, items)``.

    Every valid pixel has a uniform key on (0, 1), but only the ``k`` lowest of a chunk can win,
    so only they are drawn: as the order statistics they are, ``S_i / (S_k + T)`` with ``S_i``
    the sums of ``i`` standard exponentials and ``T ~ Gamma(n + 1 - k)``, at ``k`` distinct
    valid pixels chosen uniformly. The same law as a key per pixel, at a cost in ``k``.
    """
    pixels = chunk_pixels(parts)
    valid = valid_pixels(pixels, nodata, mask)
    candidates = np.arange(len(pixels)) if valid is None else np.flatnonzero(valid)
    n_valid = len(candidates)
    keep = min(size, n_valid)
    rng = np.random.default_rng([seed, number])
    chosen = candidates[rng.choice(n_valid, size=keep, replace=False)]
    sums = np.cumsum(rng.standard_exponential(keep))
    keys = sums / ((sums[-1] if keep else 0.0) + rng.gamma(n_valid + 1 - keep))
    items = np.empty(keep, dtype=_item_dtype(dtype, pixels.shape[1]))
    items["chunk"], items["pixel"], items["value"] = number, chosen, pixels[chosen]
    return keys, items


def _item_dtype(dtype, n_channels):
    return np.dtype([("chunk", np.int64), ("pixel", np.int64), ("value", dtype, (n_channels,))])


def _merge_samples(size):
    def merge(*samples):
        return reduce(lambda left, right: merge_lowest(left, right, size), samples)

    return merge


def sample_valid_pixels(chunks, size, seed, dtype, nodata=None):
    """Draw ``size`` valid pixels uniformly without replacement, in one pass over the chunks.

    When every pixel is valid (integer pixels, no ``nodata``, no mask), each chunk's share of
    the sample is drawn first, from the multivariate hypergeometric law of the chunks' sizes,
    and each chunk then draws its share (:func:`_draw_share`). Otherwise every valid pixel gets
    a uniform random key and the ``size`` lowest keys win (:func:`_sample_chunk`). Either way
    the draws come from generators seeded by ``(seed, chunk)``, so the sample depends on the
    seed and the chunks alone, not on which worker read which chunk. The pixels are returned in
    the order of the images (chunk by chunk). All valid pixels when there are fewer.

    Parameters
    ----------
    chunks : list of PixelChunk
    size : int
    seed : int or None
        None draws a fresh seed.
    dtype : dtype
        Of the pixels returned (the images').
    nodata : float, optional

    Returns
    -------
    ndarray of shape (n_drawn, C)
    """
    seed = np.random.SeedSequence(seed).entropy
    label = f"drew {size} valid pixels to fit on"
    if not _every_pixel_valid(chunks, dtype, nodata):
        draw = dask.delayed(_sample_chunk, pure=True)
        samples = [draw(chunk.parts, chunk.mask, chunk.number, seed, size, dtype, nodata)
                   for chunk in chunks]
        (sample,) = compute(tree_merge(samples, _merge_samples(size)), label=label)
        return np.sort(sample[1], order=["chunk", "pixel"])["value"]
    shares = _shares(chunks, size, seed)
    draw = dask.delayed(_draw_share, pure=True)
    drawn = [draw(chunk.parts, chunk.number, seed, share, dtype)
             for chunk, share in zip(chunks, shares) if share]
    (sample,) = compute(tree_merge(drawn, _concatenate), label=label)
    return sample


def _every_pixel_valid(chunks, dtype, nodata):
    """Whether no pixel of ``chunks`` can lack data (integer pixels, no nodata, no mask)."""
    return (np.dtype(dtype).kind != "f" and nodata is None
            and all(chunk.mask is None for chunk in chunks))


def chunk_size(chunk):
    """The number of pixels of a :class:`PixelChunk`."""
    return int(np.prod([part.stop - part.start for part in chunk.region]))


def _shares(chunks, size, seed):
    """How many of ``size`` pixels drawn uniformly without replacement fall in each chunk."""
    sizes = np.array([chunk_size(chunk) for chunk in chunks], dtype=np.int64)
    if size >= sizes.sum():
        return sizes
    # Its own stream: the chunks' generators are seeded by (seed, chunk number).
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SHARES_STREAM,)))
    return rng.multivariate_hypergeometric(sizes, size)


def _draw_share(parts, number, seed, share, dtype):
    """``share`` distinct pixels of one chunk, chosen uniformly, in the chunk's order."""
    pixels = chunk_pixels(parts)
    rng = np.random.default_rng([seed, number])
    chosen = np.sort(rng.choice(len(pixels), size=share, replace=False))
    return pixels[chosen].astype(dtype, copy=False)


def _concatenate(*parts):
    return np.concatenate(parts)


def all_pixel_rows(chunks, images_dtype, n_channels, nodata=None):
    """All pixels of ``chunks`` as lazy rows ``(pixels, C)`` and their validity (or None).

    Chunk by chunk, in the order of :func:`pixel_chunks`: for a fit on every valid pixel.
    The validity is None when no pixel can lack data (integer pixels, no nodata, no mask).
    """
    checked = not _every_pixel_valid(chunks, images_dtype, nodata)
    rows, valid = [], []
    for chunk in chunks:
        n_pixels = chunk_size(chunk)
        rows.append(da.from_delayed(dask.delayed(chunk_pixels)(chunk.parts),
                                    (n_pixels, n_channels), dtype=images_dtype))
        valid.append(da.from_delayed(
            dask.delayed(_valid_or_all)(chunk.parts, chunk.mask, nodata, n_pixels),
            (n_pixels,), dtype=bool))
    return da.concatenate(rows), (da.concatenate(valid) if checked else None)


def _valid_or_all(parts, mask, nodata, n_pixels):
    valid = valid_pixels(chunk_pixels(parts), nodata, mask)
    return np.ones(n_pixels, dtype=bool) if valid is None else valid
