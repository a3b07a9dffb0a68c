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

Batch mode (a ``batch`` section), for an input that grows over time: every image file of the
folder or glob, or every array of the Zarr group, is an input of its own (of any size), and each
run processes only the inputs that are new or changed since a run processed them. The output is
then a batch store (:mod:`.batch`) that every run adds to: ``results/<input>/`` holds the same
``result.zarr`` and ``previews/`` for one input; ``models/<version>.zarr`` the model applied;
``manifest.json`` what was done with which model; ``runs.jsonl`` one summary per run. A run
applies ``model.load``, or fits a model on the valid pixels of its own inputs. An input that
does not decode, or has the wrong number of channels, is recorded and skipped (the runner then
exits with status 3) and tried again once it changes.
"""

import dataclasses
import logging
import operator
import time
from collections import Counter
from contextlib import contextmanager, suppress
from functools import reduce
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from daskgmm import store
from daskgmm.config import ConfigError
from daskgmm.guard import real_path
from daskgmm.sample_data import SAMPLE_IMAGE_SIZES, write_sample_images

from .batch import BatchStore, input_format, list_inputs, model_version, most_common, now_iso
from .common import (
    JobOutput,
    Plan,
    Source,
    component_counts,
    compute,
    describe_fit,
    describe_predictions,
    fit_or_load,
    job_output,
    staged_output,
    model_summary,
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
    if config.batch is not None:
        return prepare_batch(config)
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

    In batch mode, only the new and changed inputs, into the batch store (:func:`run_batch`).

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    if prepared.config.batch is not None:
        return run_batch(prepared)
    config = prepared.config
    images = as_image_stack(prepared.sources["input"].open(prepared.guard), config.input.channel_axis)
    valid = valid_pixels(images, config.input.nodata, prepared.extra["mask"])
    fitted = fit_or_load(prepared, *pixel_rows(images, valid))
    with job_output(prepared) as output:
        write_segmentation(output, fitted, images, valid, config.output)
        output.write_model(fitted)
    return output.summary


def pixel_rows(images, valid=None):
    """Return the pixels of ``(n, H, W, C)`` images as rows ``(n*H*W, C)``, and their validity."""
    return images.reshape(-1, images.shape[-1]), None if valid is None else valid.reshape(-1)


def write_segmentation(output, fitted, images, valid, config):
    """Label every pixel of ``images`` into ``output`` (and previews, when asked); summarise.

    Parameters
    ----------
    output : JobOutput
    fitted : Fitted
    images : dask.array.Array of shape (n, H, W, C)
    valid : dask.array.Array of shape (n, H, W) of bool, or None when every pixel has data
    config : OutputConfig
    """
    n, height, width, channels = images.shape
    rows, valid_rows = pixel_rows(images, valid)
    arrays, fills = prediction_arrays(fitted, rows, config, valid_rows)
    counts = component_counts(arrays["labels"], fitted.model.n_components)
    arrays = {name: array.reshape((n, height, width) + array.shape[1:])
              for name, array in arrays.items()}
    pixel_counts, n_non_finite = output.write_arrays(arrays, fills,
                                                     also=[counts, non_finite_pixels(images)])
    if n_non_finite:
        logger.warning("%d pixels hold NaN or infinite values: they are no data (the no-data "
                       "label, NaN scores)", n_non_finite)
    if config.preview:
        _write_previews(output, fitted, images.dtype, config.preview_channels)
    output.summary.update({
        "images": [n, height, width, channels],
        "labels": f"{arrays['labels'].shape} {arrays['labels'].dtype}",
        "non_finite_pixels": int(n_non_finite),
        "pixels_per_component": [int(c) for c in pixel_counts],
    })


def non_finite_pixels(images):
    """Lazy count of the pixels with a NaN or an infinity in some channel."""
    if images.dtype.kind not in "fc":
        return 0
    return (~da.isfinite(images).all(axis=-1)).sum()


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


# ------------------------------------------------------------------ batch mode

STATES = ("new", "changed", "done", "failed", "claimed")


def prepare_batch(config):
    """Check a batch segment job and plan it: which inputs are new or changed (no work is done).

    Returns
    -------
    Prepared
        With the :class:`~.batch.BatchStore` in ``extra["batch"]``.
    """
    batch = BatchStore(config.output.path, config.batch)
    batch.check()
    kind = input_format(config.input)
    generated = _generates(config.input)
    if generated and (kind != "images" or config.input.generate != "sample-scene"):
        raise ConfigError("batch mode generates sample-scene PNG files into a folder; set "
                          "input.path to a folder", "input.generate")
    inputs = [] if generated else list_inputs(config.input, config.batch.identity)
    prepared = prepare_job(config, {}, config.batch.channels, resume=False)
    prepared.checkpoint.enabled = False  # a killed run's inputs are claimed afresh, and refit
    prepared.extra["batch"] = batch
    prepared.plan = Plan("segment (batch)", _describe_batch_inputs(config, batch, inputs, kind),
                         _describe_batch_steps(prepared), _describe_batch_outputs(prepared))
    states = batch.states(inputs)
    if not generated and not {"new", "changed"} & set(states.values()):
        prepared.nothing_to_do = {"output": config.output.path, "processed": _nothing_new(states)}
    return prepared


def _generates(config):
    return config.generate is not None and not Path(config.path).exists()


def _describe_batch_inputs(config, batch, inputs, kind):
    if _generates(config.input):
        return [f"input: {config.input.path} [{len(SAMPLE_IMAGE_SIZES)} sample-scene PNG files, "
                "generated now]"]
    counts = Counter(batch.states(inputs).values())
    states = ", ".join(f"{counts[state]} {state}" for state in STATES)
    return [f"input: {config.input.path} [{kind}] {len(inputs)} input(s): {states}"]


def _describe_batch_steps(prepared):
    config = prepared.config
    limit = f", at most {config.batch.max_inputs}" if config.batch.max_inputs else ""
    channels = config.batch.channels or "the model's (or most inputs')"
    return describe_fit(prepared, "valid pixels of the run's inputs") + [
        f"claim the new and changed inputs{limit}; label every pixel of each",
        f"skip (and report) inputs that do not decode or lack {channels} channels"]


def _describe_batch_outputs(prepared):
    per_input = describe_predictions(prepared.config.output, ("n", "H", "W"),
                                     prepared.n_components)
    lines = [f"results/<input>/{line}" for line in per_input if line.startswith("result.zarr")]
    if prepared.config.output.preview:
        lines.append("results/<input>/previews/image-0000.png ...")
    return lines + ["models/<version>.zarr", "manifest.json (replaced), runs.jsonl (appended)"]


def run_batch(prepared):
    """Process the inputs no run has processed yet, into the batch store.

    Claims the new and changed inputs, checks them (a bad one is recorded and skipped), applies
    the loaded model or fits one on their valid pixels, writes each input's results and records
    it done; then lets go of its claims and appends its summary to ``runs.jsonl``.

    Returns
    -------
    dict
        The run's summary; it names the inputs skipped, if any, under ``skipped``.
    """
    config, batch = prepared.config, prepared.extra["batch"]
    if _generates(config.input):
        with suppress(FileExistsError):  # another run generated them first
            write_sample_images(config.input.path)
    inputs = list_inputs(config.input, config.batch.identity)
    claimed = batch.claim(inputs)
    if not claimed:
        return {"output": config.output.path, "processed": _nothing_new(batch.states(inputs))}
    logger.info("run %s claimed %d input(s): %s", batch.run, len(claimed),
                ", ".join(item.name for item in claimed))
    record = {**batch.owner, "started": now_iso(), "claimed": [item.name for item in claimed],
              "processed": [], "pixels": 0, "failures": {}, "model": None}
    started = time.perf_counter()
    try:
        _process_claimed(prepared, batch, claimed, record)
    except BaseException as error:
        record["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        batch.release()
        record["seconds"] = round(time.perf_counter() - started, 3)
        batch.append_run(record)
    return _batch_summary(config, record)


def _nothing_new(states):
    counts = Counter(states.values())
    return (f"nothing new to process ({counts['done']} input(s) done, {counts['failed']} "
            f"skipped earlier and unchanged since, {counts['claimed']} being processed by "
            "another run)")


def _batch_summary(config, record):
    processed = record["processed"]
    summary = {"output": config.output.path, "run": record["run"],
               "model": record["model"] or "none (no input could be read)",
               "processed": f"{len(processed)} input(s)"
                            + (f": {', '.join(processed)}" if processed else ""),
               "pixels": record["pixels"]}
    if record["failures"]:
        summary["skipped"] = dict(record["failures"])
    return summary


def _process_claimed(prepared, batch, claimed, record):
    """Check the claimed inputs, obtain the model, and segment every input that can be read."""

    def fail(item, reason):
        logger.warning("skipped %s: %s", item.name, reason)
        batch.record_failed(item, reason)
        record["failures"][item.name] = reason

    stacks = _open_inputs(claimed, prepared.config.input)
    readable = [stack for stack in stacks if not isinstance(stack, str)]
    channels = _expected_channels(prepared, batch, readable)
    for item, stack in zip(claimed, stacks):
        if isinstance(stack, str):
            fail(item, stack)
        elif stack.shape[-1] != channels:
            fail(item, f"has {stack.shape[-1]} channel(s), expected {channels}")
    good = [(item, stack) for item, stack in zip(claimed, stacks)
            if item.name not in record["failures"]]
    if not good:
        return
    fitted, record["model"] = _batch_model(prepared, batch, good, channels)
    for item, images in good:
        try:
            pixels = _segment_input(prepared, batch, fitted, record["model"], item, images)
        except (ValueError, OSError) as error:  # e.g. a file changed into a corrupt one meanwhile
            fail(item, str(error))
            continue
        batch.record_done(item, record["model"], pixels)
        record["processed"].append(item.name)
        record["pixels"] += pixels


def _open_inputs(items, config):
    """Return each input as lazy ``(n, H, W, C)`` images, or the reason it cannot be read.

    Image files are decoded once on the cluster first, so that a corrupt one is found before any
    computation (a fit on the pixels of all inputs) depends on it.
    """
    files = [item.path for item in items if item.array is None]
    checks = [dask.delayed(store.image_file_error)(path) for path in files]
    errors = dict(zip(files, compute(*checks, label=f"decoded {len(files)} image file(s)")
                      if checks else ()))
    return [errors.get(item.path) or _open_input(item, config.channel_axis) for item in items]


def _open_input(item, channel_axis):
    """One input as ``(n, H, W, C)`` images, or the reason it cannot be read as images."""
    try:
        if item.array is None:
            array = store.open_image_files([item.path], *store.image_file_info(item.path))[0]
        else:
            array = store.open_array(item.path, item.array)
        image_stack_shape(array.shape, channel_axis)
    except (OSError, ValueError) as error:
        return error.message if isinstance(error, ConfigError) else str(error)
    if array.dtype.kind not in "biuf":
        return f"holds {array.dtype} values; need numbers"
    return as_image_stack(array, channel_axis)


def _expected_channels(prepared, batch, stacks):
    """How many channels inputs must have: as configured, the loaded model's, the store's
    (set by its first run), or else that of most of this run's inputs."""
    known = (prepared.config.batch.channels
             or (prepared.loaded.n_features_in_ if prepared.loaded else None)
             or batch.read()["channels"])
    if known or not stacks:
        return known
    return most_common(images.shape[-1] for images in stacks)


def _batch_model(prepared, batch, inputs, channels):
    """Return the model the run applies and its version, saved in (and recorded by) the store.

    The loaded one (``model.load``), or one fitted on the valid pixels of ``inputs``, pairs of a
    :class:`~.batch.BatchInput` and its images.
    """
    stacks = [images for _, images in inputs]
    fitted = fit_or_load(prepared, *_training_pixels(stacks, prepared.config.input))
    scaling = None if fitted.scaler is None else fitted.scaler.to_attrs()
    version = model_version(fitted.model, scaling)
    batch.save_model(version, fitted.model, scaling)
    origin = ({"loaded_from": prepared.config.model.load} if prepared.loaded else
              {"fitted_on": [item.name for item, _ in inputs]})
    batch.record_model(version, {**origin, "model": model_summary(fitted.model)}, channels)
    how = f"loaded from {prepared.config.model.load}" if prepared.loaded else \
        f"fitted on {len(inputs)} input(s)"
    logger.info("model version %s (%s)", version, how)
    return fitted, version


def _training_pixels(stacks, config):
    """The pixels of all the stacks as rows, and which are valid (None when all are)."""
    pairs = [pixel_rows(images, valid_pixels(images, config.nodata)) for images in stacks]
    rows = da.concatenate([rows for rows, _ in pairs])
    if all(valid is None for _, valid in pairs):
        return rows, None
    valid = [da.ones(rows.shape[0], dtype=bool, chunks=rows.chunks[0]) if valid is None
             else valid for rows, valid in pairs]
    return rows, da.concatenate(valid)


def _segment_input(prepared, batch, fitted, version, item, images):
    """Write one input's results to ``results/<name>/`` (replacing older ones); return pixels."""
    config = prepared.config
    kind = "image file" if item.array is None else "Zarr array"
    source = Source("input", item.location, kind, images.shape, images.dtype, lambda: images,
                    images.chunks)
    one = dataclasses.replace(prepared, sources={"input": source})
    with _result_output(one, batch.root / batch.result_name(item.name)) as output:
        write_segmentation(output, fitted, images, valid_pixels(images, config.input.nodata),
                           config.output)
        output.summary.update({"input": item.name, "identity": item.identity,
                               "model_version": version})
    return int(np.prod(images.shape[:3]))


@contextmanager
def _result_output(prepared, path):
    """Yield a :class:`JobOutput` for one input; it replaces ``path`` only if the block succeeds."""
    within = real_path(Path(path).parent)
    path = prepared.guard.check(path, "output.path", "batch-result", replace=True, within=within)
    with staged_output(prepared, path, "batch-result") as output:
        yield output
