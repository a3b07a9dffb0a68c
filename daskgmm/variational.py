"""The variational Gaussian mixture's algebra: priors, posterior updates and the lower bound.

The model is scikit-learn's ``BayesianGaussianMixture``: a Dirichlet distribution or a
Dirichlet process (stick-breaking) on the weights, and a Normal-Wishart on each component's mean
and precision. Everything here is small NumPy on the client; it reads the same sufficient
statistics as EM's M-step (:mod:`daskgmm.statistics`), so one pass over the data per iteration
suffices. Formulas: Bishop (2006), ch. 10.2, and Blei & Jordan (2006), in scikit-learn's
parametrisation, so that equal inputs give equal numbers.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, digamma, gammaln

from . import covariance as cov
from .kernels import log_det_cholesky


@dataclass
class Priors:
    """The priors a fit uses, resolved from the parameters (None: from the data's moments)."""

    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: object


@dataclass
class VariationalParams:
    """One variational posterior, kept in float64 during fitting."""

    weight_concentration: object  # (K,) array, or a pair of (K,) arrays for the process
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: object  # (K,) array, or a float for 'tied'
    covariances: object
    precisions_cholesky: np.ndarray

    def weights(self):
        """The expected weights (scikit-learn's ``weights_``)."""
        concentration = self.weight_concentration
        if isinstance(concentration, tuple):  # stick-breaking
            a, b = concentration
            stick = a / (a + b)
            rest = np.hstack((1.0, np.cumprod(b / (a + b))[:-1]))
            weights = stick * rest
            return weights / weights.sum()
        return concentration / concentration.sum()

    def reference(self):
        """The mixture mean: the point all per-row work is centred on."""
        weights = self.weights()
        return (weights @ self.means) / weights.sum()


def data_priors(weight_concentration, mean_precision, mean, degrees_of_freedom, covariance,
                moments, n_components, covariance_type):
    """Resolve the priors: the given ones, the defaults for the others.

    ``moments`` is ``(mean, covariance)`` of the data (covariance with ``ddof=1``, as
    ``numpy.cov``), used only for the defaults of ``mean`` and ``covariance``.
    """
    data_mean, data_covariance = moments
    if covariance is None:
        variances = np.diag(data_covariance)
        covariance = {"full": data_covariance, "tied": data_covariance, "diag": variances,
                      "spherical": variances.mean()}[covariance_type]
    return Priors(
        weight_concentration=1.0 / n_components if weight_concentration is None
        else float(weight_concentration),
        mean_precision=1.0 if mean_precision is None else float(mean_precision),
        mean=data_mean if mean is None else np.asarray(mean, dtype=np.float64),
        degrees_of_freedom=len(data_mean) if degrees_of_freedom is None
        else float(degrees_of_freedom),
        covariance=np.asarray(covariance, dtype=np.float64) if covariance_type != "spherical"
        else float(covariance),
    )


def posterior(stats, priors, reg_covar, covariance_type, prior_type, padding):
    """The variational M-step: the posterior given the statistics of an E-step."""
    counts, means, covariances = cov.estimate_gaussian_parameters(
        stats, reg_covar, covariance_type, padding)
    if prior_type == "dirichlet_process":
        tails = np.hstack((np.cumsum(counts[::-1])[-2::-1], 0.0))
        concentration = (1.0 + counts, priors.weight_concentration + tails)
    else:
        concentration = priors.weight_concentration + counts
    mean_precision = priors.mean_precision + counts
    posterior_means = ((priors.mean_precision * priors.mean + counts[:, None] * means)
                       / mean_precision[:, None])
    dof, wishart = _WISHART[covariance_type](counts, means, covariances, mean_precision, priors)
    return VariationalParams(concentration, mean_precision, posterior_means, dof, wishart,
                             cov.precisions_cholesky_from_covariances(wishart, covariance_type))


def _wishart_full(counts, means, covariances, mean_precision, priors):
    dof = priors.degrees_of_freedom + counts
    diff = means - priors.mean
    shrink = counts * priors.mean_precision / mean_precision
    scatter = (priors.covariance + counts[:, None, None] * covariances
               + shrink[:, None, None] * np.einsum("kd,ke->kde", diff, diff))
    return dof, scatter / dof[:, None, None]


def _wishart_tied(counts, means, covariances, mean_precision, priors):
    n_components = len(counts)
    dof = priors.degrees_of_freedom + counts.sum() / n_components
    diff = means - priors.mean
    scatter = (priors.covariance + covariances * counts.sum() / n_components
               + priors.mean_precision / n_components
               * np.dot((counts / mean_precision) * diff.T, diff))
    return dof, scatter / dof


def _wishart_diag(counts, means, covariances, mean_precision, priors):
    dof = priors.degrees_of_freedom + counts
    diff = means - priors.mean
    scatter = priors.covariance + counts[:, None] * (
        covariances + (priors.mean_precision / mean_precision)[:, None] * diff ** 2)
    return dof, scatter / dof[:, None]


def _wishart_spherical(counts, means, covariances, mean_precision, priors):
    dof = priors.degrees_of_freedom + counts
    diff = means - priors.mean
    scatter = priors.covariance + counts * (
        covariances + priors.mean_precision / mean_precision * np.mean(diff ** 2, 1))
    return dof, scatter / dof


_WISHART = {"full": _wishart_full, "tied": _wishart_tied, "diag": _wishart_diag,
            "spherical": _wishart_spherical}


def expected_log_weights(params):
    """``E[log pi_k]`` under the posterior of the weights."""
    concentration = params.weight_concentration
    if isinstance(concentration, tuple):
        a, b = concentration
        digamma_sum = digamma(a + b)
        return (digamma(a) - digamma_sum
                + np.hstack((0.0, np.cumsum(digamma(b) - digamma_sum)[:-1])))
    return digamma(concentration) - digamma(np.sum(concentration))


def log_density_offsets(params, n_features):
    """What turns a Gaussian log-density under ``means`` and ``precisions_cholesky`` into the
    expected one of the posterior: ``E[log pi_k]`` plus the Wishart's terms, per component."""
    dof = params.degrees_of_freedom
    log_lambda = n_features * np.log(2.0) + np.sum(
        digamma(0.5 * (dof - np.arange(n_features)[:, None])), 0)
    return (expected_log_weights(params) - 0.5 * n_features * np.log(dof)
            + 0.5 * (log_lambda - n_features / params.mean_precision))


def expected_log_joint(stats, params, covariance_type):
    """``sum_n w_n sum_k r_nk log rho_nk``: the E-step's weighted log-probabilities under
    ``params`` (those the responsibilities came from), summed from the statistics alone."""
    n_features = stats.first.shape[1]
    precisions = cov.precisions_from_cholesky(params.precisions_cholesky, covariance_type)
    centred = params.means - stats.reference
    constants = (log_density_offsets(params, n_features)
                 + log_det_cholesky(params.precisions_cholesky, covariance_type, n_features)
                 - 0.5 * n_features * np.log(2 * np.pi))
    if covariance_type == "full":
        trace = np.einsum("kde,kde->k", precisions, stats.second).sum()
        cross = np.einsum("kd,kde,ke->", centred, precisions, stats.first)
        square = np.einsum("k,kd,kde,ke->", stats.counts, centred, precisions, centred)
    elif covariance_type == "tied":
        trace = np.sum(precisions * stats.second)
        cross = np.einsum("kd,de,ke->", centred, precisions, stats.first)
        square = np.einsum("k,kd,de,ke->", stats.counts, centred, precisions, centred)
    elif covariance_type == "diag":
        trace = np.sum(precisions * stats.second)
        cross = np.sum(centred * precisions * stats.first)
        square = np.sum(stats.counts[:, None] * centred ** 2 * precisions)
    else:
        trace = np.sum(precisions * stats.second)
        cross = np.sum(precisions[:, None] * centred * stats.first)
        square = np.sum(stats.counts * precisions * np.sum(centred ** 2, 1))
    return float(stats.counts @ constants - 0.5 * (trace - 2.0 * cross + square))


def lower_bound(stats, previous, params, covariance_type):
    """scikit-learn's variational lower bound, once the M-step gave ``params`` from the
    statistics of an E-step under ``previous``."""
    n_features = stats.first.shape[1]
    entropy = stats.log_likelihood - expected_log_joint(stats, previous, covariance_type)
    dof = params.degrees_of_freedom
    log_det = (log_det_cholesky(params.precisions_cholesky, covariance_type, n_features)
               - 0.5 * n_features * np.log(dof))
    # One Wishart per component; 'tied' has one, shared by all.
    log_wishart = float(np.sum(_log_wishart_norm(dof, log_det, n_features)))
    if covariance_type == "tied":
        log_wishart *= len(params.means)
    concentration = params.weight_concentration
    if isinstance(concentration, tuple):
        log_norm_weight = -float(np.sum(betaln(*concentration)))
    else:
        log_norm_weight = float(gammaln(np.sum(concentration)) - np.sum(gammaln(concentration)))
    return (entropy - log_wishart - log_norm_weight
            - 0.5 * n_features * float(np.sum(np.log(params.mean_precision))))


def _log_wishart_norm(dof, log_det_precisions_cholesky, n_features):
    return -(dof * log_det_precisions_cholesky + dof * n_features * 0.5 * math.log(2.0)
             + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, None])), 0))


def implied_statistics(params, priors, reg_covar, covariance_type):
    """The variational M-step undone: statistics per unit weight from which :func:`posterior`
    gives ``params`` back (its counts, data means and covariances solved from the posterior),
    for online steps from a fitted model."""
    counts = params.mean_precision - priors.mean_precision
    means = ((params.mean_precision[:, None] * params.means
              - priors.mean_precision * priors.mean) / counts[:, None])
    diff = means - priors.mean
    shrink = priors.mean_precision / params.mean_precision
    if covariance_type == "full":
        scatter = params.covariances * params.degrees_of_freedom[:, None, None]
        covariances = (scatter - priors.covariance) / counts[:, None, None] - \
            shrink[:, None, None] * np.einsum("kd,ke->kde", diff, diff)
    elif covariance_type == "tied":
        n_components = len(counts)
        scatter = params.covariances * params.degrees_of_freedom
        between = priors.mean_precision / n_components * np.dot(
            (counts / params.mean_precision) * diff.T, diff)
        covariances = (scatter - priors.covariance - between) * n_components / counts.sum()
    elif covariance_type == "diag":
        scatter = params.covariances * params.degrees_of_freedom[:, None]
        covariances = (scatter - priors.covariance) / counts[:, None] - shrink[:, None] * diff ** 2
    else:
        scatter = params.covariances * params.degrees_of_freedom
        covariances = (scatter - priors.covariance) / counts - shrink * np.mean(diff ** 2, 1)
    return cov.implied_statistics(counts / counts.sum(), means, covariances, reg_covar,
                                  covariance_type)
