"""k-means and k-means++ over blocks without gathering the data: the passes and what the client
does between them.

Each step is a pass of the engine over the blocks with a block function of
:mod:`daskgmm.seeding` or :mod:`daskgmm.responsibilities`. The passes, for ``K`` components:

* :func:`kmeans_stats`, at most ``1 + MAX_FULL_LLOYD_PASSES`` (3): one pass draws a bounded
  weighted sample of rows; k-means runs in memory on it (:mod:`daskgmm.weighted_kmeans`,
  ``_RESTARTS`` seedings); then full Lloyd passes, each one the initial statistics under the
  current centres, until the centres settle (at most ``MAX_FULL_LLOYD_PASSES``).
* :func:`kmeans_plusplus_rows`, ``K + 1``: scikit-learn's greedy k-means++, whose
  ``2 + int(log K)`` candidates for a centre are drawn in one pass and weighed in the next,
  which also draws the candidates for the next centre, for each candidate.
* :func:`sample_rows`, 1.
"""

import numpy as np

from .engine import map_reduce
from .kernels import raise_if_nonfinite
from .responsibilities import NearestCenterResponsibilities, initial_stats_block
from .seeding import RowSample, sample_block, trials_block
from .weighted_kmeans import moved_centers, tolerance, weighted_kmeans

MAX_FULL_LLOYD_PASSES = 2
# The k-means sample: this many rows per cluster, at least _MIN_SAMPLE_ROWS rows, and at most
# _SAMPLE_VALUES values (16 MiB of float64), since every block sends back up to that many.
_SAMPLE_ROWS_PER_CLUSTER = 256
_MIN_SAMPLE_ROWS = 1 << 14
_SAMPLE_VALUES = 1 << 21
# In-memory k-means runs from this many seedings, keeping the lowest inertia.
_RESTARTS = 8


def _seed(rng):
    return int(rng.integers(2**63))


def sample_rows(source, keep, rng, centers=None):
    """Draw ``keep`` distinct rows with probability proportional to ``w`` (times ``D^2``, the
    squared distance to the nearest of ``centers``, when given), in one pass.

    Returns the :class:`daskgmm.seeding.RowSample`: row indices, values and weights, in the
    order drawn (lowest key first). Raises the ValueError of :func:`raise_if_nonfinite` for
    NaN or infinity in X.
    """
    seed = _seed(rng)
    bound = np.inf
    if source.weights is None and centers is None:
        bound = _uniform_key_bound(keep, source.n_rows)
    sample = map_reduce(source, sample_block, seed, keep, centers, bound)
    if len(sample.rows) < min(keep, source.n_rows) and bound < np.inf:
        sample = map_reduce(source, sample_block, seed, keep, centers)
    raise_if_nonfinite(sample.n_nonfinite)
    return sample


def _uniform_key_bound(keep, n_rows):
    """A key that the ``keep`` lowest of ``n_rows`` standard exponential keys stay under, but
    for a chance below 1e-20: every block then sends back about ``keep`` rows in all, not
    ``keep`` each.

    The keys under ``t`` are about Poisson of mean ``n (1 - exp(-t))``; that mean is set to
    ``keep + 10 sqrt(keep) + 40``. Should fewer keys fall under it, the pass runs again
    without a bound.
    """
    share = (keep + 10.0 * np.sqrt(keep) + 40.0) / n_rows
    return float(-np.log1p(-share)) if share < 1.0 else np.inf


def sample_size(n_clusters, n_features):
    """How many rows the k-means sample draws."""
    rows = max(_MIN_SAMPLE_ROWS, _SAMPLE_ROWS_PER_CLUSTER * n_clusters)
    return max(min(rows, _SAMPLE_VALUES // n_features), 2 * n_clusters)


def weighted_sample(source, size, rng):
    """Draw ``size`` rows by weight in one pass; return their values and the weights (relative:
    the largest is 1) that make the sample stand for all rows.

    With row weights, a row of weight ``w`` is drawn (one of the ``size`` lowest keys
    ``log(E / w)``) with probability ``1 - exp(-w t)``, ``t = exp(k)`` for ``k`` the next key
    after the sample: its weight in the sample is ``w`` divided by that (Cohen and Kaplan's
    bottom-k estimate), here in units of ``1 / t``, so rows of large weight count for what
    they weigh, and a sample of all rows keeps their own weights. Without, every drawn row
    weighs 1.
    """
    sample = sample_rows(source, size + 1, rng)
    points, weights = sample.points[:size], sample.weights[:size]
    if len(sample.keys) > size and source.weights is not None:
        with np.errstate(divide="ignore"):
            drawn = np.exp(np.log(weights) + sample.keys[size])
        weights = np.where(drawn > 0, drawn / -np.expm1(-drawn), 1.0)
    return points, weights / weights.max()


def _distinct_centers(points, n_clusters):
    """Repeat distinct points when the sample holds fewer of them than clusters."""
    distinct = np.unique(points, axis=0)
    if len(distinct) >= n_clusters:
        return None
    return np.tile(distinct, (-(-n_clusters // len(distinct)), 1))[:n_clusters]


def sample_kmeans_centers(source, n_clusters, rng):
    """k-means centres of a weighted sample of the rows (one pass), and the Lloyd tolerance."""
    points, weights = weighted_sample(source, sample_size(n_clusters, source.n_features), rng)
    centers = _distinct_centers(points, n_clusters)
    if centers is None:
        centers = weighted_kmeans(points, weights, n_clusters, rng, _RESTARTS)
    return centers, tolerance(points, weights)


def kmeans_stats(source, n_clusters, covariance_type, rng, split_every):
    """k-means of all rows, and the initial statistics under its labels.

    Returns ``(responsibilities, stats)``: the nearest-centre responsibilities of the last
    centres and the sufficient statistics under them. Each full pass gives both the statistics
    and the next Lloyd centres (the means of the rows nearest to each centre); the passes stop
    once the centres move (in total squared distance) at most the sample's tolerance.
    """
    centers, tol = sample_kmeans_centers(source, n_clusters, rng)
    for _ in range(MAX_FULL_LLOYD_PASSES):
        responsibilities = NearestCenterResponsibilities(centers)
        reference = centers.mean(axis=0)
        stats = map_reduce(source, initial_stats_block, responsibilities, reference,
                           covariance_type, split_every=split_every)
        moved = moved_centers(stats.counts, stats.first, centers - reference) + reference
        if np.sum((moved - centers) ** 2) <= tol:
            break
        centers = moved
    return responsibilities, stats


def kmeans_plusplus_rows(source, n_clusters, rng):
    """Return the rows chosen by greedy k-means++, in ``n_clusters + 1`` passes, as a
    :class:`daskgmm.seeding.RowSample` (rows, values, weights).

    The first pass draws the first centre by weight (and ``n_clusters - 1`` more rows, which
    stand in for candidates when all rows left sit at the centres: fewer distinct rows than
    clusters). Each next pass weighs the candidates of one centre,
    ``sum w min(D^2, d(x, candidate)^2)``, keeps the best and the candidates it drew.
    """
    n_trials = 2 + int(np.log(n_clusters))
    first = sample_rows(source, n_clusters, rng)
    weight_scale = float(np.ldexp(1.0, -np.frexp(first.total_weight)[1]))
    chosen = _subset(first, [])
    trials = _subset(first, [0])
    for _ in range(n_clusters):
        keep = n_trials if len(chosen.rows) < n_clusters - 1 else 0
        result = map_reduce(source, trials_block, _seed(rng), chosen.points, trials.points, keep,
                            weight_scale)
        raise_if_nonfinite(result.n_nonfinite)
        best = int(np.argmin(result.costs))
        chosen = _joined(chosen, _subset(trials, [best]))
        trials = result.samples[best]
        if keep and len(trials.rows) == 0:
            trials = _subset(first, _first_unchosen(first.rows, chosen.rows))
    return chosen


def _subset(sample, indices):
    """The rows at ``indices`` of a :class:`RowSample`."""
    indices = np.asarray(indices, dtype=np.intp)
    return RowSample(sample.keys[indices], sample.rows[indices], sample.points[indices],
                     sample.weights[indices], sample.keep)


def _joined(first, second):
    """The rows of two :class:`RowSample` one after the other."""
    return RowSample(*(np.concatenate([getattr(first, name), getattr(second, name)])
                       for name in ("keys", "rows", "points", "weights")), first.keep)


def _first_unchosen(rows, chosen_rows):
    """The index of the first of ``rows`` not in ``chosen_rows`` (0 if there is none)."""
    unused = np.flatnonzero(~np.isin(rows, chosen_rows))
    return unused[:1] if len(unused) else [0]
