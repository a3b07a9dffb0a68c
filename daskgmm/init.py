"""Initial responsibilities without gathering the data: kmeans, k-means++, random and
random_from_data, and the first pass's sufficient statistics under them.

The k-means steps are in :mod:`daskgmm.kmeans`. For in-memory NumPy input the draws are
scikit-learn's own when it is installed, so a fit reproduces scikit-learn's initialisation.
"""

import importlib.util
from dataclasses import dataclass

import numpy as np

from .engine import map_reduce, take_rows
from .kernels import as_float_block, responsibility_block
from .kmeans import block_rng, kmeans_centers, kmeans_plusplus_rows, sample_rows, squared_distances


@dataclass(frozen=True)
class NearestCenterResponsibilities:
    """One-hot responsibilities: each row belongs to its nearest centre."""

    centers: np.ndarray

    def __call__(self, block, position):
        labels = squared_distances(block, self.centers).argmin(axis=1)
        return np.eye(len(self.centers))[labels]


@dataclass(frozen=True)
class ChosenRowResponsibilities:
    """Responsibility 1 for component ``k`` at the ``k``-th chosen row, 0 elsewhere."""

    rows: np.ndarray

    def __call__(self, block, position):
        resp = np.zeros((len(block), len(self.rows)))
        local = self.rows - position.start
        inside = (local >= 0) & (local < len(block))
        resp[local[inside], np.flatnonzero(inside)] = 1.0
        return resp


@dataclass(frozen=True)
class RandomResponsibilities:
    """Uniform random responsibilities normalised per row, seeded per block."""

    seed: int
    n_components: int

    def __call__(self, block, position):
        resp = block_rng(self.seed, position).uniform(size=(len(block), self.n_components))
        return resp / resp.sum(axis=1, keepdims=True)


def _responsibility_block(block, weights, position, responsibilities, reference, covariance_type):
    block = as_float_block(block)
    resp = responsibilities(block.astype(np.float64, copy=False), position)
    return responsibility_block(block, weights, resp, reference, covariance_type)


@dataclass(frozen=True)
class GivenResponsibilities:
    """Responsibilities computed up front for in-memory data: labels (one-hot) or a matrix."""

    values: np.ndarray
    n_components: int

    def __call__(self, block, position):
        rows = self.values[position.start : position.start + len(block)]
        if rows.ndim == 1:
            return np.eye(self.n_components)[rows]
        return rows


def _sklearn_kmeans_labels(data, weights, n_components, random_state):
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
    return model.fit(data, sample_weight=weights).labels_


def _sklearn_kmeans_plusplus_rows(data, weights, n_components, random_state):
    from sklearn.cluster import kmeans_plusplus

    _, rows = kmeans_plusplus(np.asarray(data, dtype=np.float64), n_components,
                              sample_weight=weights, random_state=random_state)
    return rows


def _in_memory_responsibilities(source, n_components, init_params, random_state):
    """scikit-learn's own initial responsibilities, drawn from the same RandomState stream.

    Returns None where that needs scikit-learn and it is not installed.
    """
    data, weights, n_rows = source.data, source.weights, source.n_rows
    if init_params == "random":
        resp = random_state.uniform(size=(n_rows, n_components))
        return GivenResponsibilities(resp / resp.sum(axis=1, keepdims=True), n_components)
    if init_params == "random_from_data":
        rows = random_state.choice(n_rows, size=n_components, replace=False)
        return ChosenRowResponsibilities(np.asarray(rows, dtype=np.int64))
    if importlib.util.find_spec("sklearn") is None:
        return None
    if init_params == "kmeans":
        labels = _sklearn_kmeans_labels(data, weights, n_components, random_state)
        return GivenResponsibilities(labels, n_components)
    rows = _sklearn_kmeans_plusplus_rows(data, weights, n_components, random_state)
    return ChosenRowResponsibilities(np.asarray(rows, dtype=np.int64))


def _scalable_responsibilities(source, n_components, init_params, rng):
    """Initial responsibilities by a few passes over the blocks, never gathering the data."""
    if init_params == "kmeans":
        return NearestCenterResponsibilities(kmeans_centers(source, n_components, rng))
    if init_params == "random":
        return RandomResponsibilities(int(rng.integers(2**63)), n_components)
    if init_params == "k-means++":
        rows = kmeans_plusplus_rows(source, n_components, rng)
    else:
        rows, _ = sample_rows(source, n_components, rng)
    return ChosenRowResponsibilities(np.asarray(rows, dtype=np.int64))


def initial_responsibilities(source, n_components, init_params, random_state):
    """Choose the initial responsibilities.

    In-memory NumPy data get exactly scikit-learn's initialisation (same ``RandomState``
    stream, scikit-learn's KMeans and kmeans_plusplus when installed), so a fit reproduces
    scikit-learn's model for the same ``random_state``. Dask data, or NumPy data without
    scikit-learn for the k-means methods, use the scalable passes of this module.
    """
    if not source.is_dask:
        chosen = _in_memory_responsibilities(source, n_components, init_params, random_state)
        if chosen is not None:
            return chosen
    rng = np.random.default_rng(random_state.randint(0, 2**32 - 1, size=4))
    return _scalable_responsibilities(source, n_components, init_params, rng)


def _reference_point(source, responsibilities):
    """A point inside the data to take the initial moments about."""
    if isinstance(responsibilities, NearestCenterResponsibilities):
        return responsibilities.centers.mean(axis=0)
    if isinstance(responsibilities, ChosenRowResponsibilities):
        return take_rows(source, responsibilities.rows).mean(axis=0)
    return take_rows(source, [0])[0]


def initial_stats(source, n_components, init_params, covariance_type, random_state, split_every):
    """One pass: sufficient statistics under the initial responsibilities.

    ``random_state`` is a ``numpy.random.RandomState`` (scikit-learn's random stream).
    """
    responsibilities = initial_responsibilities(source, n_components, init_params, random_state)
    reference = _reference_point(source, responsibilities)
    return map_reduce(source, _responsibility_block, responsibilities, reference,
                      covariance_type, split_every=split_every)
