"""The EM loop of daskgmm's mixtures, as a template: restarts, convergence, resume, inference.

As scikit-learn's ``BaseMixture``, :class:`BaseMixture` runs ``n_init`` initialisations, each
until its lower bound settles within ``tol`` or ``max_iter`` is reached, and keeps the best. An
iteration is one pass of the fused per-chunk kernel (:func:`daskgmm.kernels.em_block`) and an
M-step on the merged statistics; a subclass supplies the model's pieces.
"""

import logging
import time
import warnings
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from .engine import map_reduce
from .fit_log import log_iteration, log_run_end, log_run_start
from .inference import FittedMixture
from .init import initial_stats
from .kernels import em_pass_block, raise_if_nonfinite
from .sklearn_compat import BaseEstimator, ConvergenceWarning, DensityMixin
from .threads import single_threaded_blas
from .validation import (
    as_random_state,
    check_estimator_params,
    check_sample_weight,
    check_X,
    row_data,
)


logger = logging.getLogger("daskgmm")


@dataclass
class EMRun:
    """One initialisation's EM iterations: its parameters now and its lower bounds so far.

    Attributes
    ----------
    params : object
        The parameters as the estimator holds them (a GaussianMixture: ``MixtureParams``).
    lower_bounds : list of float
        One per iteration run.
    converged : bool
    n_reseeded : int
        Components re-seeded so far.
    start_bound : float
        What the first iteration's change is measured from (-inf, or a warm start's bound).
    online : object
        An online run's :class:`daskgmm.online.OnlineState`; None for batch EM.
    """

    params: object
    lower_bounds: list = field(default_factory=list)
    converged: bool = False
    n_reseeded: int = 0
    start_bound: float = -np.inf
    online: object = None

    @property
    def n_iter(self):
        """Iterations run so far."""
        return len(self.lower_bounds)

    @property
    def lower_bound(self):
        """The last iteration's lower bound (-inf before the first)."""
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf

    def record(self, lower_bound, tol):
        """Add an iteration's lower bound; return its change (converged: less than ``tol``)."""
        previous = self.lower_bounds[-1] if self.lower_bounds else self.start_bound
        self.lower_bounds.append(lower_bound)
        change = lower_bound - previous
        self.converged = abs(change) < tol
        return change


@dataclass
class FitState:
    """Where a fit stands: enough to watch it, save it and resume it to the same model.

    Given to ``fit``'s callback after every EM iteration and at the end of every
    initialisation; ``fit(X, resume=state)`` continues from it.

    Attributes
    ----------
    init : int
        The initialisation running (from 0); ``n_init`` once all have finished.
    current : EMRun or None
        The running initialisation; None between two.
    best : EMRun or None
        The best finished initialisation so far.
    random_state : tuple or None
        ``RandomState.get_state()`` after the running initialisation was drawn, so that the
        later ones draw what they would have drawn.
    """

    init: int
    current: EMRun = None
    best: EMRun = None
    random_state: tuple = None


class BaseMixture(FittedMixture, DensityMixin, BaseEstimator, metaclass=ABCMeta):
    """Base of daskgmm's mixture estimators: the one EM loop (inference from its result is
    :class:`daskgmm.inference.FittedMixture`'s).

    A subclass has the parameters of :class:`~daskgmm.GaussianMixture` that the loop reads
    (``n_components``, ``covariance_type``, ``tol``, ``max_iter``, ``n_init``, ``random_state``,
    ``warm_start``, ``verbose``, ``verbose_interval``, ``persist``, ``split_every``,
    ``block_rows``), a ``_parameter_table`` (name to :class:`daskgmm.options.Parameter`,
    checked as a fit starts) and the abstract methods. Only the subclass looks inside the
    parameters object its :meth:`_initial_parameters` and :meth:`_m_step` return.
    """

    @abstractmethod
    def _check_initial_parameters(self, source):
        """Check the user's initial values (and priors) against the data (the engine's
        RowData), once per fit."""

    @abstractmethod
    def _initial_parameters(self, source, random_state):
        """Return a new initialisation's parameters, drawn from ``source`` (the engine's
        RowData) with ``random_state`` (a RandomState all initialisations draw from in turn)."""

    @abstractmethod
    def _log_density_of(self, params, dtype):
        """Return the E-step's coefficients for ``params`` on blocks of ``dtype``.

        A :class:`~daskgmm.kernels.LogDensity`: what the per-chunk kernels need for each row's
        weighted log density under every component (responsibilities, labels, scores).
        """

    @abstractmethod
    def _m_step(self, stats, source):
        """Return ``(params, n_reseeded)``: new parameters from merged sufficient statistics.

        ``stats`` are the :class:`~daskgmm.statistics.SufficientStats` of a pass under the
        last parameters; ``n_reseeded`` counts components restarted (0 if the model never does).
        """

    @abstractmethod
    def _compute_lower_bound(self, stats, previous, params):
        """Return the quantity EM maximises, once the M-step gave ``params`` from ``stats``
        (the statistics of an E-step under ``previous``).

        Its change is compared with ``tol``; the initialisation with the largest last one wins.
        """

    @abstractmethod
    def _get_parameters(self):
        """Return the fitted parameters, in float64 as the loop holds them while fitting."""

    @abstractmethod
    def _set_parameters(self, params, dtype):
        """Set the fitted parameter attributes (``weights_``, ``means_``, ...) in ``dtype``."""

    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the model parameters with the EM algorithm.

        Parameters
        ----------
        X : array-like, dask.array.Array, zarr.Array or str of shape (n_samples, n_features)
            Training data; a string is a Zarr store path or URL. Dask and Zarr data are
            streamed chunk by chunk and never gathered. Also a DataArray or a dask DataFrame:
            see :func:`daskgmm.array_inputs.as_array`.
        y : Ignored
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None
            Non-negative weights of the rows (2 counts a row twice). Weights all below the
            smallest normal number of X's float dtype are first scaled by a power of two.
        callback : callable, optional
            Called as ``callback(state)`` with a :class:`FitState` after every EM iteration and
            at the end of every initialisation: a place to watch a fit, or save its state. An
            exception raised there stops the fit.
        resume : FitState, optional
            A state a callback was given: the fit continues from it and ends at the model the
            uninterrupted fit reaches, to the last bit (same X, weights and parameters).

        Returns
        -------
        self : object
        """
        check_estimator_params(self, self._parameter_table)
        # A warm start continues from the fitted parameters, so X must have their features.
        n_features = self.n_features_in_ if self._warm_starts() else None
        X = check_X(X, n_components=self.n_components, n_features=n_features)
        weights = check_sample_weight(sample_weight, X)
        if self.persist and isinstance(X, da.Array) and not self._streams():
            X, weights = X.persist(), None if weights is None else weights.persist()
        self._fit_source(row_data(X, weights, self.block_rows), callback or _unwatched, resume)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit the model to X and return the most probable component of every row.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        self.fit(X, sample_weight=sample_weight)
        return self.predict(X)

    def _streams(self):
        """Whether ``fit`` reads the data by mini-batches (online), not whole every pass."""
        return False

    def _warm_starts(self):
        """Whether the next ``fit`` starts from the fitted parameters."""
        return self.warm_start and hasattr(self, "converged_")

    def _fit_source(self, source, callback, resume=None):
        """The EM loop: ``n_init`` initialisations, each iterated to convergence, the best kept."""
        self._check_initial_parameters(source)
        do_init = not self._warm_starts()
        n_init = self.n_init if do_init else 1
        random_state = as_random_state(self.random_state)
        state = resume or FitState(init=0)
        if state.random_state is not None:  # resumed: later draws continue from there
            random_state.set_state(state.random_state)
        # One BLAS thread for the client's small M-step algebra too (see single_threaded_blas).
        with single_threaded_blas():
            for init in range(state.init, n_init):
                state.init = init
                if state.current is None:
                    log_run_start(self, init)
                    state.current = self._initial_run(source, random_state, do_init)
                    state.random_state = random_state.get_state()
                self._run_em(source, state, callback)
                state.best = self._better_run(state.best, state.current)
                state.init, state.current = init + 1, None
                callback(state)
        self._set_fitted(state.best, source)
        if not self.converged_ and self.max_iter > 0 and not self._streams():
            warnings.warn("Best performing initialization did not converge. Try different init "
                          "parameters, or increase max_iter, tol, or check for degenerate data.",
                          ConvergenceWarning)

    def _initial_run(self, source, random_state, do_init):
        """A run at its start: drawn parameters, or the fitted ones for a warm start."""
        if do_init:
            return EMRun(self._initial_parameters(source, random_state))
        return EMRun(self._get_parameters(), start_bound=self.lower_bound_)

    def _better_run(self, best, run):
        """The run of the larger lower bound; as in scikit-learn, the last if max_iter is 0."""
        if best is None or self.max_iter == 0 or run.lower_bound > best.lower_bound:
            return run
        return best

    def _run_em(self, source, state, callback):
        """Iterate ``state.current`` until it converges or reaches ``max_iter``."""
        run = state.current
        started = time.perf_counter()
        while run.n_iter < self.max_iter and not run.converged:
            iteration_start = time.perf_counter()
            previous = run.params
            stats = self._e_step(source, previous)
            run.params, reseeded = self._m_step(stats, source)
            run.n_reseeded += reseeded
            change = run.record(self._compute_lower_bound(stats, previous, run.params), self.tol)
            callback(state)
            log_iteration(self, run.n_iter, run.lower_bound, change,
                          time.perf_counter() - iteration_start)
        log_run_end(self, run.lower_bound, run.converged, time.perf_counter() - started)

    def _initial_stats(self, source, random_state):
        """The statistics of one pass under ``init_params``' initial responsibilities, logged."""
        started, passes = time.perf_counter(), source.n_passes
        stats = initial_stats(source, self.n_components, self.init_params, self.covariance_type,
                              random_state, self.split_every)
        logger.info("initialization %s: %d passes over the data (%.3fs)", self.init_params,
                    source.n_passes - passes, time.perf_counter() - started)
        raise_if_nonfinite(stats.n_nonfinite)
        return stats

    def _e_step(self, source, params):
        """One pass over the data: the merged sufficient statistics of the E-step under params."""
        density = self._log_density_of(params, source.dtype)
        stats = map_reduce(source, em_pass_block, density, self.covariance_type,
                           split_every=self.split_every)
        raise_if_nonfinite(stats.n_nonfinite)
        return stats

    def _set_fitted(self, run, source):
        self._set_parameters(run.params, source.dtype)
        self.converged_ = run.converged
        self.n_iter_ = run.n_iter
        self.lower_bound_ = float(run.lower_bound)
        self.lower_bounds_ = [float(bound) for bound in run.lower_bounds]
        self.n_features_in_ = source.n_features
        self.n_reseeded_ = run.n_reseeded


def _unwatched(state):
    """The callback of a fit nobody watches."""
