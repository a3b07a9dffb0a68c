"""Online EM (stepwise EM; Cappé & Moulines 2009): ``partial_fit``, and ``fit`` by mini-batches.

The estimator keeps running sufficient statistics per unit of weight. Each batch's own are
blended in, ``s <- (1 - eta_t) s + eta_t s_batch`` with ``eta_t = (t + offset) ** -decay`` (the
names and schedule of scikit-learn's online LDA: ``learning_decay``, ``learning_offset``), and
the M-step then runs on the blend. A batch's statistics are those a batch-EM pass computes, so a
step costs one pass over the batch alone. The same batches in the same order give the same
bits. ``fit(X)`` with ``learning_method="online"`` is ``partial_fit`` over the waves of
:mod:`daskgmm.waves`: the first wave (or few) initialises, then every later one takes a step, pass
after pass, inside the EM template's loop (so checkpoints and ``resume`` work as for batch EM).
"""

import logging
import time
from dataclasses import dataclass
from functools import partial, reduce
from operator import add

import dask
import numpy as np
from dask import delayed

from .base import EMRun
from .graph import chained_graph, given
from .kernels import em_pass_block, raise_if_nonfinite
from .fit_log import log_iteration, log_run_end
from .statistics import SufficientStats
from .stepwise import blend, per_unit_weight, step_size
from . import validation
from .waves import WavePlan, available_threads, wave_rows

logger = logging.getLogger("daskgmm")

# Steps of an online fit over Dask data run as one graph of at most this many; the fit's state
# is given to its callback (a checkpoint) after each such group. The chunks of a group's waves
# are read ahead of their steps as workers fall idle, so a group bounds the worker memory too.
CHAINED_STEPS = 16
# A k-means cluster needs more than D rows for a regular covariance; 20 times that per
# component leaves room for uneven clusters.
INITIAL_ROWS_PER_PARAMETER = 20


def total_weight(source):
    """The rows' total weight (their number, without weights): one small pass over weights."""
    if source.weights is None:
        return float(source.n_rows)
    total = source.weights.sum()
    return float(total.compute() if hasattr(total, "compute") else total)


def initial_rows(source, batch_size, n_components):
    """The rows of the first waves in the data's order (as many as :func:`initial_waves`
    takes): a bounded sample, for what an online fit needs before its first wave's order."""
    waves = WavePlan.of(source, batch_size).waves(0, 0, shuffle=False)
    count = initial_waves(waves, n_components, source.n_features)
    return wave_rows(source, [piece for wave in waves[:count] for piece in wave])


def initial_waves(waves, n_components, n_features):
    """How many of a pass's first waves an online fit initialises from: the first, or as many
    as give ``INITIAL_ROWS_PER_PARAMETER`` rows per component and feature (plus one), so that
    the clusters it starts from have regular covariances."""
    needed, rows = INITIAL_ROWS_PER_PARAMETER * n_components * (n_features + 1), 0
    for count, wave in enumerate(waves, start=1):
        rows += sum(stop - start for start, stop in wave)
        if rows >= needed:
            return count
    return len(waves)


def order_seed(random_state):
    """A seed for the passes' orders, from ``random_state``'s position without drawing from it:
    the initialisation then draws what ``partial_fit``'s first call draws."""
    _, key, position, _, _ = random_state.get_state()
    return int(np.random.default_rng([*key.tolist(), position]).integers(2 ** 31))


@dataclass
class OnlineState:
    """Where an online fit stands, beside its :class:`~daskgmm.base.EMRun` (whose
    ``lower_bounds`` hold one running bound per step).

    Attributes
    ----------
    seed : int
        Draws every pass's order of pieces (:class:`daskgmm.waves.WavePlan`).
    threads : int
        The threads the waves were cut for (kept, so a resume cuts the same waves).
    running : SufficientStats or None
        The running statistics, per unit weight (at first, those the initial parameters
        imply, with a NaN log-likelihood).
    passes : int
        Passes finished.
    position : int
        The next wave of the running pass (the first pass starts after the waves that
        initialised: :func:`initial_waves`).
    pass_bound : float
        The running bound at the end of the last pass (-inf before the first).
    steps_before : int
        Steps the model had taken before this fit (a warm start's): the schedule goes on.
    total_weight : float
        The data's total weight, which a Bayesian posterior's statistics are scaled to.
    """

    seed: int
    threads: int
    running: SufficientStats = None
    passes: int = 0
    position: int = 0
    pass_bound: float = -np.inf
    steps_before: int = 0
    total_weight: float = 1.0


class ChainedStep(tuple):
    """The parameters a chained wave's block tasks compute first (see :meth:`OnlineMixin._steps`):
    their block arguments ``(density, covariance_type)``, with the running statistics and
    parameters they come from as attributes. Each task returns it beside its partial tree."""

    def __new__(cls, args, running, params):
        step = super().__new__(cls, args)
        step.running, step.params = running, params
        return step

    def __getnewargs__(self):
        return tuple(self), self.running, self.params


class OnlineMixin:
    """``partial_fit`` and ``fit(learning_method="online")`` for an estimator of the EM template
    (:class:`daskgmm.base.BaseMixture`) with the parameters ``learning_method``,
    ``learning_decay``, ``learning_offset``, ``batch_size``, ``max_passes`` and ``shuffle``."""

    def partial_fit(self, X, y=None, sample_weight=None):
        """Take one online EM step on the batch X (the first call initialises from it).

        The first call on an unfitted estimator initialises the parameters from its batch
        (``init_params`` or the ``*_init`` arguments); each later call (or the first on a
        fitted one) blends the batch's statistics into the running ones with the step
        ``(t + learning_offset) ** -learning_decay`` (``t`` counts the steps, from 1) and runs
        the M-step on them. A model fitted in batch starts from the statistics its parameters
        imply. After every call the estimator predicts and scores. ``lower_bound_`` is the
        running estimate of the mean log-likelihood per row: the batches' own under the
        parameters before their step, blended as the statistics are.

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
        self._check_online_params()
        started = hasattr(self, "means_")
        X = validation.check_X(X, n_components=None if started else self.n_components,
                    n_features=self.n_features_in_ if started else None)
        weights = validation.check_sample_weight(sample_weight, X)
        source = validation.row_data(X, weights, self.block_rows)
        weight = total_weight(source)
        if not started:
            self._check_initial_parameters(source)
            random_state = validation.as_random_state(self.random_state)
            params = self._initial_parameters(source, random_state)
            # The first step blends its batch with what the initial parameters imply, so
            # that a small batch cannot leave a component with a singular covariance.
            self.online_statistics_ = self._statistics_of(params, np.nan)
            self.online_steps_, self.lower_bounds_, self.online_weight_ = 0, [], 0.0
            self._set_online(params, source, -np.inf)
            return self
        steps = getattr(self, "online_steps_", 0)
        seen = getattr(self, "online_weight_", None)  # None: a model fitted in batch
        self.online_weight_ = (self._fitted_weight() if seen is None else seen) + weight
        # Absent for a model fitted in batch, or loaded.
        running = self.online_statistics_ if hasattr(self, "online_statistics_") else \
            self._statistics_of(self._get_parameters(), self.lower_bound_)
        self.online_statistics_, params = self._online_step(running, self._get_parameters(),
                                                       source, steps + 1)
        self.online_steps_ = steps + 1
        self.lower_bounds_ = [*getattr(self, "lower_bounds_", []),
                              float(self.online_statistics_.log_likelihood)]
        self._set_online(params, source, self.online_statistics_.log_likelihood)
        return self

    def _check_online_params(self):
        validation.check_estimator_params(self, self._parameter_table)
        if not 0.5 < self.learning_decay <= 1.0:
            raise ValueError("learning_decay must be in (0.5, 1] for online EM to converge; "
                             f"got {self.learning_decay!r}.")

    def _online_step(self, running, params, source, step):
        """One step on the batch ``source``: return the new running statistics and parameters."""
        return self._blended(running, self._e_step(source, params), source.shape(), step)

    def _blended(self, running, stats, shape, step):
        """Blend a batch's ``stats`` in as step ``step``; return the running statistics and
        the parameters of their M-step (``shape``: the batch's RowShape)."""
        eta = step_size(step, self.learning_decay, self.learning_offset)
        running = blend(running, stats, eta, self.covariance_type)
        scale = self._online_scale()
        scaled = running if scale is None else per_unit_weight(running, scale)
        return running, self._m_step(scaled, shape)[0]

    def _online_scale(self):
        """The weight the running statistics stand for in the M-step; None to use them per
        unit weight (a Gaussian mixture's maximum-likelihood M-step does not depend on it)."""
        return None

    def _fitted_weight(self):
        """The weight a model fitted in batch stands for, where its M-step depends on it."""
        return 0.0

    def _steps(self, source, online, run, waves):
        """One step on each of ``waves`` in turn, from ``run``; return each step's running
        statistics and parameters.

        Over Dask data the steps are one graph: each block task of a wave first computes the
        M-step of the wave before from that wave's task results, then its blocks' E-step, so a
        step waits for no round trip to the client, nor for a task of its own (bench/README.md).
        The operations, and so the bits, are partial_fit's.
        """
        first = online.steps_before + run.n_iter + 1
        if not source.is_dask:
            states, state = [], (online.running, run.params)
            for offset, wave in enumerate(waves):
                state = self._online_step(*state, wave_rows(source, wave), first + offset)
                states.append(state)
            return states
        start = ChainedStep(self._pass_args(run.params, source.dtype), online.running,
                            run.params)
        step_fn, before, firsts = given, [start], []
        for offset, wave in enumerate(waves):
            batch = wave_rows(source, wave)
            tasks = chained_graph(batch, em_pass_block, step_fn, before, self.split_every)
            firsts.append(tasks[0])  # its result holds the step before it: see ChainedStep
            step_fn = partial(self._chained_step, batch.shape(), first + offset)
            before = tasks
        *chained, last = dask.compute(*firsts[1:], delayed(step_fn, pure=False)(*before))
        return [(step.running, step.params) for step, _ in chained] + [(last.running,
                                                                        last.params)]

    def _pass_args(self, params, dtype):
        """The block function's arguments of a pass under ``params``."""
        return self._log_density_of(params, dtype), self.covariance_type

    def _chained_step(self, shape, step, *wave):
        """What each block task of a chained wave computes first: the M-step of the wave
        before, from its tasks' results (their arguments, and partial trees)."""
        stats = reduce(add, [tree for _, tree in wave]).result()
        raise_if_nonfinite(stats.n_nonfinite)
        running, params = self._blended(wave[0][0].running, stats, shape, step)
        return ChainedStep(self._pass_args(params, shape.dtype), running, params)

    def _set_online(self, params, source, lower_bound):
        self._set_parameters(params, source.dtype)
        self.n_features_in_ = source.n_features
        self.converged_ = False
        self.n_iter_ = self.online_steps_
        self.lower_bound_ = float(lower_bound)
        self.n_reseeded_ = 0

    # ------------------------------------------------------------- fit(learning_method="online")

    def _streams(self):
        return self.learning_method == "online"

    def _initial_run(self, source, random_state, do_init):
        """An online run at its start: initialised from the first wave only (or warm)."""
        if not self._streams():
            return super()._initial_run(source, random_state, do_init)
        self._check_online_params()
        online = OnlineState(seed=order_seed(random_state), threads=available_threads(source),
                             total_weight=total_weight(source))
        if not do_init:
            run = super()._initial_run(source, random_state, do_init)
            online.running = getattr(self, "online_statistics_", None) or \
                self._statistics_of(run.params, run.start_bound)
            online.pass_bound = run.start_bound
            online.steps_before = getattr(self, "online_steps_", 0)
        else:
            waves = self._plan(source, online).waves(online.seed, 0, self.shuffle)
            online.position = initial_waves(waves, self.n_components, source.n_features)
            first = [piece for wave in waves[:online.position] for piece in wave]
            logger.info("online initialization from %d rows (%d of %d waves)",
                        sum(stop - start for start, stop in first), online.position, len(waves))
            run = EMRun(self._initial_parameters(wave_rows(source, first), random_state))
            online.running = self._statistics_of(run.params, np.nan)
        run.online = online
        return run

    def _plan(self, source, online):
        return WavePlan.of(source, self.batch_size, online.threads)

    def _run_em(self, source, state, callback):
        """Online runs: step through the waves, pass after pass, until ``max_passes`` or
        a pass changes the running bound by less than ``tol``."""
        if not self._streams():
            return super()._run_em(source, state, callback)
        run, started = state.current, time.perf_counter()
        online = run.online
        self.online_weight_ = online.total_weight  # what the steps' M-steps scale to
        plan = self._plan(source, online)
        while online.passes < self.max_passes and not run.converged:
            pass_start = time.perf_counter()
            waves = plan.waves(online.seed, online.passes, self.shuffle)
            while online.position < len(waves):
                group = waves[online.position:online.position + CHAINED_STEPS]
                for online.running, run.params in self._steps(source, online, run, group):
                    run.lower_bounds.append(float(online.running.log_likelihood))
                online.position += len(group)
                callback(state)
            online.passes, online.position = online.passes + 1, 0
            change = run.lower_bound - online.pass_bound
            online.pass_bound = run.lower_bound
            run.converged = abs(change) < self.tol
            log_iteration(self, online.passes, run.lower_bound, change,
                          time.perf_counter() - pass_start)
        log_run_end(self, run.lower_bound, run.converged, time.perf_counter() - started)

    def _set_fitted(self, run, source):
        super()._set_fitted(run, source)
        self.online_steps_ = 0
        for name in ("online_statistics_", "online_weight_"):  # partial_fit: from the model
            self.__dict__.pop(name, None)
        if run.online is not None:
            self.online_weight_ = run.online.total_weight
            self.online_statistics_ = run.online.running
            self.online_steps_ = run.online.steps_before + run.n_iter
            self.n_iter_ = run.online.passes
