"""Bad input is refused up front with an error that names the problem; odd but valid input works.

Every error is checked for its class and for the words that tell the user what is wrong (the
argument, the value, what was expected). Valid unusual inputs (Dask arrays chunked along
features, Zarr arrays and store paths) must give the same model as the same data in NumPy.
"""

import re

import dask.array as da
import numpy as np
import pytest
import sklearn.exceptions
import zarr
from dask.callbacks import Callback
from numpy.testing import assert_allclose, assert_array_equal

import daskgmm
from conftest import COVARIANCE_TYPES, assert_same_model, with_value
from daskgmm import GaussianMixture
from daskgmm.options import GAUSSIAN_MIXTURE_PARAMETERS
from daskgmm.validation import check_estimator_params

N_COMPONENTS = 3
N_FEATURES = 3
CHUNK_ROWS = 200
INFERENCE_METHODS = ("predict", "predict_proba", "score_samples", "score")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def as_dask(X, chunk_rows=CHUNK_ROWS):
    return da.from_array(X, chunks=(chunk_rows, -1))


def fit(X, **params):
    return GaussianMixture(N_COMPONENTS, random_state=0, **params).fit(X)


class PassCounter(Callback):
    """Counts the Dask computations (passes over the data) run inside the ``with`` block."""

    def __init__(self):
        super().__init__()
        self.passes = 0

    def _start(self, dsk):
        self.passes += 1


def bad_dask_X(X, value, whole_row=False):
    """X as Dask with one bad value (or row) in the last chunk, so no check can stop early."""
    X = X.copy()
    row = len(X) - 2
    if whole_row:
        X[row] = value
    else:
        X[row, 1] = value
    return as_dask(X)


# ---------------------------------------------------------------- values of X


@pytest.mark.parametrize("value, words", [(np.nan, "contains NaN"), (np.inf, "infinity"),
                                          (-np.inf, "infinity")])
def test_nonfinite_numpy_X_at_fit(X, value, words):
    with pytest.raises(ValueError, match=words):
        GaussianMixture(N_COMPONENTS).fit(with_value(X, value))


@pytest.mark.parametrize("method", INFERENCE_METHODS)
@pytest.mark.parametrize("value, words", [(np.nan, "contains NaN"), (np.inf, "infinity")])
def test_nonfinite_numpy_X_at_inference(fitted, X, method, value, words):
    with pytest.raises(ValueError, match=words):
        getattr(fitted, method)(with_value(X, value))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_entry_in_dask_X_at_fit(threads, X, value, init_params):
    model = GaussianMixture(N_COMPONENTS, random_state=0, init_params=init_params)
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        model.fit(bad_dask_X(X, value))


@pytest.mark.parametrize(
    "init_params",
    ["kmeans", "k-means++", "random", "random_from_data"],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_row_in_dask_X_at_fit(threads, X, init_params):
    model = GaussianMixture(N_COMPONENTS, random_state=0, init_params=init_params)
    with pytest.raises(ValueError, match=r"Input X contains NaN or infinity in 1 row\(s\)"):
        model.fit(bad_dask_X(X, np.nan, whole_row=True))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_row_in_dask_X_on_the_cluster(client, X):
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(N_COMPONENTS, random_state=0, init_params="random").fit(
            bad_dask_X(X, np.nan, whole_row=True))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_in_dask_X_is_reported_without_extra_passes(threads, X):
    model = GaussianMixture(N_COMPONENTS, random_state=0, max_iter=1)
    with PassCounter() as clean:
        model.fit(as_dask(X))
    with PassCounter() as bad, pytest.raises(ValueError, match="NaN"):
        model.fit(bad_dask_X(X, np.nan, whole_row=True))
    assert bad.passes <= clean.passes


def test_nan_in_dask_X_on_a_warm_start(client, X):
    # A warm start skips initialisation: the EM pass itself must still refuse NaN.
    model = GaussianMixture(N_COMPONENTS, random_state=0, warm_start=True).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(as_dask(with_value(X, np.nan)))


@pytest.mark.parametrize("method", ["fit", "predict"])
@pytest.mark.parametrize("dtype", ["U8", "S8"])
def test_string_X_is_a_type_error(fitted, X, method, dtype):
    strings = X.astype(dtype)
    target = GaussianMixture(N_COMPONENTS) if method == "fit" else fitted
    with pytest.raises(TypeError, match=re.escape(str(strings.dtype))):
        getattr(target, method)(strings)


def test_integer_and_boolean_X_are_fitted_in_float64(X):
    integers = np.rint(X * 10).astype(np.int32)
    assert fit(integers).means_.dtype == np.float64
    assert fit(integers > 0).means_.dtype == np.float64


# ---------------------------------------------------------------- shape of X


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_one_dimensional_X(X, kind):
    column = X[:, 0] if kind == "numpy" else da.from_array(X[:, 0], chunks=CHUNK_ROWS)
    with pytest.raises(ValueError, match=r"Expected 2D array, got 1D array instead") as error:
        GaussianMixture(N_COMPONENTS).fit(column)
    assert "reshape(-1, 1)" in str(error.value)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_three_dimensional_X(X, kind):
    cube = X.reshape(3, 200, N_FEATURES)
    cube = cube if kind == "numpy" else da.from_array(cube)
    with pytest.raises(ValueError, match=r"Found array with dim 3") as error:
        GaussianMixture(N_COMPONENTS).fit(cube)
    assert "(3, 200, 3)" in str(error.value)


def test_fewer_rows_than_components(X):
    message = re.escape("Expected n_samples >= n_components but got n_components = 5, "
                        "n_samples = 4")
    with pytest.raises(ValueError, match=message):
        GaussianMixture(5).fit(X[:4])


def test_a_single_row(X):
    with pytest.raises(ValueError, match=r"1 sample\(s\) .* minimum of 2"):
        GaussianMixture(1).fit(X[:1])


def test_predict_with_the_wrong_number_of_features(fitted, X):
    message = "X has 2 features, but GaussianMixture is expecting 3 features as input"
    for method in INFERENCE_METHODS:
        with pytest.raises(ValueError, match=message):
            getattr(fitted, method)(X[:, :2])


def test_predict_with_the_wrong_number_of_features_in_dask(fitted, X):
    with pytest.raises(ValueError, match="X has 2 features"):
        fitted.predict(as_dask(X[:, :2]))


# ---------------------------------------------------------------- sample_weight


def _bad_weights(n_rows):
    nan = np.ones(n_rows)
    nan[5] = np.nan
    negative = np.ones(n_rows)
    negative[5] = -1.0
    return {
        "negative": (negative, ValueError, "Negative values in data passed to `sample_weight`"),
        "too-short": (np.ones(n_rows - 1), ValueError,
                      re.escape(f"sample_weight.shape == ({n_rows - 1},), expected ({n_rows},)")),
        "too-long": (np.ones(n_rows + 1), ValueError, re.escape(f"expected ({n_rows},)")),
        "two-dimensional": (np.ones((n_rows, 1)), ValueError,
                            re.escape(f"sample_weight.shape == ({n_rows}, 1)")),
        "nan": (nan, ValueError, "sample_weight contains NaN"),
        "all-zero": (np.zeros(n_rows), ValueError, "positive sum"),
        "strings": (np.full(n_rows, "a"), TypeError, "sample_weight must hold real numbers"),
    }


@pytest.mark.parametrize("case", list(_bad_weights(10)))
def test_bad_sample_weight_numpy(X, case):
    weights, error, words = _bad_weights(len(X))[case]
    with pytest.raises(error, match=words):
        GaussianMixture(N_COMPONENTS).fit(X, sample_weight=weights)


@pytest.mark.parametrize("case", ["negative", "too-short", "nan"])
def test_bad_sample_weight_dask(client, X, case):
    weights, error, words = _bad_weights(len(X))[case]
    dask_weights = da.from_array(weights, chunks=CHUNK_ROWS)
    with pytest.raises(error, match=words):
        GaussianMixture(N_COMPONENTS).fit(as_dask(X), sample_weight=dask_weights)


# ---------------------------------------------------------------- estimator arguments


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("covariance_type", "ful", ValueError),
        ("covariance_type", None, ValueError),
        ("init_params", "kmean", ValueError),
        ("n_components", 0, ValueError),
        ("n_components", -1, ValueError),
        ("n_components", 2.5, TypeError),
        ("tol", -1e-3, ValueError),
        ("tol", np.nan, ValueError),
        ("reg_covar", -1e-6, ValueError),
        ("reg_covar", np.nan, ValueError),
        ("max_iter", -1, ValueError),
        ("n_init", 0, ValueError),
        ("verbose_interval", 0, ValueError),
        ("split_every", 1, ValueError),
        ("block_rows", 0, ValueError),
    ],
)
def test_bad_argument_names_itself_and_its_value(X, name, value, error):
    with pytest.raises(error, match=f"'{name}' parameter of GaussianMixture") as raised:
        GaussianMixture(**{"n_components": N_COMPONENTS, name: value}).fit(X)
    assert f"Got {value!r} instead" in str(raised.value)


def test_bad_option_lists_the_choices(X):
    with pytest.raises(ValueError) as raised:
        GaussianMixture(covariance_type="ful").fit(X)
    for choice in COVARIANCE_TYPES:
        assert repr(choice) in str(raised.value)


def test_bad_random_state(X):
    with pytest.raises(ValueError, match="random_state must be None, an int"):
        GaussianMixture(N_COMPONENTS, random_state="seed").fit(X)


BOUNDED = sorted(name for name, p in GAUSSIAN_MIXTURE_PARAMETERS.items() if p.low is not None)


@pytest.mark.parametrize("name", BOUNDED)
def test_every_bound_of_the_parameter_table_is_checked(name):
    low = GAUSSIAN_MIXTURE_PARAMETERS[name].low
    model = GaussianMixture(**{name: low - 1})
    with pytest.raises(ValueError, match=re.escape(f"'{name}' parameter of GaussianMixture "
                                                   f"must be")) as raised:
        check_estimator_params(model, GAUSSIAN_MIXTURE_PARAMETERS)
    assert f"[{low}, inf). Got {low - 1!r} instead." in str(raised.value)
    check_estimator_params(GaussianMixture(**{name: low}), GAUSSIAN_MIXTURE_PARAMETERS)


def test_parameter_messages_name_the_estimator_class():
    class Other:
        tol = -1.0

    with pytest.raises(ValueError, match="'tol' parameter of Other must be a float"):
        check_estimator_params(Other(), {"tol": GAUSSIAN_MIXTURE_PARAMETERS["tol"]})


# ---------------------------------------------------------------- initial parameters


def _precision_shapes(covariance_type):
    """Return ``(wrong shape, expected shape)`` of precisions_init for a covariance type."""
    k, d = N_COMPONENTS, N_FEATURES
    return {
        "full": ((k, d, d + 1), (k, d, d)),
        "tied": ((k, d, d), (d, d)),
        "diag": ((k, d + 1), (k, d)),
        "spherical": ((k, d), (k,)),
    }[covariance_type]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_badly_shaped_precisions_init(X, covariance_type):
    wrong, expected = _precision_shapes(covariance_type)
    model = GaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                            precisions_init=np.ones(wrong))
    message = re.escape(f"The parameter '{covariance_type} precision' should have the shape of "
                        f"{expected}, but got {wrong}")
    with pytest.raises(ValueError, match=message):
        model.fit(X)


def _not_positive_definite(covariance_type):
    eye = np.eye(N_FEATURES)
    indefinite = eye.copy()
    indefinite[0, 0] = -1.0
    asymmetric = eye.copy()
    asymmetric[0, 1] = 0.5
    return {
        "full": [np.stack([eye, indefinite, eye]), np.stack([eye, eye, asymmetric])],
        "tied": [indefinite, asymmetric, np.zeros((N_FEATURES, N_FEATURES))],
        "diag": [np.full((N_COMPONENTS, N_FEATURES), -1.0),
                 np.zeros((N_COMPONENTS, N_FEATURES))],
        "spherical": [np.array([1.0, -1.0, 1.0]), np.zeros(N_COMPONENTS)],
    }[covariance_type]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_not_positive_definite(X, covariance_type):
    words = ("symmetric, positive-definite" if covariance_type in ("full", "tied")
             else "positive")
    for precisions in _not_positive_definite(covariance_type):
        model = GaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                                precisions_init=precisions)
        with pytest.raises(ValueError, match=f"'{covariance_type} precision' should be {words}"):
            model.fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_nan_in_precisions_init(X, covariance_type):
    _, shape = _precision_shapes(covariance_type)
    precisions = np.ones(shape) if covariance_type in ("diag", "spherical") else None
    if precisions is None:
        precisions = np.broadcast_to(np.eye(N_FEATURES), shape).copy()
    precisions.flat[0] = np.nan
    model = GaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                            precisions_init=precisions)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(X)


@pytest.mark.parametrize("weights", [[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]])
def test_weights_init_not_summing_to_one(X, weights):
    message = re.escape(f"should be normalized, but got sum(weights) = {sum(weights):.5f}")
    with pytest.raises(ValueError, match=message):
        GaussianMixture(N_COMPONENTS, weights_init=weights).fit(X)


def test_weights_init_out_of_range(X):
    with pytest.raises(ValueError, match=re.escape("should be in the range [0, 1]")):
        GaussianMixture(N_COMPONENTS, weights_init=[1.5, -0.25, -0.25]).fit(X)


@pytest.mark.parametrize("shape", [(N_COMPONENTS, N_FEATURES - 1), (N_COMPONENTS + 1, N_FEATURES),
                                   (N_COMPONENTS * N_FEATURES,)])
def test_means_init_wrong_shape(X, shape):
    message = re.escape(f"The parameter 'means' should have the shape of "
                        f"({N_COMPONENTS}, {N_FEATURES}), but got {shape}")
    with pytest.raises(ValueError, match=message):
        GaussianMixture(N_COMPONENTS, means_init=np.zeros(shape)).fit(X)


def test_string_initial_parameters_are_a_type_error(X):
    with pytest.raises(TypeError, match="'means' must hold real numbers"):
        GaussianMixture(N_COMPONENTS, means_init=np.full((3, 3), "a")).fit(X)


# ---------------------------------------------------------------- before fit


@pytest.mark.parametrize("error", [sklearn.exceptions.NotFittedError, daskgmm.NotFittedError])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic",
                                    "aic", "sample"])
def test_not_fitted(X, method, error):
    argument = 5 if method == "sample" else X
    with pytest.raises(error, match="This GaussianMixture instance is not fitted yet"):
        getattr(GaussianMixture(N_COMPONENTS), method)(argument)


def test_failed_fit_leaves_the_model_unfitted(X):
    model = GaussianMixture(N_COMPONENTS)
    with pytest.raises(ValueError):
        model.fit(with_value(X, np.nan))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        model.predict(X)


# ---------------------------------------------------------------- Dask and Zarr inputs


def test_dask_chunked_along_features_is_rechunked_to_rows(client, X):
    by_feature = da.from_array(X, chunks=(CHUNK_ROWS, 1))
    ours = fit(by_feature)
    # NumPy input starts from scikit-learn's own initialisation, Dask input from the scalable
    # one: the reference is the same rows chunked by rows.
    reference = fit(as_dask(X))
    assert_same_model(ours, reference, rtol=1e-10, atol=1e-12)
    assert_array_equal(np.asarray(ours.predict(by_feature)), reference.predict(X))
    assert_allclose(ours.score(by_feature), reference.score(X), rtol=1e-12)


def _zarr_store(X, path):
    array = zarr.create_array(store=str(path), shape=X.shape, chunks=(CHUNK_ROWS, X.shape[1]),
                              dtype=X.dtype)
    array[...] = X
    return str(path)


@pytest.fixture(params=["zarr-array", "zarr-path"])
def zarr_X(request, X, tmp_path):
    path = _zarr_store(X, tmp_path / "X.zarr")
    return zarr.open(path, mode="r") if request.param == "zarr-array" else path


def test_zarr_input_gives_the_dask_model(client, X, zarr_X):
    ours = fit(zarr_X)
    reference = fit(as_dask(X))
    assert_same_model(ours, reference, rtol=1e-10, atol=1e-12)
    assert_array_equal(np.asarray(ours.predict(zarr_X)), reference.predict(X))
    assert_allclose(np.asarray(ours.predict_proba(zarr_X)), reference.predict_proba(X),
                    rtol=1e-10, atol=1e-12)
    assert_allclose(ours.score(zarr_X), reference.score(X), rtol=1e-12)


def test_zarr_input_to_a_numpy_model(client, fitted, X, zarr_X):
    assert_array_equal(np.asarray(fitted.predict(zarr_X)), fitted.predict(X))


def test_missing_zarr_path(tmp_path):
    path = tmp_path / "nowhere.zarr"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(path)))):
        GaussianMixture(N_COMPONENTS).fit(str(path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        GaussianMixture(N_COMPONENTS).fit(path)


def test_zarr_group_path_asks_for_an_array(X, tmp_path):
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("data", data=X)
    with pytest.raises(ValueError, match="is a Zarr group, not an array") as error:
        GaussianMixture(N_COMPONENTS).fit(str(tmp_path / "group.zarr"))
    assert "data" in str(error.value)
