"""One block of rows in, small statistics out: the fused E-step and sufficient statistics.

Pure NumPy; knows nothing about Dask. Every function here works on one in-memory block of rows
and is what the engine maps over the blocks of a NumPy array or the chunks of a Dask array.

All per-row work is done on data centred at a reference point ``c`` chosen before the pass (the
current mixture mean), so that data far from the origin do not lose precision to cancellation.
Per-row work stays in the block's floating dtype (float32 stays float32); everything summed over
rows is accumulated in float64.
"""

from dataclasses import dataclass, field

import numpy as np

from .covariance import log_det_cholesky

# Rows per slice are chosen so that the widest temporary stays near this many elements,
# which keeps the working set of one slice inside the CPU caches.
_SLICE_ELEMENTS = 1 << 17


def as_float_block(block):
    """Return ``block`` as floating point: float32 stays float32, everything else float64."""
    block = np.asarray(block)
    if block.dtype == np.float32 or block.dtype == np.float64:
        return block
    if block.dtype.kind not in "biuf":
        raise TypeError(f"X must hold numbers, got dtype {block.dtype}")
    return block.astype(np.float64)


def float_dtype_of(dtype):
    """Return the floating dtype a block of ``dtype`` is computed in."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


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
        for 'tied' (D, D); ``sum w r_k (x - c)^2`` for 'diag' and 'spherical' (K, D).
    log_likelihood : float
        ``sum w log p(x)`` under the parameters the responsibilities came from.
    total_weight : float
        ``sum w``.
    n_nonfinite : int
        Rows holding NaN or infinity (the pass is then invalid and the caller raises).
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
            n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            worst_scores=scores,
            worst_points=points,
        )


def merge_lowest(left, right, keep):
    """Merge two ``(scores, points)`` sets, keeping the ``keep`` lowest scores (stable order)."""
    scores = np.concatenate([left[0], right[0]])
    points = np.concatenate([left[1], right[1]]) if len(scores) else left[1]
    order = np.argsort(scores, kind="stable")[:keep]
    return scores[order], points[order]


@dataclass
class LogDensity:
    """The current mixture, pre-arranged for the per-row work of the E-step.

    Built once per iteration on the client (see :func:`make_log_density`) and shipped to every
    block as one small object.
    """

    covariance_type: str
    reference: np.ndarray
    offsets: np.ndarray
    transform: np.ndarray
    shifts: np.ndarray
    dtype: np.dtype

    @property
    def n_components(self):
        return len(self.offsets)


def make_log_density(weights, means, precisions_cholesky, covariance_type, reference, dtype):
    """Arrange a mixture's parameters for :func:`weighted_log_prob` on data of ``dtype``.

    ``offsets`` gathers ``log w_k + log det U_k - D/2 log(2 pi)``. For 'full' and 'tied',
    ``transform`` maps centred rows to whitened coordinates and ``shifts`` are the whitened
    means; for 'diag' and 'spherical' ``transform`` holds the precisions and ``shifts`` the
    centred means.
    """
    n_features = means.shape[1]
    centred_means = means - reference
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    offsets = (
        log_weights
        + log_det_cholesky(precisions_cholesky, covariance_type, n_features)
        - 0.5 * n_features * np.log(2 * np.pi)
    )
    if covariance_type == "full":
        transform = np.concatenate(list(precisions_cholesky), axis=1)
        shifts = np.einsum("kd,kde->ke", centred_means, precisions_cholesky).reshape(-1)
    elif covariance_type == "tied":
        transform = precisions_cholesky
        shifts = centred_means @ precisions_cholesky
    elif covariance_type == "diag":
        transform = precisions_cholesky**2
        shifts = centred_means
    else:
        transform = precisions_cholesky**2
        shifts = centred_means
    dtype = float_dtype_of(dtype)
    return LogDensity(
        covariance_type=covariance_type,
        reference=reference.astype(dtype),
        offsets=offsets.astype(dtype),
        transform=np.ascontiguousarray(transform, dtype=dtype),
        shifts=np.ascontiguousarray(shifts, dtype=dtype),
        dtype=dtype,
    )


def _squared_mahalanobis(centred, density):
    """Return ``(x - mu_k)^T P_k (x - mu_k)`` for every row and component, shape (n, K)."""
    n_rows = centred.shape[0]
    n_components = density.n_components
    if density.covariance_type == "full":
        whitened = centred @ density.transform
        whitened -= density.shifts
        whitened *= whitened
        return whitened.reshape(n_rows, n_components, -1).sum(axis=2)
    if density.covariance_type == "tied":
        whitened = centred @ density.transform
        differences = whitened[:, None, :] - density.shifts[None, :, :]
        differences *= differences
        return differences.sum(axis=2)
    precisions, centred_means = density.transform, density.shifts
    if density.covariance_type == "diag":
        quadratic = (centred * centred) @ precisions.T
        quadratic -= 2.0 * (centred @ (centred_means * precisions).T)
        quadratic += np.sum(centred_means**2 * precisions, axis=1)
        return quadratic
    squared_norms = np.einsum("nd,nd->n", centred, centred)
    quadratic = squared_norms[:, None] - 2.0 * (centred @ centred_means.T)
    quadratic += np.sum(centred_means**2, axis=1)
    quadratic *= precisions
    return quadratic


def weighted_log_prob(block, density):
    """Return ``log w_k + log N(x | mu_k, Sigma_k)`` for every row of ``block``, shape (n, K)."""
    centred = np.asarray(block, dtype=density.dtype) - density.reference
    log_prob = _squared_mahalanobis(centred, density)
    log_prob *= -0.5
    log_prob += density.offsets
    return log_prob


def responsibilities_in_place(log_prob):
    """Turn weighted log-probabilities into responsibilities in place; return ``log p(x)``."""
    row_max = log_prob.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", under="ignore"):
        log_prob -= row_max
        np.exp(log_prob, out=log_prob)
    row_sum = log_prob.sum(axis=1, keepdims=True)
    log_prob /= row_sum
    return (row_max + np.log(row_sum))[:, 0]


def log_prob_resp(block, density):
    """Return ``(log p(x), log responsibilities)`` for a block, like scikit-learn's E-step."""
    log_prob = weighted_log_prob(as_float_block(block), density)
    row_max = log_prob.max(axis=1, keepdims=True)
    with np.errstate(under="ignore", invalid="ignore"):
        log_norm = row_max + np.log(np.exp(log_prob - row_max).sum(axis=1, keepdims=True))
        log_prob -= log_norm
    return log_norm[:, 0], log_prob


def _slice_rows(n_rows, n_components, n_features):
    width = max(n_components * n_features, n_features * (n_features + 1) // 2, 1)
    return max(64, _SLICE_ELEMENTS // width)


def _second_moments(centred, weighted_resp, row_weights, covariance_type):
    """Return the slice's second-moment statistic for ``covariance_type`` (float64)."""
    if covariance_type == "full":
        upper_rows, upper_cols = np.triu_indices(centred.shape[1])
        products = centred[:, upper_rows] * centred[:, upper_cols]
        packed = (weighted_resp.T @ products).astype(np.float64)
        return _unpack_symmetric(packed, upper_rows, upper_cols, centred.shape[1])
    if covariance_type == "tied":
        weighted = centred if row_weights is None else centred * row_weights[:, None]
        return (weighted.T @ centred).astype(np.float64)
    return (weighted_resp.T @ (centred * centred)).astype(np.float64)


def _unpack_symmetric(packed, upper_rows, upper_cols, n_features):
    full = np.empty((packed.shape[0], n_features, n_features))
    full[:, upper_rows, upper_cols] = packed
    full[:, upper_cols, upper_rows] = packed
    return full


def _slice_stats(centred, resp, row_weights, log_norm, reference, covariance_type):
    weighted_resp = resp if row_weights is None else resp * row_weights[:, None]
    if row_weights is None:
        log_likelihood = float(np.sum(log_norm, dtype=np.float64))
        total_weight = float(len(centred))
    else:
        log_likelihood = float(np.dot(row_weights.astype(np.float64), log_norm))
        total_weight = float(np.sum(row_weights, dtype=np.float64))
    return SufficientStats(
        reference=reference,
        counts=weighted_resp.sum(axis=0, dtype=np.float64),
        first=(weighted_resp.T @ centred).astype(np.float64),
        second=_second_moments(centred, weighted_resp, row_weights, covariance_type),
        log_likelihood=log_likelihood,
        total_weight=total_weight,
        worst_points=np.empty((0, centred.shape[1])),
    )


def _with_worst_rows(stats, block, log_norm, n_worst):
    n_worst = min(n_worst, len(log_norm))
    if n_worst == 0:
        stats.worst_scores = np.empty(0)
        stats.worst_points = np.empty((0, block.shape[1]))
        return stats
    lowest = np.argpartition(log_norm, n_worst - 1)[:n_worst]
    lowest = lowest[np.argsort(log_norm[lowest], kind="stable")]
    stats.worst_scores = log_norm[lowest].astype(np.float64)
    stats.worst_points = block[lowest].astype(np.float64)
    return stats


def _count_nonfinite(block):
    return int(len(block) - np.count_nonzero(np.isfinite(block).all(axis=1)))


def em_block(block, row_weights, density, covariance_type):
    """E-step and sufficient statistics of one block of rows, in one pass.

    Parameters
    ----------
    block : ndarray of shape (n_rows, n_features)
        Any numeric dtype; converted here, one slice of rows at a time.
    row_weights : ndarray of shape (n_rows,) or None
        Sample weights of the rows.
    density : LogDensity
        The current mixture.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}

    Returns
    -------
    SufficientStats
        Moments about ``density.reference`` under the responsibilities, ``sum w log p(x)`` and
        the worst-explained rows.
    """
    block = np.asarray(block)
    reference = density.reference.astype(np.float64)
    n_nonfinite = _count_nonfinite(block) if block.dtype.kind == "f" else 0
    if n_nonfinite:
        return _empty_stats(reference, density.n_components, block.shape[1], covariance_type,
                            n_nonfinite)
    step = _slice_rows(len(block), density.n_components, block.shape[1])
    log_norms = np.empty(len(block), dtype=np.float64)
    total = None
    for start in range(0, max(len(block), 1), step):
        rows = slice(start, start + step)
        centred = np.asarray(block[rows], dtype=density.dtype) - density.reference
        log_prob = _squared_mahalanobis(centred, density)
        log_prob *= -0.5
        log_prob += density.offsets
        log_norm = responsibilities_in_place(log_prob)
        log_norms[rows] = log_norm
        weights = None if row_weights is None else np.asarray(row_weights[rows], density.dtype)
        part = _slice_stats(centred, log_prob, weights, log_norm, reference, covariance_type)
        total = part if total is None else total + part
    return _with_worst_rows(total, block, log_norms, density.n_components)


def responsibility_block(block, row_weights, resp, reference, covariance_type):
    """Sufficient statistics of a block under given responsibilities (used to initialise).

    Parameters
    ----------
    block : ndarray of shape (n_rows, n_features)
    row_weights : ndarray of shape (n_rows,) or None
    resp : ndarray of shape (n_rows, n_components)
        Responsibilities, e.g. one-hot k-means labels or random rows summing to one.
    reference : ndarray of shape (n_features,)
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    """
    block = as_float_block(block)
    n_nonfinite = _count_nonfinite(block)
    if n_nonfinite:
        return _empty_stats(reference, resp.shape[1], block.shape[1], covariance_type, n_nonfinite)
    centred = block - reference.astype(block.dtype)
    resp = resp.astype(block.dtype, copy=False)
    weights = None if row_weights is None else np.asarray(row_weights, block.dtype)
    stats = _slice_stats(centred, resp, weights, np.zeros(len(block)), reference, covariance_type)
    return _with_worst_rows(stats, block, np.zeros(len(block)), 0)


def _empty_stats(reference, n_components, n_features, covariance_type, n_nonfinite):
    second_shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
    }.get(covariance_type, (n_components, n_features))
    return SufficientStats(
        reference=reference,
        counts=np.zeros(n_components),
        first=np.zeros((n_components, n_features)),
        second=np.zeros(second_shape),
        n_nonfinite=n_nonfinite,
        worst_scores=np.empty(0),
        worst_points=np.empty((0, n_features)),
    )
