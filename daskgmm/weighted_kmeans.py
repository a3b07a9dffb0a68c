"""k-means in memory on a small weighted set of points: greedy k-means++ seeding, Lloyd, restarts.

Pure NumPy, float64. The points are a bounded sample of the data (:mod:`daskgmm.kmeans`),
so several restarts cost less than one pass over the data; the lowest inertia wins.
"""

from dataclasses import dataclass

import numpy as np

from .distances import CenterTerms, center_scores, nearest_one_hot, row_norms

# As scikit-learn's KMeans: at most this many Lloyd iterations, and the tolerance on the
# centres' total squared shift relative to the mean variance of a feature.
LLOYD_MAX_ITER = 300
LLOYD_TOL = 1e-4


def tolerance(points, weights):
    """The centres' total squared shift below which Lloyd stops: ``LLOYD_TOL`` times the
    weighted mean variance of a feature of ``points``."""
    mean = weights @ points / weights.sum()
    variance = weights @ (points - mean) ** 2 / weights.sum()
    return LLOYD_TOL * float(variance.mean())


def greedy_kmeans_plusplus(points, weights, n_clusters, rng):
    """Seed ``n_clusters`` centres by greedy k-means++, as scikit-learn's ``kmeans_plusplus``.

    The first centre is drawn by weight; each next one is the best (lowest weighted cost) of
    ``2 + int(log(n_clusters))`` candidates drawn by weight times squared distance to the
    nearest centre so far.
    """
    prepared = _Points.of(points, weights)
    return _greedy_kmeans_plusplus(prepared, n_clusters, rng) + prepared.reference


@dataclass(frozen=True)
class _Points:
    """Weighted points about their weighted mean, feature-major, with their squared norms."""

    centred: np.ndarray
    squared_norms: np.ndarray
    weights: np.ndarray
    reference: np.ndarray

    @classmethod
    def of(cls, points, weights):
        reference = weights @ points / weights.sum()
        centred = np.ascontiguousarray((points - reference).T)
        return cls(centred, row_norms(centred), weights, reference)

    def distances_to(self, centers):
        """Squared distances (n_centers, n) to ``centers`` given about the reference."""
        terms = CenterTerms.of(centers, np.float64, reference=np.zeros(len(self.centred)))
        return np.maximum(center_scores(self.centred, terms) + self.squared_norms, 0.0)


def _greedy_kmeans_plusplus(points, n_clusters, rng):
    """:func:`greedy_kmeans_plusplus` of prepared points: centres about their reference."""
    n_trials = 2 + int(np.log(n_clusters))
    weights = points.weights
    chosen = [_draw(weights, 1, rng)[0]]
    closest = points.distances_to(points.centred[:, chosen].T)[0]
    for _ in range(1, n_clusters):
        mass = weights * closest
        candidates = _draw(mass if mass.sum() > 0 else weights, n_trials, rng)
        trial_closest = np.minimum(points.distances_to(points.centred[:, candidates].T), closest)
        best = int(np.argmin(trial_closest @ weights))
        chosen.append(candidates[best])
        closest = trial_closest[best]
    return points.centred[:, chosen].T.copy()


def _draw(mass, size, rng):
    """``size`` indices drawn with replacement with probability proportional to ``mass``."""
    cumulative = np.cumsum(mass)
    drawn = np.searchsorted(cumulative, rng.uniform(size=size) * cumulative[-1], side="right")
    return np.minimum(drawn, len(mass) - 1)


def _assign(points, centers):
    """The weighted count and sum of the points nearest to each centre, and the inertia
    ``sum w min_k |x - c_k|^2``."""
    terms = CenterTerms.of(centers, np.float64, reference=np.zeros(len(centers[0])))
    scores = center_scores(points.centred, terms)
    one_hot = np.empty_like(scores)
    nearest_one_hot(scores, one_hot)
    inertia = float(np.maximum(scores.min(axis=0) + points.squared_norms, 0.0) @ points.weights)
    one_hot *= points.weights
    return one_hot.sum(axis=1), one_hot @ points.centred.T, inertia


def moved_centers(counts, sums, centers):
    """The centres moved to the means ``sums / counts`` of their rows; a centre that lost all
    its rows keeps its place."""
    moved = centers.copy()
    filled = counts > 0
    moved[filled] = sums[filled] / counts[filled, None]
    return moved


def _lloyd(points, centers, tol):
    """Lloyd iterations until the centres' total squared shift is at most ``tol``; returns
    ``(centers, inertia)``, the inertia of the returned centres."""
    for _ in range(LLOYD_MAX_ITER):
        counts, sums, _ = _assign(points, centers)
        moved = moved_centers(counts, sums, centers)
        shift = float(np.sum((moved - centers) ** 2))
        centers = moved
        if shift <= tol:
            break
    return centers, _assign(points, centers)[2]


def weighted_kmeans(points, weights, n_clusters, rng, n_restarts):
    """k-means of weighted ``points``: the lowest-inertia result of ``n_restarts`` runs of
    greedy k-means++ seeding then Lloyd. Distances are taken about the points' weighted mean.

    Points with fewer distinct values than ``n_clusters`` give repeated centres.
    """
    prepared = _Points.of(points, weights)
    tol = tolerance(points, weights)
    best, best_inertia = None, np.inf
    for _ in range(n_restarts):
        seeds = _greedy_kmeans_plusplus(prepared, n_clusters, rng)
        centers, inertia = _lloyd(prepared, seeds, tol)
        if best is None or inertia < best_inertia:
            best, best_inertia = centers, inertia
    return best + prepared.reference
