"""What a fitted model gives each row: its label, probabilities and log-likelihood, lazily.

Rows without data get the no-data label (the largest value of the label dtype) and NaN.
"""

import dask.array as da
import numpy as np

# The outputs' dimension names (Zarr v3 ``dimension_names``), so that ``xarray.open_zarr``
# names and aligns the arrays of result.zarr as they are.
ROW_DIMS = ("row",)
PIXEL_DIMS = ("image", "y", "x")
COMPONENT_DIM = "component"


def label_dtype(n_components):
    """The smallest unsigned integer dtype holding labels 0..K-1 and a no-data label."""
    return np.min_scalar_type(n_components)


def no_data_label(dtype):
    """The label given to rows or pixels without data: the largest value of ``dtype``."""
    return np.iinfo(dtype).max


def where_valid(array, valid, fill):
    """``array`` where ``valid`` (rows), ``fill`` elsewhere (lazily)."""
    condition = valid if array.ndim == 1 else valid[:, None]
    return da.where(condition, array, np.asarray(fill, dtype=array.dtype))


def prediction_arrays(fitted, rows, output, valid=None):
    """Lazy per-row outputs: ``labels``, and ``probabilities``/``log_likelihood`` when asked.

    Parameters
    ----------
    fitted : Fitted
    rows : dask.array.Array of shape (n_rows, n_features)
    output : OutputConfig
    valid : dask.array.Array of shape (n_rows,) of bool, optional
        Rows without data get the no-data label and NaN.

    Returns
    -------
    arrays : dict of str to dask.array.Array
        labels (smallest unsigned dtype), probabilities (n_rows, K) and log_likelihood (n_rows,)
        in float32.
    fill_values : dict of str to scalar
    """
    model = fitted.model
    X = fitted.features(rows if valid is None else where_valid(rows, valid, 0))
    dtype = label_dtype(model.n_components)
    arrays = {"labels": model.predict(X).astype(dtype)}
    if output.probabilities:
        arrays["probabilities"] = model.predict_proba(X).astype(np.float32)
    if output.log_likelihood:
        arrays["log_likelihood"] = model.score_samples(X).astype(np.float32)
    if valid is None:
        return arrays, {}
    fills = {"labels": no_data_label(dtype), "probabilities": np.nan, "log_likelihood": np.nan}
    return ({name: where_valid(array, valid, fills[name]) for name, array in arrays.items()},
            {name: fills[name] for name in arrays})


def dimension_names(shape, base):
    """The dimension names of an output of ``shape``: ``base``, then one per component."""
    return tuple(base) + (COMPONENT_DIM,) * (len(shape) - len(base))


def _dims(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def describe_predictions(output, shape, n_components):
    """Plan lines for the arrays of :func:`prediction_arrays` (each row shaped ``shape``)."""
    lines = [f"result.zarr/labels {_dims(shape)} {label_dtype(n_components)}"]
    if output.probabilities:
        lines.append(f"result.zarr/probabilities {_dims(shape + (n_components,))} float32")
    if output.log_likelihood:
        lines.append(f"result.zarr/log_likelihood {_dims(shape)} float32")
    return lines + ["model.zarr"]


def component_counts(labels, n_components):
    """Lazy number of rows (pixels) given each label 0..K-1."""
    top = int(np.iinfo(labels.dtype).max) + 1
    return da.bincount(labels.ravel(), minlength=top)[:n_components]
