"""daskgmm.init: the initial responsibilities of kmeans, k-means++, random and random_from_data,
and the passes and block kernels behind them (daskgmm.kmeans, daskgmm.seeding,
daskgmm.responsibilities, daskgmm.weighted_kmeans, daskgmm.distances).

In-memory NumPy input starts exactly where scikit-learn starts (the same RandomState stream and
scikit-learn's own KMeans and kmeans_plusplus); Dask input starts from a few passes over the
chunks (a weighted sample and k-means in memory then full Lloyd passes, greedy k-means++ by
passes, seeded random draws). Either way the responsibilities are valid (in [0, 1]; a row's sum
to one, or one chosen row per component) and the same ``random_state`` gives the same start, on
any scheduler. The block kernels are checked against naive NumPy references on blocks of
several slices, in float64 and float32.
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
from daskgmm.distances import CenterTerms, centred_rows, nearest, nearest_one_hot, squared_distances
from daskgmm.engine import BlockPosition, dask_row_data, map_reduce, numpy_row_data
from daskgmm.init import initial_responsibilities, initial_stats
from daskgmm.kmeans import (
    MAX_FULL_LLOYD_PASSES,
    kmeans_plusplus_rows,
    kmeans_stats,
    sample_kmeans_centers,
    sample_rows,
    weighted_sample,
)
from daskgmm.options import INIT_METHODS
from daskgmm.responsibilities import (
    ChosenRowResponsibilities,
    NearestCenterResponsibilities,
    RandomResponsibilities,
    initial_stats_block,
)
from daskgmm.seeding import sample_block, trials_block
from daskgmm.slices import slice_length
from daskgmm.weighted_kmeans import greedy_kmeans_plusplus, weighted_kmeans

N_COMPONENTS = 3
N_ROWS = 1201
CHUNK_ROWS = 150
# Methods whose responsibilities are one chosen row per component (zero elsewhere).
CHOSEN_ROWS = ("k-means++", "random_from_data")
DTYPES = (np.float64, np.float32)
# float32 blocks are worked on in float32, their sums in float64.
RTOL = {np.float64: 1e-10, np.float32: 1e-4}


@pytest.fixture(scope="module")
def X():
    """Three blobs, stacked in order (see ``blob_labels``), far enough apart for k-means."""
    return make_blobs(n_samples=N_ROWS, n_components=N_COMPONENTS, scale=10.0)


def blob_labels(n_rows=N_ROWS):
    sizes = np.full(N_COMPONENTS, n_rows // N_COMPONENTS)
    sizes[: n_rows % N_COMPONENTS] += 1
    return np.repeat(np.arange(N_COMPONENTS), sizes)


def source_of(X, kind, weights=None, chunk_rows=CHUNK_ROWS):
    """The engine's row data: NumPy in blocks of ``chunk_rows`` rows, or a Dask array."""
    if kind == "numpy":
        return numpy_row_data(X, weights, block_rows=chunk_rows)
    dask_weights = None if weights is None else da.from_array(weights, chunks=chunk_rows)
    return dask_row_data(da.from_array(X, chunks=(chunk_rows, -1)), dask_weights)


def block_responsibilities(responsibilities, block, position, start=0):
    """A block's responsibilities (n, K) as the statistics pass fills them (about a point
    off the block's mean, as the pass's reference)."""
    reference = block.mean(axis=0) + 0.5
    out = np.empty((responsibilities.n_components, len(block)), dtype=block.dtype)
    responsibilities.fill(centred_rows(block, reference), reference, position, start, out)
    return out.T


def all_responsibilities(source, X, responsibilities):
    """The responsibilities of every row, block by block as a pass computes them."""
    return np.concatenate([
        block_responsibilities(responsibilities, X[p.start : p.start + CHUNK_ROWS], p)
        for p in source.positions()])


def initial_model(X, init_params, random_state=0, covariance_type="full"):
    """The fitted parameters after initialisation alone (``max_iter=0``)."""
    return GaussianMixture(N_COMPONENTS, init_params=init_params, max_iter=0,
                           covariance_type=covariance_type, random_state=random_state).fit(X)


def naive_squared_distances(rows, centers):
    return ((np.asarray(rows, np.float64)[:, None, :] - centers[None]) ** 2).sum(axis=2)


def several_slices(n_features, n_centers, seed=0, n_blobs=4):
    """Rows (float32 values as float64) spanning two whole slices of the kernels and part of a
    third, from ``n_blobs`` blobs far from the origin (where a distance taken about the origin
    would lose its precision), and ``n_centers`` centres among them."""
    n_rows = 2 * slice_length(n_features + n_centers, 10**9) + 1001
    X = make_blobs(n_samples=n_rows, n_features=n_features, n_components=n_blobs, seed=seed)
    X = (X + 1000.0).astype(np.float32).astype(np.float64)
    X = X[np.random.default_rng(seed).permutation(n_rows)]
    return X, X[:n_centers] + 0.1


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
        assert_array_equal(responsibilities.points, X[responsibilities.rows])
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
    assert_allclose(stats.total_weight, weights.sum(), rtol=1e-12)
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


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", CHOSEN_ROWS)
def test_a_component_of_one_float32_row_has_the_covariance_reg_covar(init_params, kind, threads):
    # Its moments summed in float32 would leave a rounding error of 1e-7 |x - reference|^2,
    # here larger than reg_covar and of either sign (Cholesky failed for 3 seeds of 5). What
    # is left is float32's count padding (10 eps), as in scikit-learn (seen: 6e-11 in both).
    X = make_blobs(n_samples=20000, n_components=4, scale=5.0).astype(np.float32)
    data = X if kind == "numpy" else da.from_array(X, chunks=(3000, -1))
    for seed in range(5):
        model = GaussianMixture(4, init_params=init_params, max_iter=0,
                                random_state=seed).fit(data)
        assert_allclose(model.covariances_, np.broadcast_to(1e-6 * np.eye(3), (4, 3, 3)),
                        atol=1e-9)


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


# ---------------------------------------------------------------- k-means on Dask input


def test_k_means_of_the_sample_finds_every_blob(X, threads):
    centers, _ = sample_kmeans_centers(source_of(X, "dask"), N_COMPONENTS,
                                       np.random.default_rng(0))

    assert centers.shape == (N_COMPONENTS, X.shape[1])
    nearest_center = naive_squared_distances(X, centers).argmin(axis=1)
    assert adjusted_rand_score(blob_labels(), nearest_center) == 1.0


def test_k_means_ends_at_the_means_of_its_clusters(X, threads):
    # Lloyd's fixed point: every centre is the mean of the rows nearest to it.
    responsibilities, stats = kmeans_stats(source_of(X, "dask"), N_COMPONENTS, "full",
                                           np.random.default_rng(0), split_every=2)

    centers = responsibilities.centers
    nearest_center = naive_squared_distances(X, centers).argmin(axis=1)
    means = np.stack([X[nearest_center == k].mean(axis=0) for k in range(N_COMPONENTS)])
    assert_allclose(centers, means, rtol=1e-4, atol=1e-4)
    assert_allclose(stats.counts, np.bincount(nearest_center), rtol=1e-12)


def test_weighted_k_means_finds_the_lowest_inertia_of_its_restarts():
    # Four blobs, two of them close: one seeding may put two centres in one blob; the
    # restarts keep the best.
    points = make_blobs(n_samples=4000, n_components=4, scale=3.0, seed=3)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, size=len(points))

    def inertia(centers):
        return weights @ naive_squared_distances(points, centers).min(axis=1)

    one = [inertia(weighted_kmeans(points, weights, 4, np.random.default_rng(s), 1))
           for s in range(6)]
    best = inertia(weighted_kmeans(points, weights, 4, np.random.default_rng(0), 6))
    assert best <= min(one) * (1 + 1e-9)


def test_greedy_k_means_plus_plus_seeds_one_centre_in_each_blob():
    points = make_blobs(n_samples=3000, n_components=5, scale=20.0, seed=4)
    for seed in range(5):
        seeds = greedy_kmeans_plusplus(points, np.ones(len(points)), 5,
                                       np.random.default_rng(seed))
        blob = naive_squared_distances(seeds, np.stack(
            [part.mean(axis=0) for part in np.split(points, 5)])).argmin(axis=1)
        assert sorted(blob) == list(range(5))


# ---------------------------------------------------------------- weighted row samples


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_sampled_rows_are_distinct_rows_of_positive_weight(X, kind, threads):
    weights = np.where(np.arange(N_ROWS) % 2 == 0, 1.0, 0.0)
    source = source_of(X, kind, weights)

    sample = sample_rows(source, 20, np.random.default_rng(0))

    assert len(sample.rows) == 20 and len(set(sample.rows.tolist())) == 20
    assert np.all(sample.rows % 2 == 0)  # a row of zero weight is never drawn
    assert_array_equal(sample.points, X[sample.rows])
    assert np.all(np.diff(sample.keys) >= 0)
    assert sample.total_weight == weights.sum()


def test_a_sample_without_weights_is_the_lowest_keys_of_all_rows(threads):
    # Each block sends back only its keys under a bound (about `keep` rows in all): the
    # sample is still the `keep` lowest keys of all rows, as with no bound.
    X = np.random.default_rng(0).normal(size=(20000, 2))
    source = source_of(X, "dask", chunk_rows=2500)
    for keep in (1, 3, 500):
        rng = np.random.default_rng(keep)
        seed = int(np.random.default_rng(keep).integers(2**63))
        sample = sample_rows(source, keep, rng)
        unbounded = map_reduce(source, sample_block, seed, keep, None)
        assert_array_equal(sample.rows, unbounded.rows)
        assert_array_equal(sample.keys, unbounded.keys)


def test_rows_at_the_centres_are_never_drawn_again(X, threads):
    # k-means++ draws by squared distance to the centres so far: zero at a centre itself.
    source = source_of(X, "dask")
    centers = X[[0, 500, 1000]]

    sample = sample_rows(source, 50, np.random.default_rng(0), centers=centers)

    assert len(sample.rows) == 50 and not set(sample.rows.tolist()) & {0, 500, 1000}


@pytest.mark.parametrize("weighted", [False, True])
def test_a_row_is_drawn_in_proportion_to_its_weight(weighted, threads):
    # Rows 0-2 in one block, row 3 in another: unweighted, each is drawn 1 time in 4;
    # weighted, in proportion.
    X = np.arange(8.0).reshape(4, 2)
    weights = np.array([1.0, 2.0, 3.0, 4.0]) if weighted else None
    source = source_of(X, "numpy", weights, chunk_rows=3)
    rng = np.random.default_rng(0)

    drawn = [sample_rows(source, 1, rng).rows[0] for _ in range(4000)]

    expected = weights / weights.sum() if weighted else np.full(4, 0.25)
    assert_allclose(np.bincount(drawn, minlength=4) / 4000, expected, atol=0.025)


def test_a_weighted_sample_stands_for_all_rows(threads):
    # A row of weight 1e5 among 40,000 rows of weight 1 to 2: drawn, it stands for itself
    # against the others, whose weights add up to theirs. The weights are relative.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40001, 2))
    weights = np.append(rng.uniform(1.0, 2.0, size=40000), 1e5)
    source = source_of(X, "dask", weights, chunk_rows=5000)

    points, sample_weights = weighted_sample(source, 2000, np.random.default_rng(1))

    heavy = np.flatnonzero((points == X[-1]).all(axis=1))
    assert len(heavy) == 1 and sample_weights[heavy[0]] == sample_weights.max() == 1.0
    others = np.delete(sample_weights, heavy).sum() / sample_weights[heavy[0]]
    assert others == pytest.approx(weights[:-1].sum() / 1e5, rel=0.03)


@pytest.mark.parametrize("scale", [1.0, 1e-320])
def test_a_sample_of_every_row_keeps_their_weights(X, scale, threads):
    weights = (np.arange(N_ROWS) % 3 + 1.0) * scale
    points, sample_weights = weighted_sample(source_of(X, "dask", weights), 5000,
                                             np.random.default_rng(1))

    order = np.lexsort(points.T)
    assert_array_equal(points[order], X[np.lexsort(X.T)])
    assert_allclose(sample_weights[order], weights[np.lexsort(X.T)] / weights.max(),
                    rtol=1e-15)


@pytest.mark.parametrize("centers", [None, np.zeros((1, 2))])
def test_weights_draw_as_their_ratios(centers, threads):
    # Equal weights draw what no weights draw; keys are logarithms, so E / w cannot overflow
    # for w = 1e-320 (no row would be drawn).
    X = np.random.default_rng(0).normal(size=(3000, 2))
    ratios = np.arange(3000) % 3 + 1.0
    for weights in ([None, np.full(3000, 0.3)], [ratios, ratios * 1e-320]):
        drawn = [sample_rows(source_of(X, "dask", w), 100, np.random.default_rng(2), centers)
                 for w in weights]
        assert_array_equal(drawn[0].rows, drawn[1].rows)


# ---------------------------------------------------------------- block kernels


@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_distances_and_nearest_centres(dtype):
    X, centers = several_slices(3, 5)
    terms = CenterTerms.of(centers, dtype)

    distances = squared_distances(X.astype(dtype), terms)
    labels, closest = nearest(distances)

    expected = naive_squared_distances(X, centers)
    assert distances.dtype == dtype
    # About the centres' mean: the error is relative to the distances, not to |x|^2 = 3e6.
    assert_allclose(distances.T, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * expected.max())
    close_calls = np.sort(expected, axis=1)[:, 1] - expected.min(axis=1) > 1e-3
    assert_array_equal(labels[close_calls], expected.argmin(axis=1)[close_calls])
    assert_allclose(closest, expected.min(axis=1), rtol=RTOL[dtype], atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("ties", [False, True])
def test_nearest_breaks_ties_to_the_first_centre(ties):
    distances = np.array([[1.0, 2.0, 0.5], [1.5, 1.0, 0.7], [3.0, 1.2, 0.6]])
    if ties:
        distances[[1, 2], [0, 1]] = [1.0, 1.0]
        distances[:, 2] = 0.5
    expected = [0, 1, 0] if ties else [0, 1, 0]
    labels, closest = nearest(distances)
    one_hot = np.empty((3, 3), dtype=np.float32)
    nearest_one_hot(distances, one_hot)

    assert_array_equal(labels, expected)
    assert_array_equal(closest, distances.min(axis=0))
    assert_array_equal(one_hot, np.eye(3)[:, expected])


def naive_stats(X, weights, resp, reference):
    """Counts, first and 'full' second moments of their definitions."""
    weighted = resp * weights[:, None]
    centred = X - reference
    return (weighted.sum(axis=0), weighted.T @ centred,
            np.einsum("nk,nd,ne->kde", weighted, centred, centred))


def kinds_of_responsibilities(X, centers):
    rows = np.array([5, len(X) // 2, len(X) - 1])
    return {"nearest": NearestCenterResponsibilities(centers),
            "random": RandomResponsibilities(7, 3),
            "chosen": ChosenRowResponsibilities(rows, X[rows], np.ones(3))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["nearest", "random", "chosen"])
def test_initial_stats_block_gives_the_naive_statistics(kind, dtype):
    X, centers = several_slices(3, 3)
    weights = np.random.default_rng(1).integers(0, 17, size=len(X)) / 8.0
    responsibilities = kinds_of_responsibilities(X, centers)[kind]
    position = BlockPosition(2, 0)
    reference = centers.mean(axis=0) + 0.25

    stats = initial_stats_block(X.astype(dtype), weights.astype(dtype), position,
                                responsibilities, reference, "full")

    resp = block_responsibilities(responsibilities, X, position)
    if kind == "nearest":
        assert_array_equal(resp.argmax(axis=1), naive_squared_distances(X, centers).argmin(1))
    counts, first, second = naive_stats(X, weights, resp, reference)
    for name, value, expected in [("counts", stats.counts, counts), ("first", stats.first, first),
                                  ("second", stats.second, second)]:
        assert value.dtype == np.float64
        assert_allclose(value, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(expected).max(),
                        err_msg=name)
    assert stats.total_weight == weights.sum() and stats.n_nonfinite == 0


def test_random_responsibilities_do_not_depend_on_the_slices():
    X, _ = several_slices(3, 3)
    responsibilities = RandomResponsibilities(3, 4)
    position = BlockPosition(5, 1000)
    whole = block_responsibilities(responsibilities, X, position)

    part = block_responsibilities(responsibilities, X[300:1000], position, start=300)

    assert_array_equal(part, whole[300:1000])
    assert_allclose(whole.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_initial_stats_block_counts_rows_that_are_not_finite(covariance_type):
    X, centers = several_slices(3, 3)
    X[[7, len(X) - 2], 1] = [np.nan, np.inf]
    stats = initial_stats_block(X, None, BlockPosition(0, 0),
                                NearestCenterResponsibilities(centers), centers.mean(axis=0),
                                covariance_type)
    assert stats.n_nonfinite == 2


@pytest.mark.parametrize("centers_given", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_block_draws_by_mass_and_counts_bad_rows(centers_given, weighted, dtype):
    X, centers = several_slices(3, 4)
    X[len(X) - 3] = np.nan
    weights = np.where(np.arange(len(X)) % 3 == 0, 0.0, 1.5) if weighted else None
    position = BlockPosition(1, 10**6)

    sample = sample_block(X.astype(dtype), weights, position, 11, 300,
                          centers if centers_given else None)

    local = sample.rows - position.start
    assert len(set(local.tolist())) == 300 and np.all(np.diff(sample.keys) >= 0)
    assert_array_equal(sample.points, X.astype(dtype)[local])
    assert sample.n_nonfinite == 1
    if weighted:
        assert np.all(local % 3 != 0) and np.all(sample.weights == 1.5)
        assert sample.total_weight == np.nansum(weights)
    else:
        assert sample.total_weight == len(X)


@pytest.mark.parametrize("dtype", DTYPES)
def test_trials_block_costs_and_draws_each_trial(dtype):
    X, centers = several_slices(3, 5)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, size=len(X))
    chosen, trials = centers[:2], centers[2:]

    result = trials_block(X.astype(dtype), weights, BlockPosition(0, 0), 5, chosen, trials, 40,
                          1.0)

    closest = naive_squared_distances(X, chosen).min(axis=1)
    mass = np.minimum(closest[None], naive_squared_distances(X, trials).T)
    assert_allclose(result.costs, mass @ weights, rtol=RTOL[dtype])
    for t, sample in enumerate(result.samples):
        assert len(set(sample.rows.tolist())) == 40
        assert np.all(mass[t, sample.rows] > 0)
    # A trial's draws favour the rows its candidate leaves far from every centre.
    drawn_mass = [mass[t, s.rows].mean() for t, s in enumerate(result.samples)]
    assert np.all(np.array(drawn_mass) > mass.mean(axis=1))


# ---------------------------------------------------------------- k-means++ on Dask input


def test_k_means_plus_plus_seeds_one_row_in_each_blob(threads):
    # Blobs of very unequal sizes: a centre drawn by D^2 alone often lands twice in the big
    # one; the greedy trials do not.
    parts = [make_blobs(n_samples=n, n_components=1, seed=s, scale=30.0) + 40.0 * s
             for s, n in enumerate([6000, 300, 200, 100])]
    X = np.concatenate(parts)
    labels = np.repeat(np.arange(4), [len(part) for part in parts])
    source = source_of(X, "dask", chunk_rows=1000)
    for seed in range(5):
        chosen = kmeans_plusplus_rows(source, 4, np.random.default_rng(seed))
        assert sorted(labels[chosen.rows]) == [0, 1, 2, 3]
        assert_array_equal(chosen.points, X[chosen.rows])


def test_k_means_plus_plus_with_fewer_distinct_rows_than_components(threads):
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 300, axis=0)
    chosen = kmeans_plusplus_rows(source_of(X, "dask"), 4, np.random.default_rng(0))
    assert len(set(chosen.rows.tolist())) == 4
    assert len({tuple(p) for p in chosen.points}) == 2


# ---------------------------------------------------------------- passes over the data


def is_pass(graph):
    """Whether a computed graph is a pass (its keys are named ``daskgmm-pass-...``)."""
    names = {key[0] if isinstance(key, tuple) else key for key in graph}
    return any(str(name).startswith("daskgmm-pass-") for name in names)


def counted_passes(data, init_params, caplog):
    """The passes an initialisation makes (graphs computed), checked against its log line."""
    graphs = []
    with Callback(start=graphs.append), caplog.at_level(logging.INFO, logger="daskgmm"):
        GaussianMixture(N_COMPONENTS, init_params=init_params, max_iter=0,
                        random_state=0).fit(data)
    passes = sum(map(is_pass, graphs))
    logged = [record.getMessage() for record in caplog.records
              if record.getMessage().startswith(f"initialization {init_params}:")]
    assert logged == [f"initialization {init_params}: {passes} passes over the data "
                      + logged[0].rsplit(" ", 1)[1]]
    return passes


# The passes each method makes on Dask input (daskgmm.init's docstring), the statistics pass
# included. kmeans: its sample holds all 1201 rows, so k-means in memory ends at Lloyd's fixed
# point and the first full pass moves no centre.
PASSES = {"kmeans": 2, "random": 1, "random_from_data": 2, "k-means++": N_COMPONENTS + 2}


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_the_log_counts_the_initialisations_passes(X, init_params, threads, caplog):
    data = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    assert counted_passes(data, init_params, caplog) == PASSES[init_params]


def test_k_means_makes_at_most_its_passes_on_a_sample_of_the_rows(threads, caplog):
    # 60,000 rows of overlapping blobs: the sample is a quarter of them, so the full Lloyd
    # passes move the centres, and stop at the most.
    X = make_blobs(n_samples=60000, n_components=N_COMPONENTS, scale=1.0)
    data = da.from_array(X, chunks=(7000, -1))
    assert 2 <= counted_passes(data, "kmeans", caplog) <= 1 + MAX_FULL_LLOYD_PASSES
