"""Checks at the edge: estimator arguments, input arrays, sample weights, initial parameters.

Messages name the argument, the bad value and what was expected; where scikit-learn has a
message for the same mistake, the same words are used so code matching on them keeps working.
"""

import numbers

import dask.array as da
import numpy as np

from .array_inputs import as_array
from .covariance import is_symmetric_positive_definite, precisions_shape
from .engine import dask_row_data, numpy_row_data
from .kernels import count_nonfinite_rows, float_dtype_of, raise_if_nonfinite


_NUMBER_KINDS = {"int": (numbers.Integral, "an int"), "float": (numbers.Real, "a float")}


def _check_number(owner, name, value, parameter):
    number_type, kind = _NUMBER_KINDS[parameter.kind]
    message = (f"The '{name}' parameter of {owner} must be {kind} in the range "
               f"[{parameter.low}, inf). Got {value!r} instead.")
    if isinstance(value, bool) or not isinstance(value, number_type):
        raise TypeError(message)
    # Written so that NaN fails too; infinity is outside [low, inf), as in scikit-learn.
    if not parameter.low <= value < np.inf:
        raise ValueError(message)


_BOOLEAN_TYPES = (bool, np.bool_)
_BOOLEAN_KINDS = "an instance of 'bool' or an instance of 'numpy.bool'"


def _check_bool(owner, name, value, parameter):
    """Refuse anything but ``bool`` and ``numpy.bool_``, as scikit-learn's 'boolean' does."""
    if not isinstance(value, _BOOLEAN_TYPES):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be {_BOOLEAN_KINDS}. Got {value!r} instead."
        )


def _check_verbose(owner, name, value, parameter):
    """Accept an int >= 0 or a bool, as scikit-learn's 'verbose' constraint does."""
    if isinstance(value, _BOOLEAN_TYPES):
        return
    message = (f"The '{name}' parameter of {owner} must be an int in the range [0, inf), "
               f"{_BOOLEAN_KINDS}. Got {value!r} instead.")
    if not isinstance(value, numbers.Integral):
        raise TypeError(message)
    if value < 0:
        raise ValueError(message)


def _check_choice(owner, name, value, parameter):
    if not isinstance(value, str) or value not in parameter.choices:
        choices = ", ".join(repr(choice) for choice in sorted(parameter.choices))
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a str among {{{choices}}}. "
            f"Got {value!r} instead."
        )


# The check of each kind of options.Parameter made before any work.
_CHECKS = {"int": _check_number, "float": _check_number, "bool": _check_bool,
           "verbose": _check_verbose, "choice": _check_choice}
# Kinds that need the data (its number of features) or are drawn from: checked by the fit.
_CHECKED_BY_FIT = ("initial", "random_state")


def check_estimator_params(estimator, parameters):
    """Validate an estimator's constructor arguments once, before any work.

    Parameters
    ----------
    estimator : BaseMixture
        Messages name its class.
    parameters : dict of str to daskgmm.options.Parameter
        Its parameter table (e.g. ``GAUSSIAN_MIXTURE_PARAMETERS``), checked in order.

    Raises
    ------
    TypeError, ValueError
        For the first argument of the wrong type or out of range, with scikit-learn's words.
    """
    owner = type(estimator).__name__
    for name, parameter in parameters.items():
        value = getattr(estimator, name)
        if parameter.kind in _CHECKED_BY_FIT or (parameter.nullable and value is None):
            continue
        _CHECKS[parameter.kind](owner, name, value, parameter)


def as_random_state(random_state):
    """Return the ``numpy.random.RandomState`` scikit-learn would draw from for ``random_state``.

    None is NumPy's global RandomState, an int seeds a new one, a RandomState is used as is and
    a Generator seeds a new RandomState from its stream.
    """
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(random_state.integers(0, 2**32 - 1, size=4))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.RandomState(random_state)
    raise ValueError(
        "random_state must be None, an int, a numpy RandomState or Generator; "
        f"got {random_state!r}."
    )


def _check_dims(X, name="X"):
    if X.ndim == 1:
        raise ValueError(
            f"Expected 2D array, got 1D array instead:\n{name}.shape={X.shape}.\n"
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
    if X.ndim != 2:
        raise ValueError(
            f"Found array with dim {X.ndim}. GaussianMixture expected <= 2 "
            f"({name}.shape={X.shape}); reshape it to (n_samples, n_features), e.g. "
            f"{name}.reshape(-1, {name}.shape[-1])."
        )
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}.")
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int, uint or float); got dtype {X.dtype}."
        )


def check_finite(X):
    """Raise the ValueError of :func:`raise_if_nonfinite` for NaN or infinity in in-memory X.

    Dask input is checked by the passes over it instead (see :mod:`daskgmm.kernels`).
    """
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise_if_nonfinite(count_nonfinite_rows(X))


def _rows_only(X):
    """Re-chunk a Dask array chunked along features so that every chunk holds whole rows."""
    if len(X.chunks[1]) > 1:
        return X.rechunk({1: -1})
    return X


def check_X(X, n_components=None, n_features=None):
    """Return X as a 2-D NumPy or Dask array of whole rows, checking shape, dtype and values.

    Parameters
    ----------
    X : array-like, dask.array.Array, zarr.Array, str, xarray.DataArray or dask DataFrame
        The data; a string or path is a Zarr store (or fsspec URL); see
        :func:`daskgmm.array_inputs.as_array`.
    n_components : int, optional
        When given (fitting), X must have at least this many rows and at least two.
    n_features : int, optional
        When given (predicting), X must have this many columns.
    """
    X = as_array(X)
    _check_dims(X)
    if isinstance(X, da.Array):
        X = _rows_only(X)
    else:
        check_finite(X)
    n_samples = X.shape[0]
    if n_components is not None:
        if n_samples < 2:
            raise ValueError(
                f"Found array with {n_samples} sample(s) (shape={X.shape}) while a minimum of "
                "2 is required by GaussianMixture."
            )
        if n_samples < n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {n_components}, n_samples = {n_samples}"
            )
    if X.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
            "required by GaussianMixture."
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but GaussianMixture is expecting {n_features} "
            "features as input."
        )
    return X


def _check_weight_values(weights):
    """Check the values of the weights; return their sum and their largest value."""
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold real numbers; got dtype {weights.dtype}.")
    if isinstance(weights, da.Array):
        negative, nonfinite, total, largest = da.compute(
            (weights < 0).any(), ~da.isfinite(weights).all(), weights.sum(), weights.max()
        )
    else:
        negative = (weights < 0).any()
        nonfinite = not np.isfinite(weights).all()
        total, largest = weights.sum(), weights.max()
    if nonfinite:
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if negative:
        raise ValueError("Negative values in data passed to `sample_weight`.")
    if not total > 0:
        raise ValueError("sample_weight must have a positive sum; all weights are zero.")
    return total, largest


def _rescaled_if_subnormal(weights, total, largest, dtype):
    """The weights times a power of two if even the largest is below ``dtype``'s normal range.

    The passes compute with the weights in ``dtype`` (that of X's blocks); below its smallest
    normal number they have lost digits or underflow to zero, and k-means|| draws rows by keys
    ``E / w`` that all overflow, so that no row is drawn. Scaling by ``2 ** k`` keeps every
    ratio exactly and brings the mean weight between 0.5 and 2, as if the weights were counts.
    Weights in the normal range are used as given, to the bit: scikit-learn's count padding
    (10 eps) is absolute, so scaling them would change the fitted model.
    """
    if not largest < np.finfo(dtype).tiny:
        return weights
    exponent = np.frexp(len(weights))[1] - np.frexp(total)[1]
    return np.ldexp(weights.astype(np.float64), exponent)


def check_sample_weight(sample_weight, X):
    """Return sample weights matching X's kind and row blocks, checked non-negative and finite.

    Weights too small to compute with are scaled exactly (see :func:`_rescaled_if_subnormal`).
    """
    if sample_weight is None:
        return None
    if np.isscalar(sample_weight):
        sample_weight = np.full(X.shape[0], float(sample_weight))
    weights = as_array(sample_weight, name="sample_weight")
    if weights.ndim != 1 or weights.shape[0] != X.shape[0]:
        raise ValueError(
            f"sample_weight.shape == {weights.shape}, expected {(X.shape[0],)}!"
        )
    total, largest = _check_weight_values(weights)
    weights = _rescaled_if_subnormal(weights, total, largest, float_dtype_of(X.dtype))
    if isinstance(X, da.Array):
        if isinstance(weights, da.Array):
            return weights.rechunk((X.chunks[0],))
        return da.from_array(weights, chunks=(X.chunks[0],))
    return np.asarray(weights)


def row_data(X, weights, block_rows=None):
    """Wrap checked X and weights as the engine's :class:`RowData`."""
    if isinstance(X, da.Array):
        return dask_row_data(X, weights)
    return numpy_row_data(X, weights, block_rows)


def check_weights_init(weights, n_components):
    weights = _as_float_array(weights, "weights")
    _check_shape(weights, (n_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        # scikit-learn's message swaps the two values; code matching on it must keep working,
        # so its words come first and the plain statement follows.
        low, high = np.min(weights), np.max(weights)
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{low:.5f}, min value {high:.5f} (scikit-learn's wording: the smallest weight is "
            f"{low:.5f} and the largest {high:.5f})"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(np.abs(1.0 - np.sum(weights)), 0.0, atol=atol):
        raise ValueError(
            "The parameter 'weights' should be normalized, but got sum(weights) = "
            f"{np.sum(weights):.5f}"
        )
    return weights


def check_means_init(means, n_components, n_features):
    means = _as_float_array(means, "means")
    _check_shape(means, (n_components, n_features), "means")
    return means


def check_precisions_init(precisions, covariance_type, n_components, n_features):
    precisions = _as_float_array(precisions, f"{covariance_type} precision")
    _check_shape(precisions, precisions_shape(covariance_type, n_components, n_features),
                 f"{covariance_type} precision")
    if covariance_type in ("diag", "spherical"):
        if np.any(precisions <= 0.0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
        return precisions
    matrices = precisions if covariance_type == "full" else [precisions]
    if not all(is_symmetric_positive_definite(matrix) for matrix in matrices):
        raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    return precisions


def _as_float_array(value, name):
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"The parameter '{name}' must hold real numbers; got dtype {array.dtype}.")
    if array.dtype != np.float32:
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"The parameter '{name}' contains NaN or infinity.")
    return array


def _check_shape(param, expected, name):
    if param.shape != expected:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {expected}, but got {param.shape}"
        )
