"""What a fitted mixture says of each row of a block: its label, log-likelihood and probabilities,
all from one evaluation of the log-densities.

Pure NumPy. A block is evaluated a slice of rows at a time in per-thread buffers, as the E-step
is (:mod:`daskgmm.slices`): the slice's weighted log-probabilities ``coefficients @ phi``
(K x n) give the labels (their argmax), and, normalised, the log-likelihood and the
probabilities, without an (n, K) temporary per block. ``predict``, ``score_samples`` and
``predict_proba`` and the segment job's single pass over an image all use :func:`evaluate_rows`.
"""

import numpy as np

from .design import design_matrix, n_design_features
from .kernels import count_nonfinite_rows, exp_floor, raise_if_nonfinite
from .slices import row_slices, slice_length, thread_scratch


def evaluate_rows(rows, density, labels=None, log_likelihood=None, probabilities=None):
    """Fill the outputs given for every row of ``rows`` from one evaluation of its log-densities.

    Parameters
    ----------
    rows : ndarray of shape (n_rows, n_features)
        In the density's dtype (or any dtype it casts to).
    density : LogDensity
    labels : ndarray of shape (n_rows,), optional
        Filled with each row's most probable component (scikit-learn's ``predict``).
    log_likelihood : ndarray of shape (n_rows,), optional
        Filled with ``log p(x)`` (``score_samples``).
    probabilities : ndarray of shape (n_rows, n_components), optional
        Filled with the posterior probabilities (``predict_proba``).

    Raises
    ------
    ValueError
        If a row holds NaN or infinity (:func:`~daskgmm.kernels.raise_if_nonfinite`).
    """
    n_rows, n_features = rows.shape
    n_design = n_design_features(density.covariance_type, n_features)
    step = slice_length(n_design, n_rows)
    phi_buffer = thread_scratch("evaluate_phi", (n_design, step), density.dtype)
    log_prob_buffer = thread_scratch("evaluate_log_prob", (density.n_components, step),
                                     density.dtype)
    normalise = log_likelihood is not None or probabilities is not None
    terms_dtype = _normalisation_dtype(density.dtype, log_likelihood, probabilities)
    for part in row_slices(n_rows, step):
        width = part.stop - part.start
        phi = design_matrix(rows[part], density.reference, density.covariance_type,
                            phi_buffer[:, :width])
        log_prob = np.matmul(density.coefficients, phi, out=log_prob_buffer[:, :width])
        best = log_prob.max(axis=0)
        if not np.isfinite(best).all():
            _raise_if_rows_nonfinite(rows)
        if labels is not None:
            labels[part] = first_best(log_prob, best)
        if normalise:
            shifted = thread_scratch("evaluate_shifted", log_prob.shape, terms_dtype)
            log_norm = log_sum_exp(log_prob, best, shifted)
            _check_finite(rows, log_norm)
            if log_likelihood is not None:
                log_likelihood[part] = log_norm
            if probabilities is not None:
                probabilities[part] = posterior_in_place(log_prob, log_norm).T


def _normalisation_dtype(dtype, log_likelihood, probabilities):
    """The dtype of the exponentiated terms: float32 when only float32 outputs need them.

    A float32 sum of terms in (0, 1] is off by about 1e-7 of ``log p(x)``, below the rounding
    of the float32 output itself, and its exponential costs a third of float64's (bench/README.md).
    """
    outputs = [array.dtype for array in (log_likelihood, probabilities) if array is not None]
    if outputs and all(output == np.float32 for output in outputs):
        return np.dtype(np.float32)
    return np.dtype(dtype)


def first_best(log_prob, best):
    """``log_prob.argmax(axis=0)`` given the column maxima ``best``: the first best component.

    Comparing each of the K rows with the maxima is faster than NumPy's argmax over the first
    axis of a (K, n) array, which it walks column by column (bench/README.md).
    """
    labels = np.zeros(log_prob.shape[1], dtype=np.intp)
    for k in range(len(log_prob) - 1, 0, -1):
        labels[log_prob[k] == best] = k
    return labels


def log_sum_exp(log_prob, best, scratch):
    """``log p(x) = best + log sum_k exp(log_prob_k - best)`` of weighted log-probabilities
    (K, n), using ``scratch`` (K, n) for the terms.

    Terms are raised to at least ``exp(1 + log(tiny))`` first, as in the E-step
    (:func:`daskgmm.kernels.responsibilities_in_place`): the exponential is many times slower
    near underflow, and a sum holding ``exp(0) = 1`` cannot tell.
    """
    with np.errstate(under="ignore", invalid="ignore", divide="ignore", over="ignore"):
        np.subtract(log_prob, best, out=scratch)
        np.maximum(scratch, exp_floor(scratch.dtype), out=scratch)
        np.exp(scratch, out=scratch)
        return best + np.log(scratch.sum(axis=0))


def posterior_in_place(log_prob, log_norm):
    """Turn weighted log-probabilities (K, n) into posterior probabilities in place, as
    scikit-learn computes them (``exp(log_prob - log p(x))``, no floor); return them."""
    with np.errstate(under="ignore", invalid="ignore"):
        log_prob -= log_norm
        return np.exp(log_prob, out=log_prob)


def _check_finite(rows, log_norm):
    """Raise if a row is not finite; a finite row far from every component overflows too, so
    the rows themselves decide."""
    if not np.isfinite(log_norm).all():
        _raise_if_rows_nonfinite(rows)


def _raise_if_rows_nonfinite(rows):
    raise_if_nonfinite(count_nonfinite_rows(np.asarray(rows)))


def score_block(block, density):
    """Per-row log-likelihood of a block (``score_samples``)."""
    result = np.empty(len(block), dtype=density.dtype)
    evaluate_rows(block, density, log_likelihood=result)
    return result


def label_block(block, density):
    """Per-row most probable component of a block (``predict``)."""
    result = np.empty(len(block), dtype=np.int64)
    evaluate_rows(block, density, labels=result)
    return result


def proba_block(block, density):
    """Per-row posterior probabilities of a block (``predict_proba``)."""
    result = np.empty((len(block), density.n_components), dtype=density.dtype)
    evaluate_rows(block, density, probabilities=result)
    return result
