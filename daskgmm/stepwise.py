"""Stepwise EM's arithmetic on sufficient statistics: the step sizes, statistics moved between
reference points, and the blend of a batch's statistics into the running ones.

Pure NumPy. Running statistics are kept per unit of weight, so a blend is
``(1 - eta) running + eta batch`` whatever the batches' sizes; the M-step of a Gaussian mixture
does not depend on the scale.
"""

import numpy as np

from .statistics import SufficientStats


def step_size(step, decay, offset):
    """The weight of the ``step``-th batch (from 1): ``(step + offset) ** -decay``, at most 1."""
    return min(1.0, float((step + offset) ** -decay))


def recentred(stats, reference, covariance_type):
    """The same statistics, taken about ``reference`` instead of ``stats.reference``."""
    shift = stats.reference - reference  # x - new = (x - old) + shift
    counts, first, second = stats.counts, stats.first, stats.second
    if covariance_type == "full":
        outer = np.einsum("kd,e->kde", first, shift)
        second = second + outer + outer.transpose(0, 2, 1) + \
            counts[:, None, None] * np.outer(shift, shift)
    elif covariance_type == "tied":  # the pooled scatter of all rows
        pooled = np.outer(stats.pooled_first, shift)
        second = second + pooled + pooled.T + stats.pooled_count * np.outer(shift, shift)
    elif covariance_type == "diag":
        second = second + 2.0 * first * shift + counts[:, None] * shift ** 2
    else:
        second = second + 2.0 * first @ shift + counts * (shift @ shift)
    return SufficientStats(
        reference=np.asarray(reference, dtype=np.float64), counts=counts,
        first=first + counts[:, None] * shift, second=second,
        log_likelihood=stats.log_likelihood, total_weight=stats.total_weight,
        pooled_first=stats.pooled_first + stats.pooled_count * shift,
        pooled_count=stats.pooled_count, n_nonfinite=stats.n_nonfinite,
        worst_scores=stats.worst_scores, worst_points=stats.worst_points)


def per_unit_weight(stats, scale=1.0):
    """``stats`` divided by their total weight (times ``scale``): a batch's average."""
    factor = scale / stats.total_weight
    return SufficientStats(
        reference=stats.reference, counts=stats.counts * factor, first=stats.first * factor,
        second=stats.second * factor, log_likelihood=stats.log_likelihood * factor,
        total_weight=scale, pooled_first=stats.pooled_first * factor,
        pooled_count=stats.pooled_count * factor, n_nonfinite=stats.n_nonfinite,
        worst_scores=stats.worst_scores, worst_points=stats.worst_points)


def blend(running, batch, eta, covariance_type):
    """``(1 - eta) running + eta batch``, both per unit weight, about the batch's reference.

    Running statistics implied by initial parameters have no log-likelihood (NaN): the blend's
    is then the batch's.
    """
    if running is None or eta >= 1.0:
        return per_unit_weight(batch)
    blended = (per_unit_weight(recentred(running, batch.reference, covariance_type), 1.0 - eta)
               + per_unit_weight(batch, eta))
    if not np.isfinite(running.log_likelihood):
        blended.log_likelihood = batch.log_likelihood / batch.total_weight
    return blended
