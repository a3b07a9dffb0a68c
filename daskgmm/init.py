"""Initial responsibilities without gathering the data: k-means (k-means|| then Lloyd), k-means++,
random and random_from_data.

Each method is a few passes of the engine over the blocks; the per-block work is a plain NumPy
function here. Randomness in a block comes from a generator seeded by ``(seed, pass, block)``, so
results depend on the seed and the chunking, never on scheduling.
"""

import importlib.util
from dataclasses import dataclass

import numpy as np

from .engine import map_reduce, take_rows
from .kernels import as_float_block, count_nonfinite_rows, raise_if_nonfinite, responsibility_block
from .lowest import lowest, merge_lowest

_PARALLEL_ROUNDS = 5
_LLOYD_MAX_ITER = 300
_LLOYD_TOL = 1e-4


@dataclass
class RowSample:
    """The rows with the smallest random keys seen so far: a weighted sample without replacement.

    Keys are ``E / weight`` with ``E`` standard exponential (Efraimidis and Spirakis), so keeping
    the ``keep`` smallest keys draws rows with probability proportional to their weights.
    """

    keys: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    keep: int
    n_nonfinite: int = 0

    def __add__(self, other):
        keys, payload = merge_lowest(
            (self.keys, np.column_stack([self.rows, self.points])),
            (other.keys, np.column_stack([other.rows, other.points])),
            self.keep,
        )
        return RowSample(keys, payload[:, 0].astype(np.int64), payload[:, 1:], self.keep,
                         self.n_nonfinite + other.n_nonfinite)


@dataclass
class ClusterSums:
    """Per-centre weighted counts and sums of the rows nearest to each centre, and the cost."""

    counts: np.ndarray
    sums: np.ndarray
    inertia: float

    def __add__(self, other):
        return ClusterSums(self.counts + other.counts, self.sums + other.sums,
                           self.inertia + other.inertia)


def _block_rng(seed, position):
    return np.random.default_rng([seed, position.index])


def _squared_distances(block, centers):
    """Return squared distances from every row to every centre, shape (n, n_centers)."""
    reference = centers.mean(axis=0)
    centred = block - reference
    shifted = centers - reference
    distances = np.einsum("nd,nd->n", centred, centred)[:, None] - 2.0 * centred @ shifted.T
    distances += np.einsum("kd,kd->k", shifted, shifted)
    return np.maximum(distances, 0.0)


def _row_weights_or_ones(weights, n_rows):
    return np.ones(n_rows) if weights is None else np.asarray(weights, dtype=np.float64)


def _sample_block(block, weights, position, seed, centers, keep):
    """Draw the block's ``keep`` rows with the smallest keys ``E / (w * d^2)``."""
    block = as_float_block(block).astype(np.float64, copy=False)
    mass = _row_weights_or_ones(weights, len(block))
    if centers is not None and len(centers):
        mass = mass * _squared_distances(block, centers).min(axis=1)
    exponentials = _block_rng(seed, position).standard_exponential(len(block))
    with np.errstate(divide="ignore"):
        keys = np.where(mass > 0, exponentials / np.where(mass > 0, mass, 1.0), np.inf)
    chosen = lowest(keys, keep)
    chosen = chosen[np.isfinite(keys[chosen])]
    return RowSample(keys[chosen], position.start + chosen, block[chosen], keep,
                     count_nonfinite_rows(block))


def sample_rows(source, keep, rng, centers=None):
    """Draw ``keep`` distinct rows, with probability proportional to ``w`` (times ``d^2`` to the
    nearest of ``centers`` when given). Returns ``(row_indices, points)``."""
    seed = int(rng.integers(2**63))
    sample = map_reduce(source, _sample_block, seed, centers, keep)
    raise_if_nonfinite(sample.n_nonfinite)
    return sample.rows, sample.points


def _label_sums(points, labels, weights, n_centers):
    """Return the weighted sum of the points of every label, shape (n_centers, n_features)."""
    columns = [np.bincount(labels, weights=weights * column, minlength=n_centers)
               for column in points.T]
    return np.column_stack(columns)


def _nearest_block(block, weights, position, centers):
    block = as_float_block(block).astype(np.float64, copy=False)
    mass = _row_weights_or_ones(weights, len(block))
    distances = _squared_distances(block, centers)
    labels = distances.argmin(axis=1)
    n_centers = len(centers)
    counts = np.bincount(labels, weights=mass, minlength=n_centers)
    sums = _label_sums(block, labels, mass, n_centers)
    inertia = float(np.dot(mass, distances[np.arange(len(block)), labels]))
    return ClusterSums(counts, sums, inertia)


def _weighted_kmeans_plusplus(points, weights, n_clusters, rng):
    """Greedy k-means++ on a small in-memory weighted set of candidate points.

    Each new centre is the best (lowest weighted cost) of ``2 + log(n_clusters)`` candidates
    drawn by weighted squared distance, as scikit-learn's ``kmeans_plusplus`` does.
    """
    n_trials = 2 + int(np.log(n_clusters))
    chosen = [rng.choice(len(points), p=weights / weights.sum())]
    closest = _squared_distances(points, points[chosen]).min(axis=1)
    for _ in range(1, n_clusters):
        mass = weights * closest
        probabilities = mass / mass.sum() if mass.sum() > 0 else weights / weights.sum()
        trials = rng.choice(len(points), size=n_trials, p=probabilities)
        trial_closest = np.minimum(closest[None, :], _squared_distances(points, points[trials]).T)
        best = int(np.argmin(trial_closest @ weights))
        chosen.append(trials[best])
        closest = trial_closest[best]
    return points[chosen].copy()


def _lloyd_step(sums, centers):
    """Return new centres; a centre that lost all its rows keeps its place."""
    new_centers = centers.copy()
    filled = sums.counts > 0
    new_centers[filled] = sums.sums[filled] / sums.counts[filled, None]
    return new_centers


def _local_lloyd(points, weights, centers, n_iter=100):
    for _ in range(n_iter):
        labels = _squared_distances(points, centers).argmin(axis=1)
        counts = np.bincount(labels, weights=weights, minlength=len(centers))
        sums = _label_sums(points, labels, weights, len(centers))
        new_centers = _lloyd_step(ClusterSums(counts, sums, 0.0), centers)
        if np.allclose(new_centers, centers):
            return new_centers
        centers = new_centers
    return centers


def kmeans_parallel_centers(source, n_clusters, rng):
    """Seed ``n_clusters`` centres by k-means|| (scalable k-means++): a few passes, each drawing
    ``2 * n_clusters`` rows by ``w d^2``, then k-means++ on the weighted candidates."""
    _, candidates = sample_rows(source, 1, rng)
    for _ in range(_PARALLEL_ROUNDS):
        _, drawn = sample_rows(source, 2 * n_clusters, rng, centers=candidates)
        candidates = np.concatenate([candidates, drawn])
    candidates = np.unique(candidates, axis=0)
    if len(candidates) <= n_clusters:
        return _pad_centers(candidates, n_clusters)
    weights = map_reduce(source, _nearest_block, candidates).counts
    weights = np.where(weights > 0, weights, 1e-12)
    centers = _weighted_kmeans_plusplus(candidates, weights, n_clusters, rng)
    return _local_lloyd(candidates, weights, centers)


def _pad_centers(candidates, n_clusters):
    """Repeat distinct rows when the data hold fewer distinct rows than clusters."""
    repeats = -(-n_clusters // len(candidates))
    return np.tile(candidates, (repeats, 1))[:n_clusters]


def kmeans_centers(source, n_clusters, rng):
    """Return k-means centres: k-means|| seeding, then Lloyd passes until the centres settle.

    Lloyd stops when the centres move (in total squared distance) less than ``1e-4`` times the
    mean squared distance per feature of the rows to their first centres.
    """
    centers = kmeans_parallel_centers(source, n_clusters, rng)
    tolerance = None
    for _ in range(_LLOYD_MAX_ITER):
        sums = map_reduce(source, _nearest_block, centers)
        if tolerance is None:
            spread = sums.inertia / max(sums.counts.sum(), 1e-300) / source.n_features
            tolerance = _LLOYD_TOL * spread
        new_centers = _lloyd_step(sums, centers)
        shift = np.sum((new_centers - centers) ** 2)
        centers = new_centers
        if shift <= tolerance:
            break
    return centers


def kmeans_plusplus_rows(source, n_clusters, rng):
    """Return the row indices chosen by k-means++ (one pass per centre)."""
    rows, centers = sample_rows(source, 1, rng)
    for _ in range(1, n_clusters):
        row, point = sample_rows(source, 1, rng, centers=centers)
        if len(row) == 0:
            row, point = sample_rows(source, 1, rng)
        rows = np.concatenate([rows, row])
        centers = np.concatenate([centers, point])
    return rows


@dataclass(frozen=True)
class NearestCenterResponsibilities:
    """One-hot responsibilities: each row belongs to its nearest centre."""

    centers: np.ndarray

    def __call__(self, block, position):
        labels = _squared_distances(block, self.centers).argmin(axis=1)
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
        resp = _block_rng(self.seed, position).uniform(size=(len(block), self.n_components))
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
