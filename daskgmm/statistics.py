"""Sufficient statistics: the small value a pass sums over blocks, and how a block's are summed.

Pure NumPy. Moments are taken about a reference point fixed before the pass and summed in
float64; ``a + b`` merges two partial results in a fixed order.
"""

from dataclasses import dataclass, field

import numpy as np

from .lowest import merge_lowest


@dataclass
class SufficientStats:
    """Moments of the data under the responsibilities, about a fixed reference point.

    The unit that crosses the network: ``a + b`` merges two partial results in a fixed order,
    so a tree reduction gives the same bits whichever worker computed each block.

    Attributes
    ----------
    reference : ndarray of shape (n_features,)
        The point ``c`` all moments are taken about.
    counts : ndarray of shape (n_components,)
        ``sum w r_k``.
    first : ndarray of shape (n_components, n_features)
        ``sum w r_k (x - c)``.
    second : ndarray
        ``sum w r_k (x - c)(x - c)^T`` for 'full' (K, D, D); the pooled ``sum w (x - c)(x - c)^T``
        for 'tied' (D, D); ``sum w r_k (x - c)^2`` for 'diag' (K, D); ``sum w r_k |x - c|^2``
        for 'spherical' (K,).
    log_likelihood : float
        ``sum w log p(x)`` under the parameters the responsibilities came from.
    total_weight : float
        ``sum w``.
    pooled_first, pooled_count : ndarray of shape (n_features,), float
        'tied' only: ``sum w (x - c)`` and ``sum w`` over all rows whatever the responsibilities
        (they differ from the per-component sums when responsibilities do not sum to one).
    n_nonfinite : int
        Rows whose values (or log-likelihood) are not finite; the caller raises.
    worst_scores, worst_points : ndarray
        The rows with the lowest ``log p(x)`` (at most ``n_components`` of them), kept to re-seed
        components that lose all their weight.
    """

    reference: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    second: np.ndarray
    log_likelihood: float = 0.0
    total_weight: float = 0.0
    pooled_first: np.ndarray = 0.0
    pooled_count: float = 0.0
    n_nonfinite: int = 0
    worst_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    worst_points: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    def __add__(self, other):
        scores, points = merge_lowest(
            (self.worst_scores, self.worst_points),
            (other.worst_scores, other.worst_points),
            max(len(self.worst_scores), len(other.worst_scores)),
        )
        return SufficientStats(
            reference=self.reference,
            counts=self.counts + other.counts,
            first=self.first + other.first,
            second=self.second + other.second,
            log_likelihood=self.log_likelihood + other.log_likelihood,
            total_weight=self.total_weight + other.total_weight,
            pooled_first=self.pooled_first + other.pooled_first,
            pooled_count=self.pooled_count + other.pooled_count,
            n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            worst_scores=scores,
            worst_points=points,
        )


class MomentAccumulator:
    """Sums ``phi @ weighted_resp^T`` over slices in float64, then unpacks the statistics.

    ``phi`` holds the design features of a slice (:mod:`daskgmm.design`). For 'tied' the
    responsibilities carry one more row, the row weights, whose moments give the pooled scatter
    over all rows whatever the responsibilities (scikit-learn's definition).
    """

    def __init__(self, n_design, n_components, covariance_type):
        pooled = covariance_type == "tied"
        self.covariance_type = covariance_type
        self.moments = np.zeros((n_design, n_components + pooled))
        self.log_likelihood = 0.0
        self.total_weight = 0.0
        self.n_nonfinite = 0

    def add(self, phi, weighted_resp, log_norm, row_weights):
        self.moments += phi @ weighted_resp.T
        if row_weights is None:
            log_likelihood = float(np.sum(log_norm, dtype=np.float64))
            self.total_weight += phi.shape[1]
        else:
            log_likelihood = float(np.dot(row_weights, log_norm.astype(np.float64)))
            self.total_weight += float(np.sum(row_weights, dtype=np.float64))
        self.log_likelihood += log_likelihood
        self.n_nonfinite += _count_nonfinite(log_norm, log_likelihood)

    def stats(self, reference):
        n_features = len(reference)
        moments = self.moments
        pooled = self.covariance_type == "tied"
        n_components = moments.shape[1] - pooled
        return SufficientStats(
            reference=reference,
            counts=moments[0, :n_components].copy(),
            first=moments[1 : 1 + n_features, :n_components].T.copy(),
            second=_unpack_second(moments[1 + n_features :], self.covariance_type, n_features),
            log_likelihood=self.log_likelihood,
            total_weight=self.total_weight,
            pooled_first=moments[1 : 1 + n_features, -1].copy() if pooled else 0.0,
            pooled_count=float(moments[0, -1]) if pooled else 0.0,
        )


def _unpack_second(quadratic, covariance_type, n_features):
    """Turn the quadratic rows of the moments (Q, K) into the statistic's documented shape."""
    if covariance_type == "diag":
        return quadratic.T.copy()
    if covariance_type == "spherical":
        return quadratic[0].copy()
    upper_rows, upper_cols = np.triu_indices(n_features)
    packed = quadratic.T if covariance_type == "full" else quadratic[:, -1][None]
    full = np.empty((packed.shape[0], n_features, n_features))
    full[:, upper_rows, upper_cols] = packed
    full[:, upper_cols, upper_rows] = packed
    return full if covariance_type == "full" else full[0]


def _count_nonfinite(log_norm, log_likelihood):
    """Rows of a slice whose ``log p(x)`` is not finite, counted only when their sum is not."""
    if np.isfinite(log_likelihood):
        return 0
    return int(len(log_norm) - np.count_nonzero(np.isfinite(log_norm)))
