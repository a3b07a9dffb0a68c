"""segment: label every pixel of one or more images with its most probable mixture component.

Input: a Zarr array of images, ``(n, H, W, C)`` or ``(H, W, C)`` with the channel axis anywhere
(``input.channel_axis``, e.g. 0 for a channels-first raster), of any numeric dtype; or
PNG/JPEG/TIFF files, ingested to Zarr first. A pixel has no data, and takes no part in fitting,
when any channel equals ``input.nodata``, a float channel is NaN or infinite, or the Zarr array
``input.mask`` (``(n, H, W)`` or ``(H, W)``, True = valid) is False there.

Output folder: ``result.zarr`` with ``labels`` ``(n, H, W)`` (smallest unsigned dtype; no-data
pixels hold its largest value) and, when asked, ``probabilities`` ``(n, H, W, K)`` and
``log_likelihood`` ``(n, H, W)`` in float32 (NaN without data); ``model.zarr``; and
``previews/image-0000.png``..., each pixel painted with the mean colour of its component.
"""

import logging
import operator
from functools import reduce
from pathlib import Path

import dask.array as da
import numpy as np

from daskgmm import store
from daskgmm.config import ConfigError

from .common import (
    Plan,
    component_counts,
    compute,
    describe_fit,
    describe_predictions,
    fit_or_load,
    job_output,
    prediction_arrays,
    prepare_job,
    resolve_source,
)
from .render import colour_labels, component_colours

logger = logging.getLogger(__name__)

# Pixels per chunk when the images are cut into rows of pixels.
CHUNK_PIXELS = 1 << 20
# Previews are subsampled to at most this many pixels on their longer side.
PREVIEW_SIDE = 1024
# Images whose previews are computed together.
PREVIEW_BATCH = 16


def image_stack_shape(shape, channel_axis, key="input"):
    """Return the ``(n, H, W, C)`` shape of an image array of ``shape`` read as a stack.

    Raises
    ------
    ConfigError
        If ``shape`` is not 3-D or 4-D, or ``channel_axis`` is not one of its axes.
    """
    if len(shape) not in (3, 4) or None in shape:
        raise ConfigError(f"segment needs images of shape (H, W, C) or (n, H, W, C); the input "
                          f"has shape {tuple(shape)}", f"{key}.path")
    if not -len(shape) <= channel_axis < len(shape):
        raise ConfigError(f"is {channel_axis}, not an axis of the input's shape {tuple(shape)}",
                          f"{key}.channel_axis")
    axis = channel_axis % len(shape)
    rest = tuple(size for i, size in enumerate(shape) if i != axis)
    return (1,) * (4 - len(shape)) + rest + (shape[axis],)


def as_image_stack(array, channel_axis):
    """Return the images as ``(n, H, W, C)``, chunked so pixels reshape to rows without copies.

    A chunk holds whole rows of one image (large images) or whole images (small ones), about
    :data:`CHUNK_PIXELS` pixels, with all channels.
    """
    array = da.moveaxis(array, channel_axis, -1)
    if array.ndim == 3:
        array = array[None]
    _, height, width, channels = array.shape
    if height * width >= CHUNK_PIXELS:
        chunks = (1, max(1, CHUNK_PIXELS // width), width, channels)
    else:
        chunks = (max(1, CHUNK_PIXELS // (height * width)), height, width, channels)
    return array.rechunk(chunks)


def valid_pixels(images, nodata=None, mask=None):
    """Return ``(n, H, W)`` booleans, True where a pixel has data, or None if all have.

    Parameters
    ----------
    images : dask.array.Array of shape (n, H, W, C)
    nodata : float, optional
        A pixel with this value in any channel has no data.
    mask : dask.array.Array of shape (n, H, W) or (H, W), optional
        False (zero) where a pixel has no data.
    """
    checks = []
    if images.dtype.kind == "f":
        checks.append(da.isfinite(images).all(axis=-1))
    if nodata is not None:
        checks.append((images != nodata).all(axis=-1))
    if mask is not None:
        mask = da.broadcast_to(mask.astype(bool), images.shape[:3])
        checks.append(mask.rechunk(images.chunks[:3]))
    return reduce(operator.and_, checks) if checks else None


def _mask(config, stack_shape):
    """The ``input.mask`` array, checked against the images, or None."""
    if config.mask is None:
        return None
    try:
        mask = store.open_array(config.mask)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error), "input.mask") from None
    if mask.shape not in (stack_shape[:3], stack_shape[1:3]):
        raise ConfigError(f"has shape {mask.shape}; the images need {stack_shape[:3]} or "
                          f"{stack_shape[1:3]}", "input.mask")
    return mask


def _check_preview_channels(output, n_channels):
    for channel in output.preview_channels or ():
        if not 0 <= channel < n_channels:
            raise ConfigError(f"channel {channel} does not exist; the images have {n_channels}",
                              "output.preview_channels")


def _describe_outputs(config, stack_shape, n_components):
    lines = describe_predictions(config.output, stack_shape[:3], n_components)
    if config.output.preview:
        lines.append(f"previews/image-0000.png ... ({stack_shape[0]} image(s))")
    return lines


def prepare(config, resume=False):
    """Check a segment job and plan it (no work is done).

    Returns
    -------
    Prepared
    """
    output = Path(config.output.path)
    ingest_to = output.with_name(output.name + ".input.zarr")
    source = resolve_source(config.input, "input", str(ingest_to))
    stack_shape = image_stack_shape(source.shape, config.input.channel_axis)
    mask = _mask(config.input, stack_shape)
    _check_preview_channels(config.output, stack_shape[-1])
    prepared = prepare_job(config, {"input": source}, stack_shape[-1], resume)
    prepared.extra["mask"] = mask
    inputs = [source.describe()] + ([f"mask: {config.input.mask}"] if mask is not None else [])
    steps = describe_fit(prepared, "valid pixels") + [
        f"predict all {int(np.prod(stack_shape[:3]))} pixels of {stack_shape[0]} image(s)"]
    outputs = _describe_outputs(config, stack_shape, prepared.n_components)
    prepared.plan = Plan("segment", inputs, steps, outputs)
    return prepared


def run(prepared):
    """Fit (or load) the model, label every pixel and write the output folder.

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    config = prepared.config
    images = as_image_stack(prepared.sources["input"].open(), config.input.channel_axis)
    n, height, width, channels = images.shape
    valid = valid_pixels(images, config.input.nodata, prepared.extra["mask"])
    rows = images.reshape(-1, channels)
    valid_rows = None if valid is None else valid.reshape(-1)
    fitted = fit_or_load(prepared, rows, valid_rows)
    arrays, fills = prediction_arrays(fitted, rows, config.output, valid_rows)
    counts = component_counts(arrays["labels"], fitted.model.n_components)
    arrays = {name: array.reshape((n, height, width) + array.shape[1:])
              for name, array in arrays.items()}
    with job_output(prepared) as output:
        (pixel_counts,) = output.write_arrays(arrays, fills, also=[counts])
        output.write_model(fitted)
        if config.output.preview:
            _write_previews(output, fitted, images.dtype, config.output.preview_channels)
        output.summary.update({
            "images": [n, height, width, channels],
            "labels": f"{arrays['labels'].shape} {arrays['labels'].dtype}",
            "pixels_per_component": [int(c) for c in pixel_counts],
        })
    return output.summary


def _write_previews(output, fitted, input_dtype, channels):
    """Write one PNG per image, pixels painted with their component's mean colour."""
    labels = output.read_array("labels")
    n, height, width = labels.shape
    step = max(1, -(-max(height, width) // PREVIEW_SIDE))
    means = fitted.model.means_
    if fitted.scaler is not None:
        means = fitted.scaler.inverse(means)
    colours = component_colours(means, input_dtype, channels)
    for start in range(0, n, PREVIEW_BATCH):
        batch = range(start, min(n, start + PREVIEW_BATCH))
        pictures = compute(*[labels[i, ::step, ::step] for i in batch])
        for i, picture in zip(batch, pictures):
            output.write_png(f"previews/image-{i:04d}.png", colour_labels(picture, colours))
