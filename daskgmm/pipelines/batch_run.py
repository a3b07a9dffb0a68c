"""segment in batch mode: one run over the inputs of a growing folder, glob or Zarr group.

A run lists the inputs (:mod:`.batch_inputs`), claims the new and changed ones in the batch store
(:mod:`.batch`), checks on the cluster that each decodes (a bad one is recorded with its reason
and skipped; the runner then exits with status 3), applies ``model.load`` or fits a model on the
valid pixels of the others, writes each input's ``results/<key>/`` and records it done; then it
logs its end in ``runs.jsonl`` and lets go of its claims.
"""

import dataclasses
import logging
import time
from collections import Counter
from contextlib import contextmanager, suppress

import dask
import numpy as np

from daskgmm import store
from daskgmm.config import ConfigError
from daskgmm.images import georeferencing, image_file_error, image_file_info, open_image_files
from daskgmm.sample_data import SAMPLE_IMAGE_SIZES, write_sample_images
from daskgmm.storage import is_url, storage_options

from .batch import model_version
from .batch_bucket import open_batch_store
from .batch_inputs import list_inputs
from .batch_lineage import updated_model
from .batch_layout import RESULT_KIND, RESULTS
from .described_inputs import ngff_image, open_level
from .input_paths import batch_input_format
from .inputs import Source, generates
from .job_model import fit_or_load_drawn, model_summary
from .outputs import staged_output
from .plan import Plan, describe_fit, prepare_job
from .predictions import describe_predictions
from .progress import compute
from .pixels import image_stack, pixel_chunks, training_pixels
from .segment import image_stack_shape, write_placed_outputs, write_segmentation

logger = logging.getLogger(__name__)

STATES = ("new", "changed", "done", "failed", "claimed")


def prepare_batch(config):
    """Check a batch segment job and plan it: which inputs are new or changed (no work is done).

    Returns
    -------
    Prepared
        With the :class:`~.batch.BatchStore` in ``extra["batch"]``; ``nothing_to_do`` is set
        when no input is new or changed and the store holds nothing to tidy.
    """
    batch = open_batch_store(config.output.path, config.batch)
    batch.check()
    kind = batch_input_format(config.input)
    generated = generates(config.input)
    if generated and (kind != "images" or config.input.generate != "sample-scene"):
        raise ConfigError("batch mode generates sample-scene PNG files into a folder; set "
                          "input.path to a folder", "input.generate")
    inputs = [] if generated else list_inputs(config.input, config.batch.identity)
    prepared = prepare_job(config, {}, config.batch.channels, resume=False)
    prepared.extra["batch"] = batch
    prepared.plan = Plan("segment (batch)", _describe_batch_inputs(config, batch, inputs, kind),
                         _describe_batch_steps(prepared), _describe_batch_outputs(prepared))
    states = batch.states(inputs)
    if not generated and not {"new", "changed"} & set(states.values()) \
            and not batch.needs_tidying(inputs):
        prepared.nothing_to_do = {"output": config.output.path, "processed": _nothing_new(states)}
    return prepared


def _describe_batch_inputs(config, batch, inputs, kind):
    if generates(config.input):
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

    Claims the new and changed inputs (tidying what dead runs left first), checks them (a bad
    one is recorded and skipped), applies the loaded model or fits one on their valid pixels,
    writes each input's results and records it done; then logs its end in ``runs.jsonl``
    (``status`` ``ok``, or ``failed`` with the ``error``) and lets go of its claims.

    Returns
    -------
    dict
        The run's summary; it names the inputs skipped, if any, under ``skipped``.
    """
    config, batch = prepared.config, prepared.extra["batch"]
    if generates(config.input):
        with suppress(FileExistsError):  # another run generated them first
            write_sample_images(config.input.path)
    inputs = list_inputs(config.input, config.batch.identity)
    claimed = batch.claim(inputs)
    if not claimed:
        return {"output": config.output.path, "processed": _nothing_new(batch.states(inputs))}
    logger.info("run %s (process %d) claimed %d input(s): %s", batch.run, batch.owner["pid"],
                len(claimed), ", ".join(item.name for item in claimed))
    record = {**batch.owner, "started": batch.started, "status": "ok",
              "claimed": [item.name for item in claimed], "processed": [], "pixels": 0,
              "failures": {}, "model": None}
    started = time.perf_counter()
    try:
        _process_claimed(prepared, batch, claimed, record)
    except BaseException as error:
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - started, 3)
        batch.finish(record)
        logger.info("run %s (process %d) logged its end (%s): %d input(s) processed, %d "
                    "skipped", batch.run, batch.owner["pid"], record["status"],
                    len(record["processed"]), len(record["failures"]))
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

    Every input is decoded once on the cluster first (each chunk of a Zarr array, every pixel
    of an image file), so that a corrupt one is found before any computation (a fit on the
    pixels of all inputs) depends on it.
    """
    checks = [_decoding(item) for item in items]
    errors = compute(*checks, label=f"decoded {len(items)} input(s)") if checks else ()
    return [error or _open_input(item, config.channel_axis) for item, error in zip(items, errors)]


def _decoding(item):
    """The lazy check that an input decodes (:func:`_open_inputs`); a field's metadata are
    read now, and a field without a readable image is its reason."""
    check, location = store.zarr_array_error, item.location
    if item.field:
        try:
            location = ngff_image(item.location, "input").level_path(0)
        except ConfigError as error:
            return error.message
    elif item.array is None:
        check = image_file_error
    # A task has no storage section: the options of a URL go with it.
    return dask.delayed(check)(location, storage_options(location))


def _open_input(item, channel_axis):
    """One input as ``(n, H, W, C)`` images, or the reason it cannot be read as images."""
    try:
        if item.field:  # its axes say where the channels are
            return open_level(ngff_image(item.location, "input"), 0, "input")
        if item.array is None:
            array = open_image_files([item.path], *image_file_info(item.path))
        else:
            array = store.open_array(item.location)
        image_stack_shape(array.shape, channel_axis)
    except (OSError, ValueError) as error:
        return error.message if isinstance(error, ConfigError) else str(error)
    if array.dtype.kind not in "biuf":
        return f"holds {array.dtype} values; need numbers"
    return image_stack(array, channel_axis)


def _expected_channels(prepared, batch, stacks):
    """How many channels inputs must have: as configured, the loaded model's, the store's
    (set by its first run), or else that of most of this run's inputs."""
    known = (prepared.config.batch.channels
             or (prepared.loaded.n_features_in_ if prepared.loaded else None)
             or batch.read()["channels"])
    if known or not stacks:
        return known
    return Counter(images.shape[-1] for images in stacks).most_common(1)[0][0]


def _batch_model(prepared, batch, inputs, channels):
    """Return the model the run applies and its version, saved in (and recorded by) the store.

    The loaded one (``model.load``), or one fitted on the valid pixels of ``inputs``, pairs of a
    :class:`~.batch_inputs.BatchInput` and its images; with ``model.update: online``, the
    store's current model updated with those pixels (:mod:`.batch_lineage`).
    """
    stacks = [images for _, images in inputs]
    if prepared.config.model.update == "online":
        return updated_model(prepared, batch, [item.name for item, _ in inputs],
                             lambda: _training_pixels(prepared.config, stacks), channels)
    fitted = fit_or_load_drawn(prepared, lambda: _training_pixels(prepared.config, stacks))
    scaling = None if fitted.scaler is None else fitted.scaler.to_attrs()
    version = model_version(fitted.model, scaling)
    batch.save_model(version, fitted.model, scaling, prepared.guard)
    origin = ({"loaded_from": prepared.config.model.load} if prepared.loaded else
              {"fitted_on": [item.name for item, _ in inputs]})
    batch.record_model(version, {**origin, "model": model_summary(fitted.model)}, channels)
    how = f"loaded from {prepared.config.model.load}" if prepared.loaded else \
        f"fitted on {len(inputs)} input(s)"
    logger.info("model version %s (%s)", version, how)
    return fitted, version


def _training_pixels(config, stacks):
    """The pixels to fit on, drawn from the chunks of all the stacks together."""
    chunks = []
    for images in stacks:
        chunks += pixel_chunks(images, first_number=len(chunks))
    return training_pixels(config, stacks, chunks)


def _segment_input(prepared, batch, fitted, version, item, images):
    """Write one input's results to ``results/<key>/`` (replacing older ones); return pixels."""
    config = prepared.config
    source = _item_source(item, images)
    one = dataclasses.replace(prepared, sources={"input": source})
    with _result_output(one, batch, item.name) as output:
        write_segmentation(output, fitted, images, pixel_chunks(images), config)
        write_placed_outputs(output, fitted, source, config)
        output.summary.update({"input": item.name, "identity": item.identity,
                               "model_version": version})
    return int(np.prod(images.shape[:3]))


def _item_source(item, images):
    """An input of the batch as the :class:`~.inputs.Source` its outputs are written from."""
    kind = "OME-Zarr field" if item.field else "image file" if item.array is None else "Zarr array"
    tags = georeferencing(item.path) if kind == "image file" else {}
    metadata = {"geotiff": [tags] * images.shape[0]} if tags else {}
    return Source("input", item.location, kind, images.shape, images.dtype, lambda: images,
                  images.chunks, metadata=metadata)


@contextmanager
def _result_output(prepared, batch, key):
    """Yield a :class:`~.outputs.JobOutput` for input ``key``, staged in the store's
    ``.staging/``; it replaces ``results/<key>`` only if the block succeeds.

    A key never leaves ``results/`` (:mod:`.batch_inputs`); the guard proves it.
    """
    path = prepared.guard.check(batch.path(batch.result_name(key)), "output.path",
                                RESULT_KIND, replace=True, within=batch.path(RESULTS))
    if not is_url(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with staged_output(prepared, path, RESULT_KIND, staging_parent=batch.staging) as output:
        yield output
