"""The segment job's outputs as OME-Zarr (NGFF), so that napari and ome-zarr-py open them as
they are.

For OME-Zarr input, or with ``output.format: ome-zarr``, beside ``result.zarr``, in the input's
NGFF version (0.5 for other inputs, and in object storage):

- ``labels.ome.zarr``: an NGFF ``labels`` group holding the label image ``components``. Value
  ``k + 1`` is component ``k`` and 0 is no data (the background of a labels layer). Its levels
  are the input image's (nearest neighbour, so no level holds a value level 0 lacks); its
  colours are the previews'; each value's properties name its component, weight and pixel
  count; ``source.image`` is the input image's path relative to it, through which readers open
  image and labels together.
- ``log_likelihood.ome.zarr`` and ``probabilities.ome.zarr`` (when asked): NGFF images on the
  same axes, the probabilities' channel axis ``c`` holding the components.

They are copies of ``result.zarr``'s arrays (which xarray reads), read back chunk by chunk.
"""

import math
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from daskgmm import ngff, store
from daskgmm.storage import filesystem, is_url, storage_options

from .progress import compute

LABELS, LABEL_IMAGE = "labels.ome.zarr", "components"
SCORE_IMAGES = {"log_likelihood": "log_likelihood.ome.zarr",
                "probabilities": "probabilities.ome.zarr"}
# The levels made for an input without any end at the first of at most this many pixels a side.
MIN_SIDE = 256
# The version written for input that is not OME-Zarr, and in object storage, whose commits
# know Zarr v3 metadata only.
DEFAULT_VERSION = "0.5"
ZARR_FORMATS = {"0.4": 2, "0.5": 3}
SPACE, TIME, CHANNEL = "space", "time", "channel"


@dataclass(frozen=True)
class Placement:
    """Where the outputs' pixels lie: the NGFF version, the axes (no channel axis), level 0's
    scale per axis, each level's shape, and the input image's path (None if not OME-Zarr)."""

    version: str
    axes: tuple
    scale: tuple
    shapes: tuple
    image: str = None


def writes_ome_zarr(config, source):
    """Whether a segment job writes OME-Zarr: as configured, or for OME-Zarr input."""
    if config.output.format == "auto":
        return source.kind.startswith("OME-Zarr")
    return config.output.format == "ome-zarr"


def _halvings(shape):
    """Shapes halving y and x (the last two) until both are at most :data:`MIN_SIDE`."""
    shapes = [tuple(shape)]
    while max(shapes[-1][-2:]) > MIN_SIDE:
        shapes.append(shapes[-1][:-2] + tuple(-(-side // 2) for side in shapes[-1][-2:]))
    return tuple(shapes)


def placement(source, images, in_object_storage):
    """The :class:`Placement` of a job's outputs (``images``: the ``(n, H, W, C)`` shape of
    the input's images): the OME-Zarr input's, else ``(t,) y, x`` in pixels with a pyramid of
    halvings."""
    n_images = images[0]
    if not source.kind.startswith("OME-Zarr"):
        axes = ((ngff.Axis("t", TIME),) if n_images > 1 else ()) + (
            ngff.Axis("y", SPACE), ngff.Axis("x", SPACE))
        shape = ((n_images,) if n_images > 1 else ()) + tuple(images[1:3])
        return Placement(DEFAULT_VERSION, axes, (1.0,) * len(axes), _halvings(shape))
    image = ngff.read_ngff_image(source.path, storage_options(source.path))
    kept = [i for i in range(len(image.axes)) if i != image.channel_axis]
    shapes = tuple(tuple(store.open_array(image.level_path(level)).shape[i] for i in kept)
                   for level in range(len(image.levels)))
    version = DEFAULT_VERSION if in_object_storage else image.version
    return Placement(version, tuple(image.axes[i] for i in kept),
                     tuple(image.scales[0][i] for i in kept), shapes, source.path)


def pyramid(level0, shapes):
    """``level0`` and its nearest-neighbour levels of ``shapes``: every ``step``-th element per
    axis, the step being the ratio of the sides (rounded up)."""
    levels = []
    for shape in shapes:
        steps = tuple(max(1, math.ceil(full / side)) for full, side in zip(shapes[0], shape))
        level = level0[tuple(slice(None, None, step) for step in steps)]
        chunks = tuple(min(c, s) for c, s in zip(level0.chunksize, level.shape))
        levels.append(level.rechunk(chunks))
    return levels


def relative_source(image, labels):
    """The path from the label image at ``labels`` to the image at ``image``: relative where
    both are on disk or in one bucket, else the image's URL (None: a local image seen from a
    bucket)."""
    if not is_url(image) and not is_url(labels):
        return os.path.relpath(Path(image).resolve(), Path(labels).resolve())
    if is_url(image) and is_url(labels):
        (_, inner_image), (_, inner_labels) = filesystem(image), filesystem(labels)
        same = image.split("://")[0] == labels.split("://")[0] and \
            inner_image.split("/")[0] == inner_labels.split("/")[0]
        return posixpath.relpath(inner_image, inner_labels) if same else image
    return image if is_url(image) else None


def _label_metadata(place, colours, counts, weights, output_path):
    values = {0: (0, 0, 0, 0)}
    values.update({k + 1: (*map(int, colour), 255) for k, colour in enumerate(colours)})
    properties = [{"label-value": k + 1, "component": k, "weight": float(weights[k]),
                   "pixels": int(counts[k])} for k in range(len(colours))]
    source = None if place.image is None else relative_source(
        place.image, f"{str(output_path).rstrip('/')}/{LABELS}/{LABEL_IMAGE}")
    return ngff.label_metadata(values, place.version, source, properties)


def _write_labels(root, place, labels, no_data, metadata):
    """The lazy writes of the labels group and its label image."""
    container = store.create_group(root / LABELS, ZARR_FORMATS[place.version])
    container.attrs.update(ngff.labels_group_metadata([LABEL_IMAGE], place.version))
    values = da.where(labels == no_data, 0, labels + 1).astype(labels.dtype)
    group = container.create_group(LABEL_IMAGE)
    return ngff.write_multiscale_image(group, pyramid(values.reshape(place.shapes[0]),
                                                      place.shapes),
                                       place.axes, place.scale, place.version, LABEL_IMAGE,
                                       {"image-label": metadata}, fill_value=0)


def _write_scores(root, name, place, scores):
    """The lazy writes of an NGFF image of per-pixel scores (probabilities: a channel axis)."""
    axes, scale, shapes = place.axes, place.scale, place.shapes
    values = scores.reshape(shapes[0] + scores.shape[3:])
    if scores.ndim == 4:  # the components, as the channel axis NGFF puts after time
        at = int(bool(axes) and axes[0].type == TIME)
        values = da.moveaxis(values, -1, at)
        axes = axes[:at] + (ngff.Axis("c", CHANNEL),) + axes[at:]
        scale = scale[:at] + (1.0,) + scale[at:]
        shapes = tuple(shape[:at] + (scores.shape[3],) + shape[at:] for shape in shapes)
    group = store.create_group(root / SCORE_IMAGES[name], ZARR_FORMATS[place.version])
    return ngff.write_multiscale_image(group, pyramid(values, shapes), axes, scale,
                                       place.version, name, fill_value=np.nan)


def write_ome_zarr(output, fitted, source, config, colours):
    """Write the OME-Zarr images of a segment job from its ``result.zarr`` arrays.

    Parameters
    ----------
    output : JobOutput
        Whose labels (and scores) are written, and summarised.
    fitted : Fitted
    source : Source
        The input.
    config : JobConfig
    colours : ndarray of shape (n_components, 3)
        The components' colours (the previews').

    Returns
    -------
    list of str
        The images written, relative to the output folder.
    """
    summary = output.summary
    place = placement(source, summary["images"], is_url(output.path))
    labels = output.read_array("labels")
    no_data = np.iinfo(labels.dtype).max
    metadata = _label_metadata(place, colours, summary["pixels_per_component"],
                               fitted.model.weights_, output.path)
    writes = _write_labels(output.root, place, labels, no_data, metadata)
    written = [f"{LABELS}/{LABEL_IMAGE}"]
    for name in SCORE_IMAGES:
        if getattr(config.output, name):
            writes += _write_scores(output.root, name, place, output.read_array(name))
            written.append(SCORE_IMAGES[name])
    compute(*writes, label=f"wrote {', '.join(written)}")
    return written
