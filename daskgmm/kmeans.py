"""k-means over blocks without gathering the data: weighted row samples, k-means|| seeding,
Lloyd passes and k-means++ rows.

Each step is a pass of the engine over the blocks; the per-block work is a plain NumPy function.
Randomness in a block comes from a generator seeded by ``(seed, block)``, so results depend on
the seed and the chunking, never on scheduling.
"""

from dataclasses import dataclass

import numpy as np

from .engine import map_reduce
from .kernels import as_float_block, count_nonfinite_rows, raise_if_nonfinite
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


def block_rng(seed, position):
    """The random generator of one block of a pass: seeded by the pass's seed and the block."""
    return np.random.default_rng([seed, position.index])


def squared_distances(block, centers):
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
        mass = mass * squared_distances(block, centers).min(axis=1)
    exponentials = block_rng(seed, position).standard_exponential(len(block))
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
    distances = squared_distances(block, centers)
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
    closest = squared_distances(points, points[chosen]).min(axis=1)
    for _ in range(1, n_clusters):
        mass = weights * closest
        probabilities = mass / mass.sum() if mass.sum() > 0 else weights / weights.sum()
        trials = rng.choice(len(points), size=n_trials, p=probabilities)
        trial_closest = np.minimum(closest[None, :], squared_distances(points, points[trials]).T)
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
        labels = squared_distances(points, centers).argmin(axis=1)
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
