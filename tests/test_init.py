"""daskgmm.init: the initial responsibilities of kmeans, k-means++, random and random_from_data.

In-memory NumPy input starts exactly where scikit-learn starts (the same RandomState stream and
scikit-learn's own KMeans and kmeans_plusplus); Dask input starts from a few passes over the
chunks (k-means|| then Lloyd, k-means++ by passes, seeded random draws). Either way the
responsibilities are valid (in [0, 1]; a row's sum to one, or one chosen row per component) and
the same ``random_state`` gives the same start, on any scheduler.
"""

import logging

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import COVARIANCE_TYPES, make_blobs
from daskgmm import GaussianMixture
from daskgmm.engine import dask_row_data, numpy_row_data
from daskgmm.init import initial_responsibilities, initial_stats
from daskgmm.kmeans import kmeans_centers, kmeans_parallel_centers, sample_rows
from daskgmm.options import INIT_METHODS

N_COMPONENTS = 3
N_ROWS = 1201
CHUNK_ROWS = 150
# Methods whose responsibilities are one chosen row per component (zero elsewhere).
CHOSEN_ROWS = ("k-means++", "random_from_data")


@pytest.fixture(scope="module")
def X():
    """Three blobs, stacked in order (see ``blob_labels``), far enough apart for k-means."""
    return make_blobs(n_samples=N_ROWS, n_components=N_COMPONENTS, scale=10.0)


def blob_labels():
    sizes = np.full(N_COMPONENTS, N_ROWS // N_COMPONENTS)
    sizes[: N_ROWS % N_COMPONENTS] += 1
    return np.repeat(np.arange(N_COMPONENTS), sizes)


def source_of(X, kind, weights=None):
    """The engine's row data: NumPy in blocks of ``CHUNK_ROWS`` rows, or a Dask array."""
    if kind == "numpy":
        return numpy_row_data(X, weights, block_rows=CHUNK_ROWS)
    dask_weights = None if weights is None else da.from_array(weights, chunks=CHUNK_ROWS)
    return dask_row_data(da.from_array(X, chunks=(CHUNK_ROWS, -1)), dask_weights)


def all_responsibilities(source, X, responsibilities):
    """The responsibilities of every row, block by block as a pass computes them."""
    blocks = []
    for position in source.positions():
        block = X[position.start: position.start + CHUNK_ROWS]
        blocks.append(responsibilities(block, position))
    return np.concatenate(blocks)


def initial_model(X, init_params, random_state=0, covariance_type="full"):
    """The fitted parameters after initialisation alone (``max_iter=0``)."""
    return GaussianMixture(N_COMPONENTS, init_params=init_params, max_iter=0,
                           covariance_type=covariance_type, random_state=random_state).fit(X)


# ---------------------------------------------------------------- valid responsibilities


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_initial_responsibilities_are_valid(X, init_params, kind, threads):
    source = source_of(X, kind)
    responsibilities = initial_responsibilities(source, N_COMPONENTS, init_params,
                                                np.random.RandomState(0))

    resp = all_responsibilities(source, X, responsibilities)

    assert resp.shape == (N_ROWS, N_COMPONENTS)
    assert np.all((resp >= 0) & (resp <= 1))
    if init_params in CHOSEN_ROWS:
        rows, components = np.nonzero(resp)
        assert_array_equal(np.sort(components), np.arange(N_COMPONENTS))
        assert len(set(rows)) == N_COMPONENTS and np.all(resp[rows, components] == 1.0)
    else:
        assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    if init_params == "kmeans":
        assert set(np.unique(resp)) == {0.0, 1.0}
        assert adjusted_rand_score(blob_labels(), resp.argmax(axis=1)) == 1.0


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_initial_statistics_weigh_every_row_once(X, init_params, kind, threads):
    weights = np.random.default_rng(0).uniform(0.5, 2.0, size=N_ROWS)
    source = source_of(X, kind, weights)

    stats = initial_stats(source, N_COMPONENTS, init_params, "full", np.random.RandomState(0),
                          split_every=2)

    if init_params in CHOSEN_ROWS:  # each component's weight is its chosen row's
        assert np.all(np.isin(stats.counts, weights))
    else:
        assert_allclose(stats.counts.sum(), weights.sum(), rtol=1e-12)
    assert np.all(stats.counts > 0)
    assert stats.n_nonfinite == 0


# ---------------------------------------------------------------- NumPy: scikit-learn's start


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_numpy_input_starts_where_scikit_learn_starts(X, init_params, covariance_type):
    ours = initial_model(X, init_params, covariance_type=covariance_type)
    expected = SklearnGaussianMixture(N_COMPONENTS, init_params=init_params, max_iter=0,
                                      covariance_type=covariance_type, random_state=0).fit(X)

    # A component started on one chosen row has the covariance reg_covar: daskgmm's, from
    # moments about a reference point, carries their rounding (1e-16 of |x|^2), which its
    # precision (1 / reg_covar) magnifies; the covariances themselves agree to it.
    atol = 1e-14 * np.abs(X).max() ** 2
    for name in ("weights_", "means_", "covariances_"):
        assert_allclose(getattr(ours, name), getattr(expected, name), rtol=1e-10, atol=atol,
                        err_msg=name)


# ---------------------------------------------------------------- the same random_state


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_the_same_random_state_gives_the_same_start(X, init_params, kind, threads):
    data = X if kind == "numpy" else da.from_array(X, chunks=(CHUNK_ROWS, -1))

    first, again = (initial_model(data, init_params) for _ in range(2))
    other = initial_model(data, init_params, random_state=1)

    for name in ("weights_", "means_", "covariances_"):
        assert_array_equal(getattr(first, name), getattr(again, name), err_msg=name)
    if init_params != "kmeans":  # k-means on separated blobs ends at the same centres
        assert not np.array_equal(first.means_, other.means_)


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_a_dask_start_does_not_depend_on_the_scheduler(client, X, init_params):
    data = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    with dask.config.set(scheduler="distributed"):
        on_cluster = initial_model(data, init_params)
    with dask.config.set(scheduler="threads"):
        on_threads = initial_model(data, init_params)

    for name in ("weights_", "means_", "covariances_"):
        assert_array_equal(getattr(on_cluster, name), getattr(on_threads, name), err_msg=name)


# ---------------------------------------------------------------- k-means|| on Dask input


def test_k_means_parallel_seeds_one_centre_in_each_blob(X, threads):
    source = source_of(X, "dask")

    centers = kmeans_parallel_centers(source, N_COMPONENTS, np.random.default_rng(0))

    assert centers.shape == (N_COMPONENTS, X.shape[1])
    nearest = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert adjusted_rand_score(blob_labels(), nearest) == 1.0


def test_k_means_ends_at_the_means_of_its_clusters(X, threads):
    # Lloyd's fixed point: every centre is the mean of the rows nearest to it.
    source = source_of(X, "dask")

    centers = kmeans_centers(source, N_COMPONENTS, np.random.default_rng(0))

    nearest = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
    means = np.stack([X[nearest == k].mean(axis=0) for k in range(N_COMPONENTS)])
    assert_allclose(centers, means, rtol=1e-4, atol=1e-4)
    assert adjusted_rand_score(blob_labels(), nearest) == 1.0


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_sampled_rows_are_distinct_rows_of_positive_weight(X, kind, threads):
    weights = np.where(np.arange(N_ROWS) % 2 == 0, 1.0, 0.0)
    source = source_of(X, kind, weights)

    rows, points = sample_rows(source, 20, np.random.default_rng(0))

    assert len(rows) == 20 and len(set(rows.tolist())) == 20
    assert np.all(rows % 2 == 0)  # a row of zero weight is never drawn
    assert_array_equal(points, X[rows])


def test_rows_at_the_centres_are_never_drawn_again(X, threads):
    # k-means|| draws by squared distance to the centres so far: zero at a centre itself.
    source = source_of(X, "dask")
    centers = X[[0, 500, 1000]]

    rows, _ = sample_rows(source, 50, np.random.default_rng(0), centers=centers)

    assert len(rows) == 50 and not set(rows.tolist()) & {0, 500, 1000}


# ---------------------------------------------------------------- passes over the data


def is_pass(graph):
    """Whether a computed graph is a pass (its keys are named ``daskgmm-pass-...``)."""
    names = {key[0] if isinstance(key, tuple) else key for key in graph}
    return any(str(name).startswith("daskgmm-pass-") for name in names)


# The passes each method makes on Dask input, the last one the statistics under the start;
# kmeans adds its Lloyd passes (at least one) to k-means||'s 1 + 5 rounds + 1 weighing.
PASSES = {"random": 1, "random_from_data": 2, "k-means++": N_COMPONENTS + 1}


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_the_log_counts_the_initialisations_passes(X, init_params, threads, caplog):
    data = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    graphs = []
    with Callback(start=graphs.append), caplog.at_level(logging.INFO, logger="daskgmm"):
        initial_model(data, init_params)
    passes = sum(map(is_pass, graphs))

    logged = [record.getMessage() for record in caplog.records
              if record.getMessage().startswith(f"initialization {init_params}:")]
    assert logged == [f"initialization {init_params}: {passes} passes over the data "
                      + logged[0].rsplit(" ", 1)[1]]
    if init_params == "kmeans":
        assert passes >= 9
    else:
        assert passes == PASSES[init_params]
