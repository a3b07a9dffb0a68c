"""One block of rows in, small statistics out: the fused E-step and sufficient statistics.

Pure NumPy; knows nothing about Dask. Every function here works on one in-memory block of rows
and is what the engine maps over the blocks of a NumPy array or the chunks of a Dask array.

The Gaussian log-density is linear in the *design features* of a row,
``phi(x) = (1, x - c, quadratic terms of x - c)``, where the quadratic terms are the upper
triangle of ``(x - c)(x - c)^T`` ('full', 'tied'), the squares ``(x - c)^2`` ('diag') or the
squared norm ``|x - c|^2`` ('spherical'). So, for a slice of rows laid out feature-major:

* the E-step's weighted log-probabilities of all components are one matrix product
  ``coefficients @ phi`` (K x n), and
* every sufficient statistic (counts, first and second moments) is one matrix product
  ``phi @ responsibilities^T``.

The reference ``c`` is the current mixture mean, chosen before the pass, so data far from the
origin do not lose precision to cancellation. Per-row work stays in the block's floating dtype
(float32 stays float32); everything summed over slices and blocks is float64.
"""

import threading
from dataclasses import dataclass, field

import numpy as np

from .covariance import log_det_cholesky

# Rows per slice are chosen so that the design matrix of one slice holds about this many
# elements (2 MiB of float64): small enough that a slice's design matrix and responsibilities
# stay in the caches between the E-step and the statistics (8 MB slices spill and slow every
# step), large enough that the Python cost of a slice's dozen NumPy calls stays small. At least
# _MIN_SLICE_ROWS rows whatever the number of design features, and at most _MAX_SLICE_ROWS, so
# that the slice's per-row temporaries (float64 vectors of its length) stay under glibc's
# 128 KiB mmap threshold: Dask's nanny pins that threshold (it sets MALLOC_TRIM_THRESHOLD_ for
# its workers), and above it every temporary is a fresh mapping whose pages fault anew on every
# slice. Measured on the 2-core AMD EPYC of bench/README.md, seconds per iteration, NumPy input,
# in a worker's environment / in a plain process: W1 0.058 / 0.054 with the former 512 KiB
# slices, 0.074 / 0.042 with 2 MiB slices of 26,214 rows, 0.047 / 0.044 with 2 MiB capped at
# 16,000 rows; W3 0.083 -> 0.067 in a worker's environment; W2 unchanged.
_SLICE_ELEMENTS = 1 << 18
_MIN_SLICE_ROWS = 1024
_MAX_SLICE_ROWS = 16_000


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


def count_nonfinite_rows(block):
    """Return how many rows of a 2-D float block hold NaN or infinity."""
    return int(np.count_nonzero((~np.isfinite(block)).any(axis=1)))


def raise_if_nonfinite(n_nonfinite):
    """Raise the ValueError that names non-finite input rows, if there are any.

    The one message for NaN or infinity in X, whichever check finds them: the up-front check of
    in-memory input, a pass of ``fit``, or a block of a lazy prediction. A block counts only its
    own rows.
    """
    if n_nonfinite:
        raise ValueError(
            f"Input X contains NaN or infinity in {n_nonfinite} row(s); GaussianMixture needs "
            "finite values: drop or impute those rows first."
        )


def merge_lowest(left, right, keep):
    """Merge two ``(scores, points)`` sets, keeping the ``keep`` lowest scores (stable order)."""
    if len(left[0]) == 0:
        return right
    if len(right[0]) == 0:
        return left
    scores = np.concatenate([left[0], right[0]])
    points = np.concatenate([left[1], right[1]])
    order = np.argsort(scores, kind="stable")[:keep]
    return scores[order], points[order]


# ---------------------------------------------------------------- design features


def n_design_features(covariance_type, n_features):
    """Return the number of rows of the design matrix: 1 + D + quadratic terms."""
    quadratic = {
        "full": n_features * (n_features + 1) // 2,
        "tied": n_features * (n_features + 1) // 2,
        "diag": n_features,
        "spherical": 1,
    }[covariance_type]
    return 1 + n_features + quadratic


def _design_matrix(rows, reference, covariance_type, out):
    """Fill ``out`` with ``phi`` of a slice of rows, feature-major (n_design_features, n_rows)."""
    n_features = rows.shape[1]
    phi = out
    phi[0] = 1.0
    centred = phi[1 : 1 + n_features]
    np.subtract(rows.T, reference[:, None], out=centred, casting="unsafe")
    quadratic = phi[1 + n_features :]
    if covariance_type in ("full", "tied"):
        offset = 0
        for i in range(n_features):
            width = n_features - i
            np.multiply(centred[i], centred[i:], out=quadratic[offset : offset + width])
            offset += width
    elif covariance_type == "diag":
        np.multiply(centred, centred, out=quadratic)
    else:
        np.einsum("dn,dn->n", centred, centred, out=quadratic[0])
    return phi


def _quadratic_coefficients(precisions, covariance_type):
    """Coefficients of the quadratic design features in ``-0.5 (x-c)^T P (x-c)``, shape (K, Q)."""
    if covariance_type in ("full", "tied"):
        n_features = precisions.shape[-1]
        upper_rows, upper_cols = np.triu_indices(n_features)
        doubled = np.where(upper_rows == upper_cols, 0.5, 1.0)
        return -precisions[..., upper_rows, upper_cols] * doubled
    if covariance_type == "diag":
        return -0.5 * precisions
    return -0.5 * precisions[:, None]


@dataclass
class LogDensity:
    """The current mixture as coefficients of the design features (see module docstring).

    ``coefficients @ phi(x)`` gives ``log w_k + log N(x | mu_k, Sigma_k)`` for all components.
    Built once per iteration on the client (:func:`make_log_density`) and shipped to every
    block as one small object.
    """

    covariance_type: str
    reference: np.ndarray
    coefficients: np.ndarray
    dtype: np.dtype

    @property
    def n_components(self):
        return self.coefficients.shape[0]


def make_log_density(weights, means, precisions_cholesky, covariance_type, reference, dtype):
    """Express a mixture as linear coefficients of the design features, for data of ``dtype``.

    With ``m = mu_k - c`` and precision ``P_k``, the log-density is
    ``const_k + (x-c)^T P_k m - 0.5 (x-c)^T P_k (x-c)`` where
    ``const_k = log w_k + log det U_k - D/2 log(2 pi) - 0.5 m^T P_k m``.
    """
    from .covariance import precisions_from_cholesky

    n_components, n_features = means.shape
    centred_means = means - reference
    precisions = precisions_from_cholesky(precisions_cholesky, covariance_type)
    if covariance_type == "tied":
        precisions = np.broadcast_to(precisions, (n_components, n_features, n_features))
        quadratic = np.repeat(_quadratic_coefficients(precisions[0], "tied")[None], n_components, 0)
    else:
        quadratic = _quadratic_coefficients(precisions, covariance_type)
    if covariance_type in ("full", "tied"):
        linear = np.einsum("kde,ke->kd", precisions, centred_means)
    elif covariance_type == "diag":
        linear = precisions * centred_means
    else:
        linear = precisions[:, None] * centred_means
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    constant = (
        log_weights
        + log_det_cholesky(precisions_cholesky, covariance_type, n_features)
        - 0.5 * n_features * np.log(2 * np.pi)
        - 0.5 * np.einsum("kd,kd->k", linear, centred_means)
    )
    coefficients = np.column_stack([constant, linear, quadratic])
    dtype = float_dtype_of(dtype)
    return LogDensity(
        covariance_type=covariance_type,
        reference=reference.astype(dtype),
        coefficients=np.ascontiguousarray(coefficients, dtype=dtype),
        dtype=dtype,
    )


# ---------------------------------------------------------------- per-slice work


def _slice_length(n_design, n_rows):
    """Rows per slice: the design matrix near ``_SLICE_ELEMENTS``, and no more than the block."""
    rows = min(max(_SLICE_ELEMENTS // max(n_design, 1), _MIN_SLICE_ROWS), _MAX_SLICE_ROWS)
    return int(max(1, min(rows, n_rows)))


def _row_slices(n_rows, step):
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def responsibilities_in_place(log_prob):
    """Turn weighted log-probabilities (K, n) into responsibilities in place; return log p(x).

    Log-ratios are raised to at least ``1 + log(tiny)`` (``tiny`` the dtype's smallest normal
    number) before the exponential: NumPy's vectorised ``exp`` takes 5-25 times longer on
    arguments whose result is near or below ``tiny`` (subnormal or zero), and in high dimensions
    most components of most rows are that far below the best one. Such a responsibility becomes
    ``e * tiny`` (6e-308 in float64) instead of a smaller subnormal or zero: a change far below
    the rounding of every sum it enters.
    """
    column_max = log_prob.max(axis=0)
    with np.errstate(invalid="ignore", under="ignore", divide="ignore"):
        log_prob -= column_max
        np.maximum(log_prob, _exp_floor(log_prob.dtype), out=log_prob)
        np.exp(log_prob, out=log_prob)
        column_sum = log_prob.sum(axis=0)
        log_prob /= column_sum
        return column_max + np.log(column_sum)


def _exp_floor(dtype):
    """``1 + log(tiny)`` in ``dtype``: the least argument given to ``exp`` (see above)."""
    return dtype.type(1.0 + np.log(np.finfo(dtype).tiny))


def weighted_log_prob(block, density):
    """Return ``log w_k + log N(x | mu_k, Sigma_k)`` for every row of ``block``, shape (n, K)."""
    block = np.asarray(block)
    n_design = n_design_features(density.covariance_type, block.shape[1])
    result = np.empty((len(block), density.n_components), dtype=density.dtype)
    step = _slice_length(n_design, len(block))
    buffer = np.empty((n_design, step), dtype=density.dtype)
    for rows in _row_slices(len(block), step):
        phi = _design_matrix(block[rows], density.reference, density.covariance_type,
                             buffer[:, : rows.stop - rows.start])
        result[rows] = (density.coefficients @ phi).T
    return result


def log_prob_resp(block, density):
    """Return ``(log p(x), log responsibilities)`` for a block, like scikit-learn's E-step.

    Raises the ValueError of :func:`raise_if_nonfinite` if a row of ``block`` holds NaN or
    infinity: a lazy prediction is checked only here, when its blocks are computed.
    """
    log_prob = weighted_log_prob(block, density)
    row_max = log_prob.max(axis=1, keepdims=True)
    with np.errstate(under="ignore", invalid="ignore", divide="ignore"):
        log_norm = row_max + np.log(np.exp(log_prob - row_max).sum(axis=1, keepdims=True))
        log_prob -= log_norm
    _check_finite_rows(block, log_norm)
    return log_norm[:, 0], log_prob


def _check_finite_rows(block, log_norm):
    """Raise if a row of ``block`` is not finite; rows are looked at only when needed.

    A non-finite value makes its row's ``log p(x)`` NaN or -inf, so checking the n values of
    ``log_norm`` finds every such block without a pass over its n x D values. A finite row can
    overflow too (far from every component): the block's values decide whether to raise.
    """
    if not np.isfinite(log_norm).all():
        raise_if_nonfinite(count_nonfinite_rows(np.asarray(block)))


class _MomentAccumulator:
    """Sums ``phi @ weighted_resp^T`` over slices in float64, then unpacks the statistics.

    For 'tied' the responsibilities carry one more row, the row weights, whose moments give the
    pooled scatter over all rows whatever the responsibilities (scikit-learn's definition).
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


def _weighted_resp_shape(n_components, n_rows, covariance_type):
    """Room for the responsibilities of a slice, plus the row-weight row for 'tied'."""
    return (n_components + (covariance_type == "tied"), n_rows)


def _weighted_resp_buffer(n_components, n_rows, covariance_type, dtype):
    return np.empty(_weighted_resp_shape(n_components, n_rows, covariance_type), dtype=dtype)


_scratch = threading.local()


def _thread_scratch(name, shape, dtype):
    """An uninitialised C-ordered array of ``shape``, kept for this thread and reused.

    :func:`em_block`'s slice buffers hold a few MB. Allocated afresh for every block, they were
    mapped and their pages faulted in again each time (glibc maps allocations above the 128 KiB
    threshold that Dask's nanny pins), which made the kernel on chunks of 100,000 rows (K=8,
    D=3) 22% slower than with the buffers reused. Each thread has its own; the returned array is
    valid until this thread asks for ``name`` again.
    """
    size = int(np.prod(shape))
    buffers = _scratch.__dict__
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = buffers[name] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def _weigh_responsibilities(buffer, n_components, row_weights):
    """Multiply responsibilities by the row weights; fill the pooled row for 'tied'."""
    if row_weights is not None:
        buffer[:n_components] *= row_weights
    if buffer.shape[0] > n_components:
        buffer[n_components] = 1.0 if row_weights is None else row_weights
    return buffer


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


class _LowestRows:
    """The ``keep`` rows of a block with the lowest ``log p(x)``, found slice by slice.

    Only rows below the current ``keep``-th lowest score are looked at again, so after the
    first slice a slice costs one comparison per row, not a partition of the whole block.
    Ties keep the earlier row.
    """

    def __init__(self, keep):
        self.keep = keep
        self.scores = np.empty(0)
        self.indices = np.empty(0, dtype=np.intp)

    def add(self, log_norm, start):
        """Consider the rows ``start, start + 1, ...`` with scores ``log_norm``."""
        if self.keep == 0:
            return
        if len(self.scores) == self.keep:
            candidates = np.flatnonzero(log_norm < self.scores[-1])
        else:
            candidates = np.arange(len(log_norm))
        if len(candidates) > self.keep:
            candidates = candidates[np.argpartition(log_norm[candidates], self.keep - 1)]
            candidates = candidates[: self.keep]
        scores = np.concatenate([self.scores, log_norm[candidates].astype(np.float64)])
        indices = np.concatenate([self.indices, candidates + start])
        order = np.lexsort((indices, scores))[: self.keep]
        self.scores, self.indices = scores[order], indices[order]

    def attach(self, stats, block):
        """Set ``stats.worst_scores`` and ``stats.worst_points`` (float64 rows of ``block``)."""
        stats.worst_scores = self.scores
        stats.worst_points = np.asarray(block[self.indices], dtype=np.float64).reshape(
            len(self.indices), block.shape[1])
        return stats


def _count_nonfinite(log_norm, log_likelihood):
    """Rows of a slice whose ``log p(x)`` is not finite, counted only when their sum is not."""
    if np.isfinite(log_likelihood):
        return 0
    return int(len(log_norm) - np.count_nonzero(np.isfinite(log_norm)))


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
    n_components = density.n_components
    n_design = n_design_features(covariance_type, block.shape[1])
    step = _slice_length(n_design, len(block))
    phi_buffer = _thread_scratch("phi", (n_design, step), density.dtype)
    resp_buffer = _thread_scratch("resp", _weighted_resp_shape(n_components, step, covariance_type),
                                  density.dtype)
    accumulator = _MomentAccumulator(n_design, n_components, covariance_type)
    lowest = _LowestRows(min(n_components, len(block)))
    for rows in _row_slices(len(block), step):
        n_rows = rows.stop - rows.start
        phi = _design_matrix(block[rows], density.reference, covariance_type,
                             phi_buffer[:, :n_rows])
        weighted_resp = resp_buffer[:, :n_rows]
        resp = np.matmul(density.coefficients, phi, out=weighted_resp[:n_components])
        log_norm = responsibilities_in_place(resp)
        lowest.add(log_norm, rows.start)
        weights = None if row_weights is None else np.asarray(row_weights[rows], density.dtype)
        _weigh_responsibilities(weighted_resp, n_components, weights)
        accumulator.add(phi, weighted_resp, log_norm, weights)
    stats = accumulator.stats(density.reference.astype(np.float64))
    stats.n_nonfinite = accumulator.n_nonfinite
    return lowest.attach(stats, block)


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
    block = np.asarray(block)
    dtype = float_dtype_of(block.dtype)
    reference = np.asarray(reference, dtype=dtype)
    n_components = resp.shape[1]
    n_design = n_design_features(covariance_type, block.shape[1])
    phi = _design_matrix(block, reference, covariance_type,
                         np.empty((n_design, len(block)), dtype=dtype))
    weighted_resp = _weighted_resp_buffer(n_components, len(block), covariance_type, dtype)
    weighted_resp[:n_components] = resp.T
    weights = None if row_weights is None else np.asarray(row_weights, dtype)
    _weigh_responsibilities(weighted_resp, n_components, weights)
    accumulator = _MomentAccumulator(n_design, n_components, covariance_type)
    accumulator.add(phi, weighted_resp, np.zeros(len(block)), weights)
    stats = accumulator.stats(reference.astype(np.float64))
    stats.n_nonfinite = count_nonfinite_rows(phi[1 : 1 + block.shape[1]].T)
    return _LowestRows(0).attach(stats, block)


def score_block(block, density):
    """Per-row log-likelihood of a block (``score_samples``)."""
    return log_prob_resp(block, density)[0]


def label_block(block, density):
    """Per-row most probable component of a block (``predict``)."""
    return log_prob_resp(block, density)[1].argmax(axis=1)


def proba_block(block, density):
    """Per-row responsibilities of a block (``predict_proba``)."""
    return np.exp(log_prob_resp(block, density)[1])
