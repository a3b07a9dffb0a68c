"""xarray Datasets and DataArrays written to Zarr, read as the jobs' inputs (the ``imaging`` extra).

xarray opens the store (decoding scale factors and fill values, so missing values are NaN);
one data variable is taken, its dims say which axis holds the features and which the rows or
the image's y and x, and its coordinates along those dims go with it to the outputs.
"""

import warnings

import numpy as np

from .array_inputs import FEATURE_DIMS, with_known_chunks


def _xarray():
    try:
        import xarray
    except ImportError:
        raise ImportError("Reading xarray data needs xarray: pip install 'daskgmm[imaging]'") \
            from None
    return xarray


def open_variable(path, variable=None, options=None):
    """Open one data variable of an xarray store lazily (Dask-backed).

    Parameters
    ----------
    path : str
        A local Zarr store or fsspec URL written by ``Dataset.to_zarr`` or
        ``DataArray.to_zarr``.
    variable : str, optional
        The data variable; may be omitted when the store holds exactly one.
    options : dict, optional
        fsspec storage options of a URL.

    Returns
    -------
    xarray.DataArray

    Raises
    ------
    ValueError
        If ``variable`` names no data variable, or is omitted and the store holds several.
    """
    xarray = _xarray()
    with warnings.catch_warnings():  # a store written without consolidated metadata reads too
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated",
                                RuntimeWarning)
        dataset = xarray.open_zarr(path, storage_options=options or None, chunks={})
    names = [str(name) for name in dataset.data_vars]
    if variable is None and len(names) != 1:
        raise ValueError(f"{path!r} holds the data variables {names}; name the one to use")
    if variable is not None and variable not in names:
        raise ValueError(f"{path!r} has no data variable {variable!r}; it holds {names}")
    return dataset[variable if variable is not None else names[0]]


def feature_dim_of(array, feature_dim=None):
    """The dim of ``array`` that holds the features: ``feature_dim``, else the one dim named as
    in :data:`daskgmm.array_inputs.FEATURE_DIMS`, else the last.

    Raises
    ------
    ValueError
        If ``feature_dim`` is not a dim of ``array``, or several dims could hold the features.
    """
    dims = [str(dim) for dim in array.dims]
    if feature_dim is not None:
        if feature_dim not in dims:
            raise ValueError(f"{feature_dim!r} is not a dim of the variable; its dims are {dims}")
        return feature_dim
    named = [dim for dim in dims if dim.lower() in FEATURE_DIMS]
    if len(named) > 1:
        raise ValueError(f"the dims {named} could each hold the features; name one")
    return named[0] if named else dims[-1]


def _coordinates(array, dims, names):
    """The 1-D coordinates of ``array`` along ``dims``, under the output's dim ``names``."""
    coords = {}
    for dim, name in zip(dims, names):
        if dim in array.coords and array.coords[dim].ndim == 1:
            coords[name] = np.asarray(array.coords[dim].values)
    return coords


def features_last(array, feature_dim=None):
    """A variable's values with the features last: rows ``(n_rows, C)`` for a 2-D variable,
    else images ``(H, W, C)`` or ``(n, H, W, C)``, the two dims before the features being the
    image's y and x and any before them stacked into images (in order).

    Returns
    -------
    values : dask.array.Array
    coords : dict of str to ndarray
        The variable's 1-D coordinates along its rows (as ``row``) or its y and x dims (as
        ``y`` and ``x``), where it has them.
    """
    feature = feature_dim_of(array, feature_dim)
    others = [str(dim) for dim in array.dims if str(dim) != feature]
    values = with_known_chunks(array.transpose(*others, feature).data, "input")
    if values.ndim > 4:
        values = values.reshape((-1,) + values.shape[-3:])
    if values.ndim == 2:
        return values, _coordinates(array, others, ("row",))
    return values, _coordinates(array, others[-2:], ("y", "x"))
