"""segment: label every pixel of one or more images with its most probable mixture component.

Input: a Zarr array of images, ``(n, H, W, C)`` or ``(H, W, C)`` with the channel axis anywhere
(``input.channel_axis``, e.g. 0 for a channels-first raster), of any numeric dtype; an OME-Zarr
image, whose axes say where the channels are (:mod:`.described_inputs`; ``training.level``
fits on a coarser level); an xarray variable in Zarr; TIFF files, read by their tiles; or
PNG/JPEG files, ingested to Zarr first. A pixel has no data, and takes no part in fitting, when
any channel equals ``input.nodata``, a float channel is NaN or infinite, or the Zarr array
``input.mask`` (``(n, H, W)`` or ``(H, W)``, True = valid) is False there.

Output folder: ``result.zarr`` with ``labels`` ``(n, H, W)`` (smallest unsigned dtype; no-data
pixels hold its largest value) and, when asked, ``probabilities`` ``(n, H, W, K)`` and
``log_likelihood`` ``(n, H, W)`` in float32 (NaN without data), dims named ``image``, ``y``,
``x``, ``component``; ``model.zarr``; ``previews/image-0000.png``..., each pixel painted with
the mean colour of its component; for OME-Zarr input (or ``output.format: ome-zarr``) the
labels and scores as OME-Zarr images (:mod:`.ome_output`); with ``output.geotiff``, the labels
as GeoTIFF files (:mod:`.geotiff_output`).

Batch mode (a ``batch`` section), for an input that grows over time: every image file of the
folder or glob, every array of the Zarr group, or every field of an OME-Zarr plate, is an input
of its own (of any size), and each run processes only the inputs that are new or changed since
a run processed them. The output is then a batch store (:mod:`.batch`) that every run adds to:
``results/<input>/`` holds the same ``result.zarr`` and ``previews/`` for one input;
``models/<version>.zarr`` the model applied; ``manifest.json`` what was done with which model;
``runs.jsonl`` one summary per run. A run applies ``model.load``, or fits a model on the valid
pixels of its own inputs. An input that does not decode, or has the wrong number of channels,
is recorded and skipped (the runner then exits with status 3) and tried again once it changes.
"""

import logging
from functools import partial

import numpy as np

from daskgmm import store
from daskgmm.config import ConfigError
from daskgmm.kernels import float_dtype_of
from daskgmm.storage import sibling

from .inputs import resolve_source
from .job_model import fit_or_load_drawn
from .labelling import assemble_preview, label_pixels, output_arrays
from .geotiff_output import geotiff_name, write_label_geotiffs
from .ome_output import LABEL_IMAGE, LABELS, SCORE_IMAGES, write_ome_zarr, writes_ome_zarr
from .outputs import job_output
from .pixels import held_in_memory, image_stack, pixel_chunks, training_pixels
from .plan import Plan, describe_fit, prepare_job
from .predictions import describe_predictions, label_dtype, no_data_label
from .progress import compute
from .render import colour_labels, label_colours

logger = logging.getLogger(__name__)

# Previews are subsampled to at most this many pixels on their longer side.
PREVIEW_SIDE = 1024
# Images whose previews are computed together: taken in the labelling pass for a stack of at
# most this many, else read back from the labels this many at a time (the client's memory).
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


def channel_axis(source, config):
    """The input's channel axis: as its metadata say (OME-Zarr, xarray), else as configured."""
    return config.channel_axis if source.channel_axis is None else source.channel_axis


def _training_level(config, source, mask):
    """The coarser level of an OME-Zarr image that ``training.level`` fits on, as images
    ``(n, H, W, C)``, opened now to check it (later for an image the job generates first);
    None to fit on the input itself."""
    level = config.training.level
    if level == 0:
        return None
    if not source.kind.startswith("OME-Zarr"):
        raise ConfigError(f"is {level}, but only an OME-Zarr image has levels; the input is "
                          f"{source.kind}: set it to 0", "training.level")
    if mask is not None:
        raise ConfigError("applies to the full-resolution level; with training.level, leave "
                          "it out (or set training.level: 0)", "input.mask")
    opened = partial(_open_level, source.path, level)
    return opened if source.creates is not None else opened()


def _open_level(path, level):
    from .described_inputs import ngff_image, open_level  # they build on inputs

    return open_level(ngff_image(path, "input"), level, "input")


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


def _check_preview_bands(output, n_channels):
    for channel in output.preview_bands or ():
        if not 0 <= channel < n_channels:
            raise ConfigError(f"channel {channel} does not exist; the images have {n_channels}",
                              "output.preview_bands")


def _describe_outputs(config, source, stack_shape, n_components):
    lines = describe_predictions(config.output, stack_shape[:3], n_components)
    if config.output.preview:
        lines.append(f"previews/image-0000.png ... ({stack_shape[0]} image(s))")
    if writes_ome_zarr(config, source):
        lines += [f"{LABELS}/{LABEL_IMAGE} (OME-Zarr labels image)"] + [
            f"{image} (OME-Zarr image)" for name, image in SCORE_IMAGES.items()
            if getattr(config.output, name)]
    if config.output.geotiff:
        lines.append(f"{geotiff_name(0)} ... (GeoTIFF labels)")
    return lines


def prepare(config, resume=False):
    """Check a segment job and plan it (no work is done).

    Returns
    -------
    Prepared
    """
    if config.batch is not None:
        from .batch_run import prepare_batch  # batch_run builds on this module

        return prepare_batch(config)
    source = resolve_source(config.input, "input", sibling(config.output.path, ".input.zarr"))
    stack_shape = image_stack_shape(source.shape, channel_axis(source, config.input))
    mask = _mask(config.input, stack_shape)
    _check_preview_bands(config.output, stack_shape[-1])
    prepared = prepare_job(config, {"input": source}, stack_shape[-1], resume)
    prepared.extra["mask"] = mask
    prepared.extra["training_level"] = _training_level(config, source, mask)
    inputs = [source.describe()] + ([f"mask: {config.input.mask}"] if mask is not None else [])
    level = config.training.level
    steps = describe_fit(prepared, f"valid pixels{f' of level {level}' if level else ''}") + [
        f"predict all {int(np.prod(stack_shape[:3]))} pixels of {stack_shape[0]} image(s)"]
    outputs = _describe_outputs(config, source, stack_shape, prepared.n_components)
    prepared.plan = Plan("segment", inputs, steps, outputs)
    return prepared


def run(prepared):
    """Fit (or load) the model, label every pixel and write the output folder.

    In batch mode, only the new and changed inputs, into the batch store
    (:func:`.batch_run.run_batch`).

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    if prepared.config.batch is not None:
        from .batch_run import run_batch

        return run_batch(prepared)
    config = prepared.config
    source = prepared.sources["input"]
    images = image_stack(source.open(prepared.guard), channel_axis(source, config.input))
    if config.model.load is None and source.held:  # a fit: the sample's, the labels' pass
        images = held_in_memory(images)
    chunks = pixel_chunks(images, prepared.extra["mask"])
    fitted = fit_or_load_drawn(prepared, lambda: _training_sample(prepared, images, chunks))
    with job_output(prepared) as output:
        write_segmentation(output, fitted, images, chunks, config)
        write_placed_outputs(output, fitted, prepared.sources["input"], config)
        output.write_model(fitted)
    return output.summary


def _training_sample(prepared, images, chunks):
    """The pixels the model is fitted on: drawn from the images, or from the coarser level of
    ``training.level`` (a sample of every pixel, at a fraction of the reading)."""
    level = prepared.extra["training_level"]
    if level is None:
        return training_pixels(prepared.config, [images], chunks)
    level = level() if callable(level) else level
    logger.info("fitting on level %d of the image, %s", prepared.config.training.level,
                "x".join(map(str, level.shape[1:3])))
    return training_pixels(prepared.config, [level], pixel_chunks(level))


def write_placed_outputs(output, fitted, source, config):
    """Carry over what the input says of where its pixels are: its metadata and coordinates
    into ``result.zarr``, the labels as GeoTIFF files (``output.geotiff``), and the outputs as
    OME-Zarr images (:mod:`.ome_output`).

    Parameters
    ----------
    output : JobOutput
        Whose ``labels`` are written (:func:`write_segmentation`).
    fitted : Fitted
    source : Source
        The input, opened.
    config : JobConfig
    """
    if source.metadata:
        output.write_attrs(source.metadata)
    output.write_coords(source.coords)
    n_images = output.summary["images"][0]
    if config.output.geotiff:
        tags = source.metadata.get("geotiff") or [{}] * n_images
        no_data = no_data_label(label_dtype(fitted.model.n_components))
        output.summary["geotiff"] = write_label_geotiffs(output, tags, no_data)
    if writes_ome_zarr(config, source):
        colours = label_colours(fitted, source.dtype, config.output.preview_bands,
                                output.summary["pixels_per_component"])
        output.summary["ome_zarr"] = write_ome_zarr(output, fitted, source, config, colours)


def write_segmentation(output, fitted, images, chunks, config):
    """Label every pixel of ``images`` into ``output`` (and previews, when asked); summarise.

    One pass (:mod:`.labelling`): each chunk's outputs are written where its pixels are, in
    chunks that follow the input's.

    Parameters
    ----------
    output : JobOutput
    fitted : Fitted
    images : dask.array.Array of shape (n, H, W, C)
    chunks : list of PixelChunk
        The chunks of ``images`` (:func:`.pixels.pixel_chunks`), with their part of the mask.
    config : JobConfig
    """
    n, height, width, channels = images.shape
    n_components = fitted.model.n_components
    specs = output_arrays(config.output, (n, height, width), images.chunksize[:3], n_components)
    targets = output.create_arrays(specs)
    dtype = float_dtype_of(images.dtype) if fitted.scaler is None else np.dtype(np.float64)
    transform = None if fitted.scaler is None else fitted.scaler.transform
    step = preview_step(height, width) if config.output.preview else None
    in_pass = step is not None and n <= PREVIEW_BATCH
    counts, pieces = label_pixels(chunks, targets, fitted.model.log_density(dtype), transform,
                                  config.input.nodata, pixels=(images.dtype, channels),
                                  preview_step=step if in_pass else None)
    counts, *pieces = compute(counts, *(pieces if in_pass else ()),
                              label=f"wrote {', '.join(specs)}")
    pixel_counts, n_non_finite = counts[:n_components], int(counts[n_components])
    if n_non_finite:
        logger.warning("%d pixels hold NaN or infinite values: they are no data (the no-data "
                       "label, NaN scores)", n_non_finite)
    if step is not None:
        labels = specs["labels"][2]
        previews = (_assembled_previews(pieces, chunks, (height, width), step, labels) if in_pass
                    else _read_previews(output, step))
        _write_previews(output, fitted, (images.dtype, pixel_counts),
                        config.output.preview_bands, previews)
    output.summary.update({
        "images": [n, height, width, channels],
        "labels": f"{specs['labels'][0]} {specs['labels'][2]}",
        "non_finite_pixels": n_non_finite,
        "pixels_per_component": [int(c) for c in pixel_counts],
    })


def preview_step(height, width):
    """The stride at which an image of ``height x width`` is previewed (:data:`PREVIEW_SIDE`)."""
    return max(1, -(-max(height, width) // PREVIEW_SIDE))


def _assembled_previews(pieces, chunks, shape, step, dtype):
    """Yield ``(i, labels[i, ::step, ::step])`` from the labelling pass's preview pieces."""
    by_image = {}
    for piece, chunk in zip(pieces, chunks):
        by_image.setdefault(chunk.region[0].start, []).append((piece, chunk.region))
    for i, parts in sorted(by_image.items()):
        yield i, assemble_preview(*zip(*parts), shape, step, dtype)


def _read_previews(output, step):
    """Yield ``(i, labels[i, ::step, ::step])`` read back from the written labels, in batches."""
    labels = output.read_array("labels")
    for start in range(0, labels.shape[0], PREVIEW_BATCH):
        batch = range(start, min(labels.shape[0], start + PREVIEW_BATCH))
        yield from zip(batch, compute(*[labels[i, ::step, ::step] for i in batch]))


def _write_previews(output, fitted, pixels, bands, previews):
    """Write one PNG per image of ``previews``, pixels painted with their component's colour
    (:func:`label_colours`; ``pixels``: the input's dtype and the count per component)."""
    colours = label_colours(fitted, pixels[0], bands, pixels[1])
    for i, picture in previews:
        output.write_png(f"previews/image-{i:04d}.png", colour_labels(picture, colours))
