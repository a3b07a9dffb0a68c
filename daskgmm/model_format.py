"""The fitted model's Zarr format: a GaussianMixture's parameters and fitted values in a group.

A saved model is a Zarr group holding one array per fitted array (``weights_``, ``means_``, ...)
and ``lower_bounds_`` (and, after online EM, the group ``online_statistics_``), and the
attributes ``format``, ``format_version``, ``params`` (the estimator's parameters) and
``fitted`` (its fitted scalars). A job adds its own attributes
(the scaling of the features, under ``preprocessing``).
"""

import dataclasses
from pathlib import Path

import numpy as np
import zarr

from . import atomic
from .guard import Guard
from .generation_store import location
from .storage import is_url, naming
from .statistics import SufficientStats
from .store import open_node

MODEL_FORMAT = "daskgmm.GaussianMixture"
BAYESIAN_FORMAT = "daskgmm.BayesianGaussianMixture"
MODEL_FORMAT_VERSION = 1
# The kind of folder a saved model is, as its ownership marker names it.
MODEL = "model"
_FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
_FITTED_SCALARS = ("converged_", "n_iter_", "lower_bound_", "n_features_in_", "n_reseeded_")
# A GaussianMixture's, beside: the online steps its statistics took (they go with the model).
_ONLINE_SCALARS = ("online_steps_", "online_weight_")


def _json_value(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return None


def write_model_group(group, model):
    """Write a fitted model's arrays and attributes into an open Zarr group.

    Parameters
    ----------
    group : zarr.Group
    model : GaussianMixture
        Fitted.
    """
    arrays, scalars = _fitted_names(model)
    pairs = []
    for name in arrays:
        value = getattr(model, name)
        if isinstance(value, tuple):  # a Dirichlet process's two concentrations
            pairs.append(name)
        group.create_array(name, data=np.asarray(value))
    group.create_array("lower_bounds_", data=np.asarray(model.lower_bounds_, dtype=np.float64))
    if getattr(model, "online_statistics_", None) is not None:  # online EM goes on from them
        write_statistics(group.create_group("online_statistics_"), model.online_statistics_)
    params = {name: _json_value(value) for name, value in model.get_params().items()}
    group.attrs.update(
        {
            "format": f"daskgmm.{type(model).__name__}",
            "format_version": MODEL_FORMAT_VERSION,
            "params": params,
            "fitted": {name: _json_value(getattr(model, name)) for name in scalars},
            "pairs": pairs,
        }
    )


def write_statistics(group, stats):
    """Write sufficient statistics (float64, to the bit) as one array per field of a group."""
    for field in dataclasses.fields(SufficientStats):
        group.create_array(field.name, data=np.asarray(getattr(stats, field.name)))


def read_statistics(group):
    """The sufficient statistics :func:`write_statistics` wrote into ``group``."""
    values = {field.name: group[field.name][...] for field in dataclasses.fields(SufficientStats)}
    return SufficientStats(**{name: value.item() if value.ndim == 0 else value
                              for name, value in values.items()})


def _fitted_names(model):
    """The fitted arrays and scalars a model of its class saves."""
    extra_arrays, extra_scalars = getattr(model, "saved_attributes", ((), ()))
    online = tuple(name for name in _ONLINE_SCALARS if hasattr(model, name))
    return _FITTED_ARRAYS + tuple(extra_arrays), _FITTED_SCALARS + tuple(extra_scalars) + online


def estimator_class(model_format):
    """The estimator a saved model's ``format`` names (None for another format)."""
    from .bayesian import BayesianGaussianMixture
    from .mixture import GaussianMixture

    return {MODEL_FORMAT: GaussianMixture,
            BAYESIAN_FORMAT: BayesianGaussianMixture}.get(model_format)


def read_model_group(group, cls=None):
    """Rebuild a fitted model from a Zarr group written by :func:`write_model_group`.

    Parameters
    ----------
    group : zarr.Group
    cls : type, optional
        Unused: the model is of the estimator its format records (a GaussianMixture or a
        BayesianGaussianMixture), whichever class reads it.

    Returns
    -------
    GaussianMixture or BayesianGaussianMixture
        Fitted, with its public fitted attributes set.

    Raises
    ------
    ValueError
        If the group holds no daskgmm model, or one of a newer format.
    """
    attrs = dict(group.attrs)
    estimator = estimator_class(attrs.get("format"))
    if estimator is None:
        raise ValueError(f"Zarr group holds no daskgmm model (format {attrs.get('format')!r}).")
    if attrs.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"Model format version {attrs['format_version']} is newer than this daskgmm reads "
            f"({MODEL_FORMAT_VERSION}); upgrade daskgmm."
        )
    model = estimator(**attrs["params"])
    arrays, _ = _fitted_names(model)
    for name in arrays:
        value = group[name][...]
        setattr(model, name, tuple(value) if name in attrs.get("pairs", ()) else value)
    model.lower_bounds_ = group["lower_bounds_"][...].tolist()
    for name, value in attrs["fitted"].items():
        setattr(model, name, value)
    if "online_statistics_" in group:
        model.online_statistics_ = read_statistics(group["online_statistics_"])
    return model


def save_model(model, path, overwrite=False):
    """Save a fitted GaussianMixture to a Zarr group at ``path``, atomically.

    Only a model daskgmm saved, holding nothing else, is replaced (with ``overwrite``).

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    path : str or Path
    overwrite : bool, default=False

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        If ``path`` holds anything but a model daskgmm saved.
    """
    if atomic.folder_exists(path) and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it.")
    path = Guard().check(path, "path", MODEL, replace=True)
    with atomic.atomic_directory(path, MODEL) as staging:
        write_model_group(zarr.open_group(location(staging), mode="a"), model)  # keeps the marker


def load_model(path, cls, storage_options=None):
    """Load a model saved with :func:`save_model` (or written by :func:`write_model`).

    Parameters
    ----------
    path : str or Path
        A local folder or an fsspec URL.
    cls : type
        The estimator class.
    storage_options : dict, optional
        The fsspec filesystem's options for a URL (e.g. ``{"endpoint_url": ...}``); by default
        the job's ``storage`` section, or the filesystem's own defaults and environment.

    Returns
    -------
    GaussianMixture

    Raises
    ------
    FileNotFoundError
        If there is no model at ``path``.
    PermissionError
        If the object store refuses the read.
    """
    path = str(path)
    if not is_url(path) and not Path(path).exists():
        raise FileNotFoundError(f"No saved model at {path!r}.")
    with naming(path, f"No saved model at {path!r}."):
        group = open_node(path, options=storage_options)
    if not isinstance(group, zarr.Group):
        raise ValueError(f"{path!r} holds a Zarr array, not a saved model (a group).")
    return read_model_group(group, cls)


def write_model(path, model, attrs=None):
    """Write a fitted model to a new Zarr group at ``path`` with extra ``attrs`` (not atomic).

    Used inside a job's staging directory, which is itself committed atomically; the group reads
    back with :func:`load_model` (or ``GaussianMixture.load``), its attributes with
    :func:`daskgmm.store.read_attrs`.

    Parameters
    ----------
    path : Path
    model : GaussianMixture
        Fitted.
    attrs : dict, optional
        JSON-ready attributes recorded beside the model's own.
    """
    group = zarr.open_group(location(path), mode="w")
    write_model_group(group, model)
    group.attrs.update(attrs or {})
