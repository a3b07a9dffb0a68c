"""What users pass as data, made a NumPy or Dask array without computing it.

NumPy arrays and anything ``numpy.asarray`` takes; Dask arrays, with chunk sizes measured first
when they are unknown (``X[X[:, 0] > 0]``); Zarr arrays and store paths or URLs, read lazily;
``xarray.DataArray`` (its dims say which axis holds the features; a Dask-backed one stays lazy);
and ``dask.dataframe`` frames and series of numeric columns.
"""

import logging
import os
import time

import dask.array as da
import numpy as np

logger = logging.getLogger(__name__)

# DataArray dims that name the features axis; without one, the last axis holds the features.
FEATURE_DIMS = ("feature", "features", "band", "bands", "channel", "channels", "variable", "c")


def as_array(X, name="X"):
    """Return ``X`` as a NumPy or Dask array, lazily for lazy inputs.

    Parameters
    ----------
    X : array-like, dask.array.Array, zarr.Array, str, os.PathLike, xarray.DataArray or
        dask.dataframe.DataFrame
        The data (or weights, for ``name="sample_weight"``).
    name : str, default="X"
        How messages name it.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        A Dask array has known chunk sizes.
    """
    if isinstance(X, da.Array):
        return with_known_chunks(X, name)
    if isinstance(X, (str, os.PathLike)):
        from .store import open_array

        return open_array(X)
    module = type(X).__module__
    if module.startswith("zarr"):
        from .reading import as_dask_array

        return as_dask_array(X)
    if module.startswith("xarray"):
        return data_array_values(X, name)
    if module.startswith(("dask.dataframe", "dask_expr")):
        return dataframe_values(X, name)
    if hasattr(X, "tocsr") or hasattr(X, "todense"):
        raise TypeError(
            "Sparse input is not supported by GaussianMixture; pass a dense array, e.g. "
            "X.toarray(), or a Dask array built from dense chunks."
        )
    return in_memory_values(X, name)


def in_memory_values(X, name):
    """``numpy.asarray(X)``, with object arrays converted to float."""
    X = np.asarray(X)
    if X.dtype == object:
        try:
            return X.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name} has dtype object and does not convert to float: {error}") from None
    return X


def with_known_chunks(X, name):
    """A Dask array whose chunk sizes are known: measured in one pass when they are not."""
    if not any(np.isnan(size) for sizes in X.chunks for size in sizes):
        return X
    started = time.perf_counter()
    # On a copy: compute_chunk_sizes changes the array it is called on, here the user's.
    X = X.copy().compute_chunk_sizes()
    logger.info("%s had unknown chunk sizes: measured them in one pass over its %d chunks "
                "(%.2fs)", name, X.npartitions, time.perf_counter() - started)
    return X


def data_array_values(X, name):
    """The values of an ``xarray.DataArray``, its features axis last: a Dask array if it is one.

    A dim in :data:`FEATURE_DIMS` is the features axis; without one, the last dim is.
    """
    features = [dim for dim in X.dims if str(dim).lower() in FEATURE_DIMS]
    if len(features) > 1:
        raise ValueError(
            f"{name} has dims {X.dims}, of which {features} could each hold the features; "
            f"rename all but one, e.g. {name}.rename({{{features[1]!r}: 'other'}}).")
    if features and X.ndim == 2:
        X = X.transpose(..., features[0])
    values = X.data
    if isinstance(values, da.Array):
        return with_known_chunks(values, name)
    return in_memory_values(values, name)


def dataframe_values(frame, name):
    """The rows of a ``dask.dataframe`` of numeric columns as a Dask array, chunk per partition.

    Partition lengths are counted in one pass, so the array's chunks are known.
    """
    dtypes = [frame.dtype] if frame.ndim == 1 else list(frame.dtypes)
    columns = [frame.name] if frame.ndim == 1 else list(frame.columns)
    other = [column for column, dtype in zip(columns, dtypes)
             if getattr(dtype, "kind", "O") not in "biuf"]
    if other:
        raise TypeError(
            f"{name} must hold numeric columns only; {other} are not: select the numeric ones, "
            f"e.g. {name}.select_dtypes('number').")
    started = time.perf_counter()
    values = frame.to_dask_array(lengths=True)
    logger.info("%s is a dask DataFrame: counted the rows of its %d partitions (%.2fs)",
                name, frame.npartitions, time.perf_counter() - started)
    return values
