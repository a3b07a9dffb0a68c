"""Initial responsibilities without gathering the data: kmeans, k-means++, random and
random_from_data, and the initial sufficient statistics under them.

For in-memory NumPy input the draws are scikit-learn's own when it is installed, so a fit
reproduces scikit-learn's initialisation. Dask input (or NumPy input without scikit-learn for
the k-means methods) is initialised by passes over the blocks (:mod:`daskgmm.kmeans`). The
passes each method makes over Dask data, the statistics pass included, for ``K`` components:

* ``kmeans``: at most 3. One pass draws a bounded weighted sample, k-means runs in memory on
  it (8 restarts, the lowest inertia kept), then 1 or 2 full Lloyd passes, each of which is
  also the statistics pass: the second only if the first moved the centres.
* ``k-means++``: ``K + 2``. ``K + 1`` passes of greedy k-means++, then the statistics.
* ``random_from_data``: 2. One pass draws the rows, one takes the statistics.
* ``random``: 1, the statistics (and row 0 is read as the point to take moments about).
"""

import importlib.util

import numpy as np

from .engine import DEFAULT_SPLIT_EVERY, BlockPosition, map_reduce, take_rows
from .kmeans import kmeans_plusplus_rows, kmeans_stats, sample_rows
from .responsibilities import (
    ChosenRowResponsibilities,
    GivenResponsibilities,
    NearestCenterResponsibilities,
    RandomResponsibilities,
    initial_stats_block,
)


def _sklearn_kmeans_labels(data, weights, n_components, random_state):
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
    return model.fit(data, sample_weight=weights).labels_


def _sklearn_kmeans_plusplus_rows(data, weights, n_components, random_state):
    from sklearn.cluster import kmeans_plusplus

    _, rows = kmeans_plusplus(np.asarray(data, dtype=np.float64), n_components,
                              sample_weight=weights, random_state=random_state)
    return rows


def _chosen_rows(source, rows):
    rows = np.asarray(rows, dtype=np.int64)
    weights = np.ones(len(rows)) if source.weights is None else source.weights[rows]
    return ChosenRowResponsibilities(rows, take_rows(source, rows),
                                     np.asarray(weights, dtype=np.float64))


def _in_memory_responsibilities(source, n_components, init_params, random_state):
    """scikit-learn's own initial responsibilities, drawn from the same RandomState stream.

    Returns None where that needs scikit-learn and it is not installed.
    """
    data, weights, n_rows = source.data, source.weights, source.n_rows
    if init_params == "random":
        resp = random_state.uniform(size=(n_rows, n_components))
        return GivenResponsibilities(resp / resp.sum(axis=1, keepdims=True), n_components)
    if init_params == "random_from_data":
        return _chosen_rows(source, random_state.choice(n_rows, size=n_components,
                                                        replace=False))
    if importlib.util.find_spec("sklearn") is None:
        return None
    if init_params == "kmeans":
        labels = _sklearn_kmeans_labels(data, weights, n_components, random_state)
        return GivenResponsibilities(labels, n_components)
    return _chosen_rows(source, _sklearn_kmeans_plusplus_rows(data, weights, n_components,
                                                              random_state))


def _scalable_responsibilities(source, n_components, init_params, rng):
    """Initial responsibilities other than k-means' by passes over the blocks."""
    if init_params == "random":
        return RandomResponsibilities(int(rng.integers(2**63)), n_components)
    if init_params == "k-means++":
        sample = kmeans_plusplus_rows(source, n_components, rng)
    else:
        sample = sample_rows(source, n_components, rng)
    return ChosenRowResponsibilities(sample.rows, sample.points, sample.weights)


def _start(source, n_components, init_params, random_state, covariance_type, split_every):
    """The initial responsibilities, and their statistics if choosing them computed those
    (k-means by passes: its last Lloyd pass), else None."""
    n_components = int(n_components)  # a NumPy integer would overflow in sizes derived from it
    if not source.is_dask:
        chosen = _in_memory_responsibilities(source, n_components, init_params, random_state)
        if chosen is not None:
            return chosen, None
    rng = np.random.default_rng(random_state.randint(0, 2**32 - 1, size=4))
    if init_params == "kmeans":
        return kmeans_stats(source, n_components, covariance_type, rng, split_every)
    return _scalable_responsibilities(source, n_components, init_params, rng), None


def initial_responsibilities(source, n_components, init_params, random_state):
    """Choose the initial responsibilities.

    In-memory NumPy data get exactly scikit-learn's initialisation (same ``RandomState``
    stream, scikit-learn's KMeans and kmeans_plusplus when installed), so a fit reproduces
    scikit-learn's model for the same ``random_state``. Dask data, or NumPy data without
    scikit-learn for the k-means methods, use the passes of :mod:`daskgmm.kmeans`.
    """
    return _start(source, n_components, init_params, random_state, "spherical",
                  DEFAULT_SPLIT_EVERY)[0]


def _reference_point(source, responsibilities):
    """A point inside the data to take the initial moments about."""
    if isinstance(responsibilities, NearestCenterResponsibilities):
        return responsibilities.centers.mean(axis=0)
    if isinstance(responsibilities, ChosenRowResponsibilities):
        return responsibilities.points.mean(axis=0)
    return take_rows(source, [0])[0]


def initial_stats(source, n_components, init_params, covariance_type, random_state, split_every):
    """Sufficient statistics under the initial responsibilities (see the module's docstring
    for the passes this takes).

    ``random_state`` is a ``numpy.random.RandomState`` (scikit-learn's random stream).
    """
    responsibilities, stats = _start(source, n_components, init_params, random_state,
                                     covariance_type, split_every)
    if stats is None:
        reference = _reference_point(source, responsibilities)
        stats = map_reduce(source, initial_stats_block, responsibilities, reference,
                           covariance_type, split_every=split_every)
        if isinstance(responsibilities, ChosenRowResponsibilities):
            _take_exact_row_moments(stats, responsibilities, reference, covariance_type)
    return stats


def _take_exact_row_moments(stats, responsibilities, reference, covariance_type):
    """Replace the components' moments by those of their chosen rows in float64.

    A component of one row has covariance ``reg_covar`` alone: moments summed in the data's
    float32 would leave it a rounding error (1e-7 of ``|x - reference|^2``) that can be
    larger, and negative. The pooled scatter of 'tied' stays the pass's, over all rows.
    """
    points, weights = responsibilities.points, responsibilities.weights
    own_rows = ChosenRowResponsibilities(np.arange(len(points)), points, weights)
    exact = initial_stats_block(points, weights, BlockPosition(0, 0), own_rows, reference,
                                covariance_type)
    stats.counts, stats.first = exact.counts, exact.first
    if covariance_type != "tied":
        stats.second = exact.second
