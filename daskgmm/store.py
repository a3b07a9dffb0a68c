"""Zarr in and out: opening input arrays, saving and loading fitted models, atomic writes."""

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

MODEL_FORMAT = "daskgmm.GaussianMixture"
MODEL_FORMAT_VERSION = 1
_FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
_FITTED_SCALARS = ("converged_", "n_iter_", "lower_bound_", "n_features_in_", "n_reseeded_")


def _is_url(path):
    return "://" in str(path)


def open_array(path, component=None):
    """Open a Zarr array (a store path or fsspec URL, optionally a named array in a group) lazily.

    Raises
    ------
    FileNotFoundError
        If there is no Zarr store at ``path``.
    ValueError
        If ``path`` holds a group and ``component`` does not name one of its arrays.
    """
    path = str(path)
    if not _is_url(path) and not Path(path).exists():
        raise FileNotFoundError(f"No Zarr store at {path!r}.")
    node = zarr.open(path, mode="r")
    if component is not None:
        node = _member(node, component, path)
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        raise ValueError(
            f"{path!r} is a Zarr group, not an array; name one of its arrays "
            f"({', '.join(names) or 'it has none'}), e.g. {path}/{names[0] if names else 'X'}."
        )
    return da.from_zarr(node)


def _member(group, name, path):
    if not isinstance(group, zarr.Group) or name not in group:
        raise ValueError(f"No array {name!r} in the Zarr store {path!r}.")
    return group[name]


@contextmanager
def atomic_directory(path, overwrite=False):
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.incomplete-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        retired = path.with_name(f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, path)


def _json_value(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return None


def write_model_group(group, model):
    """Write a fitted model's arrays and attributes into an open Zarr group."""
    for name in _FITTED_ARRAYS:
        group.create_array(name, data=np.asarray(getattr(model, name)))
    group.create_array("lower_bounds_", data=np.asarray(model.lower_bounds_, dtype=np.float64))
    params = {name: _json_value(value) for name, value in model.get_params().items()}
    group.attrs.update(
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "params": params,
            "fitted": {name: _json_value(getattr(model, name)) for name in _FITTED_SCALARS},
        }
    )


def save_model(model, path, overwrite=False):
    """Save a fitted GaussianMixture to a Zarr group at ``path``, atomically."""
    with atomic_directory(path, overwrite=overwrite) as staging:
        write_model_group(zarr.open_group(str(staging), mode="w"), model)


def read_model_group(group, cls):
    """Rebuild a fitted model from a Zarr group written by :func:`write_model_group`."""
    attrs = dict(group.attrs)
    if attrs.get("format") != MODEL_FORMAT:
        raise ValueError(f"Zarr group holds no daskgmm model (format {attrs.get('format')!r}).")
    if attrs.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"Model format version {attrs['format_version']} is newer than this daskgmm reads "
            f"({MODEL_FORMAT_VERSION}); upgrade daskgmm."
        )
    model = cls(**attrs["params"])
    for name in _FITTED_ARRAYS:
        setattr(model, name, group[name][...])
    model.lower_bounds_ = group["lower_bounds_"][...].tolist()
    for name, value in attrs["fitted"].items():
        setattr(model, name, value)
    model._dtype = model.means_.dtype
    return model


def load_model(path, cls):
    """Load a model saved with :func:`save_model`."""
    path = str(path)
    if not _is_url(path) and not Path(path).exists():
        raise FileNotFoundError(f"No saved model at {path!r}.")
    return read_model_group(zarr.open_group(path, mode="r"), cls)

