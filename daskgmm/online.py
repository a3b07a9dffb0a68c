"""Online EM (stepwise EM; Cappé & Moulines 2009): ``partial_fit``, one step per mini-batch.

The estimator keeps running sufficient statistics per unit of weight. Each batch's own are
blended in, ``s <- (1 - eta_t) s + eta_t s_batch`` with ``eta_t = (t + offset) ** -decay`` (the
names and schedule of scikit-learn's online LDA: ``learning_decay``, ``learning_offset``), and
the M-step then runs on the blend. A batch's statistics are those a batch-EM pass computes, so a
step costs one pass over the batch alone. The same batches in the same order give the same
bits.
"""

import numpy as np

from .statistics import SufficientStats
from .validation import as_random_state, check_sample_weight, check_X, row_data


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
    """``(1 - eta) running + eta batch``, both per unit weight, about the batch's reference."""
    if running is None or eta >= 1.0:
        return per_unit_weight(batch)
    return (per_unit_weight(recentred(running, batch.reference, covariance_type), 1.0 - eta)
            + per_unit_weight(batch, eta))


class OnlineMixin:
    """``partial_fit`` for an estimator of the EM template (:class:`daskgmm.base.BaseMixture`)
    with ``learning_decay`` and ``learning_offset`` parameters."""

    def partial_fit(self, X, y=None, sample_weight=None):
        """Take one online EM step on the batch X (the first call initialises from it).

        The first call initialises the parameters from its batch (``init_params`` or the
        ``*_init`` arguments); each later call blends the batch's statistics into the running
        ones with the step ``(t + learning_offset) ** -learning_decay`` (``t`` counts the steps,
        from 1) and runs the M-step on them. After every call the estimator predicts and scores.
        ``lower_bound_`` is the running estimate of the mean log-likelihood per row: the batches'
        own under the parameters before their step, blended as the statistics are.

        Parameters
        ----------
        X : array-like, dask.array.Array or zarr.Array of shape (n_samples, n_features)
            A batch; its width must be the first batch's.
        y : Ignored
        sample_weight : array-like or dask.array.Array of shape (n_samples,), optional

        Returns
        -------
        self : object
        """
        from .validation import check_estimator_params

        check_estimator_params(self, self._parameter_table)
        if not 0.5 < self.learning_decay <= 1.0:
            raise ValueError("learning_decay must be in (0.5, 1] for online EM to converge; "
                             f"got {self.learning_decay!r}.")
        started = hasattr(self, "online_steps_")
        X = check_X(X, n_components=None if started else self.n_components,
                    n_features=self.n_features_in_ if started else None)
        source = row_data(X, check_sample_weight(sample_weight, X), self.block_rows)
        if not started:
            self._check_initial_parameters(source)
            params = self._initial_parameters(source, as_random_state(self.random_state))
            self._online_stats, self.online_steps_, self.lower_bounds_ = None, 0, []
            self._set_online(params, source, -np.inf)
            return self
        params = self._get_parameters()
        stats = self._e_step(source, params)
        eta = step_size(self.online_steps_ + 1, self.learning_decay, self.learning_offset)
        self._online_stats = blend(self._online_stats, stats, eta, self.covariance_type)
        self.online_steps_ += 1
        new_params, _ = self._m_step(self._online_stats, source)
        self.lower_bounds_.append(float(self._online_stats.log_likelihood))
        self._set_online(new_params, source, self._online_stats.log_likelihood)
        return self

    def _set_online(self, params, source, lower_bound):
        self._set_parameters(params, source.dtype)
        self.n_features_in_ = source.n_features
        self.converged_ = False
        self.n_iter_ = self.online_steps_
        self.lower_bound_ = float(lower_bound)
        self.n_reseeded_ = 0
