"""The estimator refuses what it cannot answer, the same way for NumPy, Dask and Zarr input.

Non-finite rows raise one ValueError whichever path meets them (an up-front check, a pass of
``fit``, or the blocks of a lazy prediction computed later on a cluster); arguments of the wrong
type are refused before any data is read; a warm start on data with another number of features
is refused with scikit-learn's message; weights too small to compute with are rescaled exactly.
"""

import re

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from conftest import FITTED_ARRAYS, with_value
from daskgmm import GaussianMixture
from daskgmm.validation import check_sample_weight

# The data are conftest's X (three components in three features) and fitted its model.
N_COMPONENTS = 3
N_FEATURES = 3
CHUNK_ROWS = 200
INPUT_KINDS = ("numpy", "dask", "zarr")
LAZY_METHODS = ("predict", "predict_proba", "score_samples")
INFERENCE_METHODS = LAZY_METHODS + ("score",)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def as_kind(X, kind):
    """X as NumPy, as a Dask array of several row chunks, or as a Zarr array of them."""
    if kind == "numpy":
        return X
    if kind == "dask":
        return da.from_array(X, chunks=(CHUNK_ROWS, -1))
    stored = zarr.create_array(store={}, shape=X.shape, chunks=(CHUNK_ROWS, X.shape[1]),
                               dtype=X.dtype)
    stored[:] = X
    return stored


def with_bad_row(X, value, whole_row=False):
    """A copy of X with one non-finite value (or row) in its last chunk."""
    return with_value(X, value, row=len(X) - 2, column=slice(None) if whole_row else 1)


def error_message(call):
    with pytest.raises(ValueError) as raised:
        call()
    return str(raised.value)


def unreadable(shape):
    """A Dask array that raises if any of its data is read: proves a check comes first."""
    def refuse(block):
        raise AssertionError("the data was read before the arguments were checked")

    template = da.zeros(shape, chunks=(CHUNK_ROWS, -1))
    return template.map_blocks(refuse, dtype=np.float64)


# ---------------------------------------------------------------- non-finite rows


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["dask", "zarr"])
@pytest.mark.parametrize("method", LAZY_METHODS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_lazy_inference_refuses_nonfinite_rows_like_numpy(client, fitted, X, kind, method,
                                                          value):
    bad = with_bad_row(X, value)
    numpy_message = error_message(lambda: getattr(fitted, method)(bad))
    lazy = getattr(fitted, method)(as_kind(bad, kind))
    assert isinstance(lazy, da.Array)
    assert error_message(lazy.compute) == numpy_message
    assert "Input X contains NaN or infinity in 1 row(s)" in numpy_message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("start", ["kmeans", "random", "given"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("whole_row", [False, True])
def test_fit_refuses_nonfinite_rows_with_one_message(client, fitted, X, start, value,
                                                     whole_row):
    if start == "given":
        params = {"means_init": fitted.means_, "weights_init": fitted.weights_,
                  "precisions_init": fitted.precisions_}
    else:
        params = {"init_params": start}
    model = GaussianMixture(N_COMPONENTS, random_state=0, **params)
    bad = with_bad_row(X, value, whole_row)
    messages = {kind: error_message(lambda: model.fit(as_kind(bad, kind))) for kind in INPUT_KINDS}
    assert len(set(messages.values())) == 1, messages
    assert "Input X contains NaN or infinity in 1 row(s)" in messages["numpy"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_finite_rows_far_away_are_not_called_nonfinite(fitted, X, kind):
    # Their squared distances overflow, so their log-likelihood is not finite: an answer about
    # the model, not bad input, and only the input decides which error is raised.
    far = X.copy()
    far[5] = 1e200
    scores = np.asarray(fitted.score_samples(as_kind(far, kind)))
    assert_array_equal(np.isfinite(scores), np.arange(len(X)) != 5)


# ---------------------------------------------------------------- argument types

OUT_OF_RANGE = {("verbose", -1), ("tol", np.inf), ("reg_covar", np.inf)}


@pytest.mark.parametrize(
    "name, value",
    [
        ("verbose", "2"), ("verbose", 1.5), ("verbose", None), ("verbose", -1),
        ("verbose_interval", "10"), ("verbose_interval", 2.0), ("verbose_interval", True),
        ("max_iter", "100"), ("max_iter", 10.0), ("max_iter", True),
        ("n_init", "1"), ("n_init", np.True_),
        ("n_components", "3"), ("n_components", True), ("n_components", 3.0),
        ("tol", "1e-3"), ("tol", None), ("tol", True), ("tol", np.inf),
        ("reg_covar", "1e-6"), ("reg_covar", False), ("reg_covar", np.inf),
        ("split_every", "8"), ("split_every", 4.0),
        ("block_rows", "1024"), ("block_rows", 1024.5), ("block_rows", True),
        ("warm_start", "no"), ("warm_start", 1), ("warm_start", None),
        ("persist", "yes"), ("persist", 0), ("persist", None),
    ],
)
def test_wrong_argument_is_refused_before_any_work(name, value):
    # A value of the right type out of range is a ValueError; any other a TypeError
    # (scikit-learn raises its InvalidParameterError, a subclass of both, for either).
    error = ValueError if (name, value) in OUT_OF_RANGE else TypeError
    model = GaussianMixture(**{"n_components": N_COMPONENTS, name: value})
    with pytest.raises(error) as raised:
        model.fit(unreadable((600, N_FEATURES)))
    assert f"The '{name}' parameter of GaussianMixture must be" in str(raised.value)
    assert f"Got {value!r} instead" in str(raised.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("verbose", True), ("verbose", np.True_), ("verbose", np.int64(2)), ("verbose", False),
        ("warm_start", np.True_), ("persist", np.False_), ("max_iter", np.int64(2)),
        ("n_components", np.uint8(3)), ("tol", np.float32(1e-3)), ("tol", 0),
        ("reg_covar", np.float64(1e-6)), ("block_rows", np.int32(100)),
    ],
)
def test_arguments_scikit_learn_accepts_are_accepted(X, name, value, capsys):
    params = {"n_components": N_COMPONENTS, "max_iter": 2, "random_state": 0, name: value}
    model = GaussianMixture(**params).fit(X)
    assert model.n_iter_ >= 1


# ---------------------------------------------------------------- number of features


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_warm_start_on_other_features_is_refused_before_any_work(X, kind):
    model = GaussianMixture(N_COMPONENTS, random_state=0, warm_start=True, max_iter=5).fit(X)
    means = model.means_.copy()
    wider = np.hstack([X, X[:, :2]])
    message = "X has 5 features, but GaussianMixture is expecting 3 features as input."
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(as_kind(wider, kind))
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(unreadable(wider.shape))
    assert_array_equal(model.means_, means)


def test_cold_start_on_other_features_refits(X):
    model = GaussianMixture(N_COMPONENTS, random_state=0).fit(X)
    assert model.fit(X[:, :2]).n_features_in_ == 2


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("method", INFERENCE_METHODS)
@pytest.mark.parametrize("n_features", [2, 5])
def test_inference_on_other_features_is_refused(fitted, X, kind, method, n_features):
    other = np.hstack([X, X])[:, :n_features]
    message = (f"X has {n_features} features, but GaussianMixture is expecting 3 features "
               "as input.")
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(fitted, method)(as_kind(other, kind))


# ---------------------------------------------------------------- tiny sample weights


def weights_of_kind(weights, kind):
    return weights if kind == "numpy" else da.from_array(weights, chunks=CHUNK_ROWS)


@pytest.mark.parametrize("weight_kind", ["numpy", "dask"])
@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_subnormal_weights_fit_as_their_ratios(client, X, kind, weight_kind, init_params):
    # Integer multiples of a subnormal number keep their ratios exactly.
    repeats = np.arange(len(X)) % 3 + 1.0
    data = as_kind(X, kind)
    model = GaussianMixture(N_COMPONENTS, random_state=0, init_params=init_params)
    reference = model.fit(data, sample_weight=weights_of_kind(repeats, weight_kind))
    reference = {name: getattr(reference, name).copy() for name in FITTED_ARRAYS}
    tiny = model.fit(data, sample_weight=weights_of_kind(repeats * 1e-320, weight_kind))
    for name, expected in reference.items():
        assert_allclose(getattr(tiny, name), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_weights_below_float32_range_fit_float32_data(client, X, kind):
    data = as_kind(X.astype(np.float32), kind)
    # A fixed number of iterations: float32 rounding moves the lower bound by ~1e-4, enough for a
    # 1e-3 tolerance to stop the two fits at different iterations on another CPU's kernels.
    model = GaussianMixture(N_COMPONENTS, random_state=0, tol=0.0, max_iter=5)
    unweighted = model.fit(data)
    # Weights, means and covariances: float32 rounding of the covariances is amplified in their
    # inverses by the covariances' condition numbers.
    unweighted = {name: getattr(unweighted, name).copy() for name in FITTED_ARRAYS[:3]}
    # Exactly the model of the same weights scaled by a power of two into the normal range ...
    in_range = np.asarray(check_sample_weight(np.full(len(X), 1e-100), X.astype(np.float32)))
    assert 0.5 <= in_range.mean() <= 2.0 and np.all(in_range == in_range[0])
    scaled = {name: getattr(model.fit(data, sample_weight=in_range), name).copy()
              for name in FITTED_ARRAYS[:3]}
    tiny = model.fit(data, sample_weight=np.full(len(X), 1e-100))
    for name, expected in scaled.items():
        assert_array_equal(getattr(tiny, name), expected, err_msg=name)
    # ... and so the unweighted model up to float32 rounding: weights of 1.75 rather than 1 round
    # the E-step's products differently (2e-3 of a covariance on one CPU, 1e-4 on another).
    for name, expected in unweighted.items():
        assert_allclose(getattr(tiny, name), expected, rtol=5e-3, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("weight_kind", ["numpy", "dask"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weights_in_the_normal_range_are_used_bit_for_bit(X, weight_kind, dtype):
    data = da.from_array(X.astype(dtype), chunks=(CHUNK_ROWS, -1))
    smallest_normal = np.finfo(dtype).tiny
    cases = [np.arange(len(X)) % 3 + 1.0, np.full(len(X), 1.0 / len(X)),
             np.full(len(X), smallest_normal), np.r_[smallest_normal, np.zeros(len(X) - 1)]]
    for weights in cases:
        checked = check_sample_weight(weights_of_kind(weights, weight_kind), data)
        assert_array_equal(np.asarray(checked).view(np.uint64), weights.view(np.uint64))
