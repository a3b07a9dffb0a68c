"""Inputs whose metadata say what their axes are: OME-Zarr images and xarray variables.

An OME-Zarr (NGFF 0.4 or 0.5) image's ``multiscales`` name its axes, so its channel axis is
read, not guessed: the full-resolution level is the job's input, ``(t, c, z, y, x)`` seen as
images ``(t * z, y, x, c)``. An xarray variable's dims do the same (``input.feature_dim``).
Either is opened as it is stored, lazily, in its own chunks.
"""

import dask.array as da

from daskgmm import ngff, store, xarray_inputs
from daskgmm.config import ConfigError
from daskgmm.storage import check_url, storage_options

from .inputs import Source


def as_image_stack(array, image):
    """The level array of an NGFF ``image`` as images ``(n, y, x, c)`` (one channel if the
    image has no channel axis): the axes before y and x, without c, stacked into images."""
    channel = image.channel_axis
    if channel is None:
        array, channel = array[..., None], array.ndim
    array = da.moveaxis(array, channel, -1)
    return array.reshape((-1,) + array.shape[-3:])


def ngff_image(path, key):
    """The :class:`~daskgmm.ngff.NgffImage` at an input path; a config error if it is none."""
    check_url(path, f"{key}.path")
    try:
        image = ngff.read_ngff_image(path, storage_options(path))
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error), f"{key}.path") from None
    spatial = [axis.name for axis in image.axes
               if axis.type == "space" or axis.name in ("z", "y", "x")]
    if spatial[-2:] != ["y", "x"]:
        raise ConfigError(f"segment needs an image with axes y and x last; {path!r} has axes "
                          f"{''.join(image.axis_names)}", f"{key}.path")
    return image


def open_level(image, level, key):
    """One level of an NGFF image as images ``(n, y, x, c)``, lazily."""
    try:
        array = store.open_array(image.level_path(level))
    except ValueError as error:
        raise ConfigError(str(error), "training.level" if level else f"{key}.path") from None
    return as_image_stack(array, image)


def ome_source(config, key):
    """The full-resolution level of the OME-Zarr image at ``config.path`` as a
    :class:`~.inputs.Source`; its metadata (``ngff``: version, axes, scales) go to the
    outputs."""
    image = ngff_image(config.path, key)
    images = open_level(image, 0, key)
    metadata = {"ngff": {"version": image.version,
                         "axes": [axis.to_json() for axis in image.axes],
                         "scale": list(image.scales[0]),
                         "channels": list(image.channel_names or ())}}
    kind = f"OME-Zarr {image.version} image, axes {''.join(image.axis_names)}"
    return Source(key, config.path, kind, images.shape, images.dtype, lambda guard: images,
                  images.chunks, metadata=metadata, channel_axis=-1)


def xarray_source(config, key):
    """The data variable ``config.variable`` of an xarray store, its features last, as a
    :class:`~.inputs.Source`; its coordinates along rows, or y and x, go to the outputs."""
    check_url(config.path, f"{key}.path")
    try:
        variable = xarray_inputs.open_variable(config.path, config.variable,
                                               storage_options(config.path))
    except ImportError as error:
        raise ConfigError(str(error), f"{key}.format") from None
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise ConfigError(f"cannot read {config.path!r} with xarray: {error}",
                          f"{key}.variable") from None
    try:
        values, coords = xarray_inputs.features_last(variable, config.feature_dim)
    except ValueError as error:
        raise ConfigError(str(error), f"{key}.feature_dim") from None
    kind = f"xarray variable {variable.name!r}, dims {', '.join(map(str, variable.dims))}"
    return Source(key, config.path, kind, values.shape, values.dtype, lambda guard: values,
                  values.chunks, coords=coords, channel_axis=-1)
