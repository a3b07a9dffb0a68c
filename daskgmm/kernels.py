"""One block of rows in, small statistics out: the fused E-step and sufficient statistics.

Pure NumPy; knows nothing about Dask. Every function here works on one in-memory block of rows
and is what the engine maps over the blocks of a NumPy array or the chunks of a Dask array.
The mixture is linear in the design features of a row (:mod:`daskgmm.design`): a slice's
weighted log-probabilities are ``coefficients @ phi``, its statistics ``phi @ resp^T``
(:mod:`daskgmm.statistics`). Per-row work stays in the block's floating dtype (float32 stays
float32); everything summed over slices and blocks is float64.
"""

from dataclasses import dataclass

import numpy as np

from .covariance import log_det_cholesky
from .design import design_matrix, n_design_features, quadratic_coefficients
from .lowest import LowestRows
from .slices import row_slices, slice_length, thread_scratch
from .statistics import MomentAccumulator


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


@dataclass
class LogDensity:
    """The current mixture as coefficients of the design features (:mod:`daskgmm.design`).

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


def make_log_density(weights, means, precisions_cholesky, covariance_type, reference, dtype,
                     log_weights=None):
    """Express a mixture as linear coefficients of the design features, for data of ``dtype``.

    With ``m = mu_k - c`` and precision ``P_k``, the log-density is
    ``const_k + (x-c)^T P_k m - 0.5 (x-c)^T P_k (x-c)`` where
    ``const_k = log w_k + log det U_k - D/2 log(2 pi) - 0.5 m^T P_k m``. ``log_weights``, when
    given, stands for ``log w_k`` (a variational mixture's expected log weights and terms).
    """
    from .covariance import precisions_from_cholesky

    n_components, n_features = means.shape
    centred_means = means - reference
    precisions = precisions_from_cholesky(precisions_cholesky, covariance_type)
    if covariance_type == "tied":
        precisions = np.broadcast_to(precisions, (n_components, n_features, n_features))
        quadratic = np.repeat(quadratic_coefficients(precisions[0], "tied")[None], n_components, 0)
    else:
        quadratic = quadratic_coefficients(precisions, covariance_type)
    if covariance_type in ("full", "tied"):
        linear = np.einsum("kde,ke->kd", precisions, centred_means)
    elif covariance_type == "diag":
        linear = precisions * centred_means
    else:
        linear = precisions[:, None] * centred_means
    if log_weights is None:
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


def responsibilities_in_place(log_prob):
    """Turn weighted log-probabilities (K, n) into responsibilities in place; return log p(x).

    Log-ratios are raised to at least ``1 + log(tiny)`` (``tiny`` the dtype's smallest normal
    number) before the exponential: NumPy's vectorised ``exp`` is many times slower on
    arguments whose result is near or below ``tiny`` (subnormal or zero; bench/README.md), and
    in high dimensions most components of most rows are that far below the best one. Such a
    responsibility becomes ``e * tiny`` (6e-308 in float64) instead of a smaller subnormal or
    zero: a change far below the rounding of every sum it enters.
    """
    column_max = log_prob.max(axis=0)
    with np.errstate(invalid="ignore", under="ignore", divide="ignore"):
        log_prob -= column_max
        np.maximum(log_prob, exp_floor(log_prob.dtype), out=log_prob)
        np.exp(log_prob, out=log_prob)
        column_sum = log_prob.sum(axis=0)
        log_prob /= column_sum
        return column_max + np.log(column_sum)


def exp_floor(dtype):
    """``1 + log(tiny)`` in ``dtype``: the least argument given to ``exp`` (see above)."""
    return dtype.type(1.0 + np.log(np.finfo(dtype).tiny))


def _weighted_resp_shape(n_components, n_rows, covariance_type):
    """Room for the responsibilities of a slice, plus the row-weight row for 'tied'."""
    return (n_components + (covariance_type == "tied"), n_rows)


def _weigh_responsibilities(buffer, n_components, row_weights):
    """Multiply responsibilities by the row weights; fill the pooled row for 'tied'."""
    if row_weights is not None:
        buffer[:n_components] *= row_weights
    if buffer.shape[0] > n_components:
        buffer[n_components] = 1.0 if row_weights is None else row_weights
    return buffer


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
    daskgmm.statistics.SufficientStats
        Moments about ``density.reference`` under the responsibilities, ``sum w log p(x)`` and
        the worst-explained rows.
    """
    block = np.asarray(block)
    n_components = density.n_components
    n_design = n_design_features(covariance_type, block.shape[1])
    step = slice_length(n_design, len(block))
    phi_buffer = thread_scratch("phi", (n_design, step), density.dtype)
    resp_buffer = thread_scratch("resp", _weighted_resp_shape(n_components, step, covariance_type),
                                 density.dtype)
    accumulator = MomentAccumulator(n_design, n_components, covariance_type)
    worst_rows = LowestRows(min(n_components, len(block)))
    for rows in row_slices(len(block), step):
        n_rows = rows.stop - rows.start
        phi = design_matrix(block[rows], density.reference, covariance_type,
                            phi_buffer[:, :n_rows])
        weighted_resp = resp_buffer[:, :n_rows]
        resp = np.matmul(density.coefficients, phi, out=weighted_resp[:n_components])
        log_norm = responsibilities_in_place(resp)
        worst_rows.add(log_norm, rows.start)
        weights = None if row_weights is None else np.asarray(row_weights[rows], density.dtype)
        _weigh_responsibilities(weighted_resp, n_components, weights)
        accumulator.add(phi, weighted_resp, log_norm, weights)
    stats = accumulator.stats(density.reference.astype(np.float64))
    stats.n_nonfinite = accumulator.n_nonfinite
    return worst_rows.attach(stats, block)


def em_pass_block(block, row_weights, position, density, covariance_type):
    """:func:`em_block` as a pass's block function, which is also given the block's position."""
    return em_block(block, row_weights, density, covariance_type)
