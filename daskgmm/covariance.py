"""Per-covariance-type mathematics: statistics to parameters, Cholesky factors, log-determinants.

Pure NumPy; knows nothing about Dask. Precisions are kept as Cholesky factors (upper-triangular
``U`` with ``precision = U @ U.T``, scikit-learn's convention), so log-densities never invert a
covariance and log-determinants are sums of logs of a diagonal.
"""

import numpy as np


ILL_DEFINED_COVARIANCE = (
    "Fitting the mixture model failed because some components have "
    "ill-defined empirical covariance (for instance caused by singleton "
    "or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def precisions_shape(covariance_type, n_components, n_features):
    """Return the shape of covariances/precisions for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def count_padding(dtype):
    """Return the small count scikit-learn adds to every component's weight (10 machine eps)."""
    return 10 * np.finfo(dtype).eps


def weighted_means(stats, padding):
    """Return component means and padded counts from centred statistics.

    ``stats.first`` holds ``sum w r (x - c)``; the means are ``sum w r x / (N_k + padding)``,
    exactly as scikit-learn defines them.
    """
    padded_counts = stats.counts + padding
    means = (stats.first + stats.counts[:, None] * stats.reference) / padded_counts[:, None]
    return means, padded_counts


def _scatter_about_means(stats, means):
    """Return ``sum w r (x - mu_k)(x - mu_k)^T`` per component from moments about the reference."""
    shift = means - stats.reference
    cross = np.einsum("kd,ke->kde", shift, stats.first)
    outer = np.einsum("k,kd,ke->kde", stats.counts, shift, shift)
    return stats.second - cross - cross.transpose(0, 2, 1) + outer


def _above_resolution(scatter, moments_about_reference):
    """Raise scatters lost to rounding (tiny or negative) to the resolution of the moments.

    A scatter is a sum of squares, so it is never negative; computed from moments about the
    reference it carries a rounding error of about ``eps`` times those moments. A component
    collapsed on a single row would otherwise get a negative variance from rounding alone.
    """
    resolution = np.finfo(np.float64).eps * moments_about_reference
    return np.maximum(scatter, resolution)


def _diag_scatter_about_means(stats, means):
    """Return ``sum w r (x - mu_k)^2`` per component and feature."""
    shift = means - stats.reference
    scatter = stats.second - 2.0 * shift * stats.first + stats.counts[:, None] * shift**2
    return _above_resolution(scatter, stats.second)


def _covariances_full(stats, means, padded_counts, reg_covar):
    covariances = _scatter_about_means(stats, means) / padded_counts[:, None, None]
    covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    n_features = means.shape[1]
    covariances[:, np.arange(n_features), np.arange(n_features)] += reg_covar
    return covariances


def _covariances_tied(stats, means, padded_counts, reg_covar):
    # scikit-learn's tied estimate is (sum_all x x^T - sum_k N_k mu_k mu_k^T) / sum_k N_k, the
    # first sum over all rows whatever the responsibilities. When every row's responsibilities
    # sum to one (after any E-step) that is the pooled scatter about c minus the between-component
    # scatter, which keeps its precision far from the origin.
    shift = means - stats.reference
    between = np.einsum("k,kd,ke->de", padded_counts, shift, shift)
    scatter = stats.second - between
    if not np.isclose(stats.pooled_count, stats.counts.sum(), rtol=1e-6):
        scatter += _unassigned_rows_correction(stats)
    covariance = scatter / padded_counts.sum()
    covariance = 0.5 * (covariance + covariance.T)
    covariance[np.diag_indices_from(covariance)] += reg_covar
    return covariance


def _unassigned_rows_correction(stats):
    """The terms of scikit-learn's tied estimate from rows whose responsibilities do not sum
    to one (initialisation from chosen rows): ``c u^T + u c^T + (W - sum N_k) c c^T``."""
    unassigned_first = stats.pooled_first - stats.first.sum(axis=0)
    unassigned_count = stats.pooled_count - stats.counts.sum()
    correction = np.outer(stats.reference, unassigned_first)
    correction += correction.T
    correction += unassigned_count * np.outer(stats.reference, stats.reference)
    return correction


def _covariances_diag(stats, means, padded_counts, reg_covar):
    return _diag_scatter_about_means(stats, means) / padded_counts[:, None] + reg_covar


def _covariances_spherical(stats, means, padded_counts, reg_covar):
    # stats.second is sum w r_k |x - c|^2: the mean of the diagonal variances needs no more.
    shift = means - stats.reference
    scatter = (
        stats.second
        - 2.0 * np.einsum("kd,kd->k", shift, stats.first)
        + stats.counts * np.einsum("kd,kd->k", shift, shift)
    )
    scatter = _above_resolution(scatter, stats.second)
    return scatter / (padded_counts * means.shape[1]) + reg_covar


_COVARIANCE_ESTIMATORS = {
    "full": _covariances_full,
    "tied": _covariances_tied,
    "diag": _covariances_diag,
    "spherical": _covariances_spherical,
}


def estimate_gaussian_parameters(stats, reg_covar, covariance_type, padding):
    """M-step: return ``(padded_counts, means, covariances)`` from sufficient statistics.

    Parameters
    ----------
    stats : SufficientStats
        Moments about ``stats.reference`` accumulated over all rows.
    reg_covar : float
        Added to the diagonal of every covariance.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    padding : float
        Added to each component count (scikit-learn's ``10 * eps``).
    """
    means, padded_counts = weighted_means(stats, padding)
    covariances = _COVARIANCE_ESTIMATORS[covariance_type](stats, means, padded_counts, reg_covar)
    return padded_counts, means, covariances


def _inverse_upper_cholesky(matrix):
    """Return the upper-triangular ``U`` with ``inv(matrix) = U @ U.T``."""
    try:
        lower = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(ILL_DEFINED_COVARIANCE) from None
    from scipy.linalg import solve_triangular

    identity = np.eye(matrix.shape[0], dtype=matrix.dtype)
    return solve_triangular(lower, identity, lower=True).T


def precisions_cholesky_from_covariances(covariances, covariance_type):
    """Return the Cholesky factors of the precisions for the given covariances.

    Raises
    ------
    ValueError
        If a covariance is not positive-definite; the message says how to fix it.
    """
    if covariance_type == "full":
        return np.stack([_inverse_upper_cholesky(cov) for cov in covariances])
    if covariance_type == "tied":
        return _inverse_upper_cholesky(covariances)
    if np.any(covariances <= 0.0):
        raise ValueError(ILL_DEFINED_COVARIANCE)
    return 1.0 / np.sqrt(covariances)


def _upper_cholesky(precision):
    """Return upper-triangular ``U`` with ``precision = U @ U.T`` (flip, lower Cholesky, flip)."""
    flipped = precision[::-1, ::-1]
    return np.linalg.cholesky(flipped)[::-1, ::-1].copy()


def precisions_cholesky_from_precisions(precisions, covariance_type):
    """Return the Cholesky factors of user-given precisions."""
    if covariance_type == "full":
        return np.stack([_upper_cholesky(precision) for precision in precisions])
    if covariance_type == "tied":
        return _upper_cholesky(precisions)
    return np.sqrt(precisions)


def precisions_from_cholesky(precisions_cholesky, covariance_type):
    """Return the precision matrices ``U @ U.T`` (or squares for diag/spherical)."""
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", precisions_cholesky, precisions_cholesky)
    if covariance_type == "tied":
        return precisions_cholesky @ precisions_cholesky.T
    return precisions_cholesky**2


def covariances_from_cholesky(precisions_cholesky, covariance_type):
    """Return covariances from precision Cholesky factors (used after ``precisions_init``)."""
    if covariance_type == "full":
        return np.stack([_covariance_of_factor(factor) for factor in precisions_cholesky])
    if covariance_type == "tied":
        return _covariance_of_factor(precisions_cholesky)
    return 1.0 / precisions_cholesky**2


def _covariance_of_factor(factor):
    from scipy.linalg import solve_triangular

    inverse = solve_triangular(factor, np.eye(factor.shape[0]), lower=False)
    return inverse.T @ inverse


def log_det_cholesky(precisions_cholesky, covariance_type, n_features):
    """Return ``log det U`` per component (half the log-determinant of the precision)."""
    if covariance_type == "full":
        diagonals = np.diagonal(precisions_cholesky, axis1=1, axis2=2)
        return np.sum(np.log(diagonals), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(precisions_cholesky)))
    if covariance_type == "diag":
        return np.sum(np.log(precisions_cholesky), axis=1)
    return n_features * np.log(precisions_cholesky)


def n_parameters(covariance_type, n_components, n_features):
    """Return the number of free parameters of a mixture (for BIC and AIC)."""
    covariance_params = {
        "full": n_components * n_features * (n_features + 1) / 2.0,
        "diag": n_components * n_features,
        "tied": n_features * (n_features + 1) / 2.0,
        "spherical": n_components,
    }[covariance_type]
    return int(covariance_params + n_features * n_components + n_components - 1)


def is_symmetric_positive_definite(matrix):
    """Return True when ``matrix`` is symmetric and all its eigenvalues are positive."""
    return bool(np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0))


def implied_statistics(weights, means, covariances, reg_covar, covariance_type):
    """The M-step undone: statistics per unit weight (about the mixture's mean) from which
    :func:`estimate_gaussian_parameters` gives these parameters back, ``reg_covar`` and all.

    Where online EM continues a model fitted in batch, these stand in for its running
    statistics.
    """
    from .statistics import SufficientStats

    reference = weights @ means
    shift = means - reference
    n_features = means.shape[1]
    unregularised = covariances - (np.eye(n_features) * reg_covar if covariance_type in
                                   ("full", "tied") else reg_covar)
    if covariance_type == "full":
        second = weights[:, None, None] * (unregularised + np.einsum("kd,ke->kde", shift, shift))
    elif covariance_type == "tied":
        second = unregularised + np.einsum("k,kd,ke->de", weights, shift, shift)
    elif covariance_type == "diag":
        second = weights[:, None] * (unregularised + shift ** 2)
    else:
        second = weights * (n_features * unregularised + np.einsum("kd,kd->k", shift, shift))
    first = weights[:, None] * shift
    return SufficientStats(reference=reference, counts=weights.copy(), first=first,
                           second=second, total_weight=1.0, pooled_first=first.sum(axis=0),
                           pooled_count=1.0)
