"""daskgmm against scikit-learn: from the same initial parameters, the same model.

scikit-learn's GaussianMixture is the oracle. Both estimators start from identical
``weights_init``/``means_init``/``precisions_init`` and run with ``tol=0``, so both perform exactly
``max_iter`` EM iterations and any difference comes from the arithmetic alone.

daskgmm's input comes in 11 row blocks (NumPy blocks, Dask chunks or Zarr chunks) merged with
``split_every=2``, so every pass merges its partial statistics through several levels of the
tree: on the module's cluster, in combine tasks.
"""

from contextlib import nullcontext

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import (
    COVARIANCE_TYPES, FITTED_ARRAYS, assert_same_model, initial_parameters, make_blobs,
    write_zarr)
from daskgmm import GaussianMixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_COMPONENTS = 3
# make_blobs draws 2003 rows: eleven chunks of 190 rows, the last one ragged (103 rows).
CHUNK_ROWS = 190
N_CHUNKS = 11
SPLIT_EVERY = 2
INPUT_KINDS = ("numpy", "dask", "dask-cluster", "zarr-cluster")


@pytest.fixture(scope="module")
def X():
    """Overlapping components, so that EM still moves the parameters after 20 iterations."""
    return make_blobs(scale=2.0)


@pytest.fixture(params=INPUT_KINDS)
def input_kind(request):
    """The kind of input under test, run on its scheduler: threads, or the LocalCluster."""
    if request.param.endswith("-cluster"):
        request.getfixturevalue("client")
        with dask.config.set(scheduler="distributed"):
            yield request.param
    else:
        with dask.config.set(scheduler="threads"):
            yield request.param


def as_input(array, kind, chunk_rows=CHUNK_ROWS, folder=None):
    """Return ``array`` as NumPy, as a Dask array chunked by rows (all columns per chunk), or
    as the path of a Zarr store in ``folder`` written in those chunks.

    The Dask array's chunks are made by tasks (copies of NumPy slices), as when read from
    storage: each then runs in a block task of its own, and combine tasks merge their results
    on a cluster (chunks already in the graph would be run a thread's share to a task).
    """
    if kind == "numpy":
        return array
    chunked = da.from_array(array, chunks=(chunk_rows,) + (-1,) * (array.ndim - 1))
    if kind.startswith("zarr"):
        return str(write_zarr(folder / "X.zarr", chunked))
    return chunked.map_blocks(np.copy)


def fit_both(ours_X, reference_X, covariance_type, max_iter, init, sample_weight=None,
             callback=None):
    """Fit daskgmm on ``ours_X`` and scikit-learn on ``reference_X`` from the same start.

    daskgmm cuts NumPy input into blocks of ``CHUNK_ROWS`` rows and merges with
    ``SPLIT_EVERY``.
    """
    options = {"covariance_type": covariance_type, "max_iter": max_iter, "tol": 0.0, **init}
    ours = GaussianMixture(N_COMPONENTS, split_every=SPLIT_EVERY, block_rows=CHUNK_ROWS,
                           **options)
    ours.fit(ours_X, sample_weight=sample_weight, callback=callback)
    reference = SklearnGaussianMixture(N_COMPONENTS, **options).fit(reference_X)
    return ours, reference


def bounds_recorder(bounds):
    """A fit callback appending the lower bound of every EM iteration to ``bounds``."""
    def record(state):
        if state.current is not None:
            bounds.append(state.current.lower_bounds[-1])
    return record


def combine_tasks(task_stream):
    """The combine tasks (tree levels above the blocks) among a task stream's EM passes."""
    return [task for task in task_stream if "daskgmm-pass" in str(task["key"])
            and isinstance(task["key"], tuple) and task["key"][1] > 0]


def inference(model, data):
    """Return predict, predict_proba and score_samples of ``data``, computed.

    For Dask and Zarr input the results must be Dask arrays with the input's row chunks.
    """
    results = {
        "predict": model.predict(data),
        "predict_proba": model.predict_proba(data),
        "score_samples": model.score_samples(data),
    }
    if not isinstance(data, np.ndarray):
        for name, result in results.items():
            assert isinstance(result, da.Array), name
            assert len(result.chunks[0]) == N_CHUNKS, name
        (results,) = dask.compute(results)
    return results


def assert_same_inference(ours, reference, data, X):
    results = inference(ours, data)
    assert_array_equal(results["predict"], reference.predict(X))
    assert_allclose(results["predict_proba"], reference.predict_proba(X), rtol=0, atol=1e-8)
    assert_allclose(results["score_samples"], reference.score_samples(X), rtol=1e-7)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn(X, covariance_type, input_kind, request, tmp_path):
    # Twenty iterations; the lower bounds of all of them are compared, the first included.
    max_iter = 20
    init = initial_parameters(X, covariance_type)
    data = as_input(X, input_kind, folder=tmp_path)
    client = request.getfixturevalue("client") if input_kind.endswith("-cluster") else None
    bounds = []

    with get_task_stream(client) if client else nullcontext() as cluster_tasks:
        ours, reference = fit_both(data, X, covariance_type, max_iter, init,
                                   callback=bounds_recorder(bounds))

    # Seen: up to 1e-13 of an array's largest entry after 20 iterations, in every layout.
    assert_same_model(ours, reference, rtol=1e-10, atol=1e-12)
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-12)
    assert_same_inference(ours, reference, data, X)
    # The callback saw every iteration's bound, and EM never lowered it.
    assert bounds == list(ours.lower_bounds_) and len(bounds) == max_iter
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))
    if client:  # every pass merged some of its partial statistics on the cluster
        assert len(combine_tasks(cluster_tasks.data)) >= max_iter


@pytest.mark.parametrize("weight_kind", ["numpy", "dask-numpy-weights", "dask", "dask-rechunked"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weight_matches_sklearn_on_repeated_rows(X, covariance_type, weight_kind, threads):
    """Integer weights act as row repeats; lower_bound_ is the weighted mean log-likelihood."""
    weights = np.random.default_rng(1).integers(0, 4, size=len(X))
    repeated = np.repeat(X, weights, axis=0)
    init = initial_parameters(repeated, covariance_type)
    data = as_input(X, "numpy" if weight_kind == "numpy" else "dask")
    sample_weight = {
        "numpy": weights,
        "dask-numpy-weights": weights,
        "dask": as_input(weights, "dask"),
        "dask-rechunked": as_input(weights, "dask", chunk_rows=600),
    }[weight_kind]

    ours, reference = fit_both(data, repeated, covariance_type, 20, init, sample_weight)

    assert_same_model(ours, reference, rtol=1e-7)
    assert_same_inference(ours, reference, data, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(X, covariance_type):
    # 100 iterations from daskgmm's own start, NumPy blocks merged in the tree: the bound stays
    # monotone until it settles (test_matches_sklearn checks every input kind for 20).
    model = GaussianMixture(
        N_COMPONENTS, covariance_type=covariance_type, max_iter=100, tol=0.0, random_state=0,
        split_every=SPLIT_EVERY, block_rows=CHUNK_ROWS).fit(X)

    bounds = np.asarray(model.lower_bounds_)
    assert len(bounds) == model.n_iter_ == 100
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))
    assert bounds[-1] == model.lower_bound_


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_input_gives_float32_model_close_to_float64(X, covariance_type, kind, threads):
    init = initial_parameters(X, covariance_type)
    X32 = X.astype(np.float32)

    ours, reference = fit_both(as_input(X32, kind), X, covariance_type, 20, init)

    for name in FITTED_ARRAYS:
        expected = getattr(reference, name)
        assert getattr(ours, name).dtype == np.float32, name
        # float32 rounds relative to an array's largest entries, not to entries near zero.
        assert_allclose(getattr(ours, name), expected, rtol=1e-4,
                        atol=1e-5 * np.abs(expected).max(), err_msg=name)
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-4)


def pixels():
    """Three-channel 'image' values: blobs scaled into 0..255 and rounded, as uint8."""
    blobs = make_blobs(scale=2.0)
    low, high = blobs.min(axis=0), blobs.max(axis=0)
    return np.round(255 * (blobs - low) / (high - low)).astype(np.uint8)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_uint8_input_fits_like_its_float64_copy(covariance_type, kind, threads):
    X8 = pixels()
    options = {"covariance_type": covariance_type, "max_iter": 20, "tol": 0.0, "random_state": 0}

    ours = GaussianMixture(N_COMPONENTS, **options).fit(as_input(X8, kind))
    expected = GaussianMixture(N_COMPONENTS, **options).fit(as_input(X8.astype(np.float64), kind))

    for name in FITTED_ARRAYS:
        assert getattr(ours, name).dtype == np.float64, name
        assert_allclose(getattr(ours, name), getattr(expected, name), rtol=1e-10, err_msg=name)
    assert_allclose(ours.lower_bound_, expected.lower_bound_, rtol=1e-10)
    scores = np.asarray(ours.score_samples(as_input(X8, kind)))
    assert_allclose(scores, np.asarray(expected.score_samples(X8.astype(np.float64))), rtol=1e-10)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_origin_keep_their_precision(X, covariance_type, kind, threads):
    """Rows near 1e6 fit like the centred rows shifted back: no cancellation in the moments."""
    offset = 1e6
    init = initial_parameters(X, covariance_type)
    shifted_init = {**init, "means_init": init["means_init"] + offset}
    options = {"covariance_type": covariance_type, "max_iter": 20, "tol": 0.0}

    ours = GaussianMixture(N_COMPONENTS, **options, **shifted_init).fit(as_input(X + offset, kind))
    reference = SklearnGaussianMixture(N_COMPONENTS, **options, **init).fit(X)

    assert_allclose(ours.means_ - offset, reference.means_, rtol=1e-6, atol=1e-6)
    for name in ("weights_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert_allclose(getattr(ours, name), getattr(reference, name), rtol=1e-6, atol=1e-9,
                        err_msg=name)
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-6)
    proba = np.asarray(ours.predict_proba(as_input(X + offset, kind)))
    assert_allclose(proba, reference.predict_proba(X), atol=1e-6)
