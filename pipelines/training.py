"""Fitting for jobs: the rows to fit on, their scaling, and EM in checkpointed single steps.

A job fits by stepping: one warm-started EM iteration per ``fit`` call, convergence judged across
steps with the estimator's own rule (stop when the lower bound changes by less than ``tol``).
The state after every step (the model, the lower bounds so far, the initialisation being run and
the best one finished) can be saved, so a resumed job continues exactly where a killed one
stopped. A job always steps, checkpoint or not, so that a resumed fit and an uninterrupted one
perform the very same floating-point operations and end at the same model.
"""

import hashlib
import json
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from daskgmm import ConvergenceWarning, GaussianMixture
from daskgmm.atomic import remove_dead_staging
from daskgmm.config import ConfigError
from daskgmm.guard import Guard
from daskgmm.store import CHECKPOINT, read_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)

# Rows per chunk of a drawn sample: fixed, so the EM reduction tree (and so every bit of the
# result) does not depend on the cluster a job runs on.
SAMPLE_CHUNK_ROWS = 65536


@dataclass
class Standardizer:
    """Per-feature centring and scaling learnt from the rows a model is fitted on.

    Attributes
    ----------
    center : ndarray of shape (n_features,)
    scale : ndarray of shape (n_features,)
    """

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows, compute):
        """Learn the mean and standard deviation of every column of a Dask array of rows."""
        center, scale = compute(rows.mean(axis=0), rows.std(axis=0))
        scale = np.where(scale > 0, scale, 1.0)
        return cls(np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64))

    def transform(self, rows):
        """Return ``(rows - center) / scale`` (lazily for Dask rows)."""
        return (rows - self.center) / self.scale

    def inverse(self, rows):
        """Map standardized rows (e.g. a model's means) back to the input's units."""
        return np.asarray(rows) * self.scale + self.center

    def to_attrs(self):
        """Return the scaling as JSON-ready attributes, to store with the model."""
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_attrs(cls, attrs):
        """Rebuild the scaling stored by :meth:`to_attrs`, or None when there is none."""
        if not attrs:
            return None
        return cls(np.asarray(attrs["center"]), np.asarray(attrs["scale"]))


def transform(scaler, rows):
    """Apply ``scaler`` to ``rows`` when there is one."""
    return rows if scaler is None else scaler.transform(rows)


def _draw(valid, size, seed):
    """Keep about ``size`` of the ``valid`` rows at random, the same ones on every run.

    Dask's seeded random arrays derive one generator per chunk from ``seed``, so the draw depends
    only on the seed and the chunks, not on which worker runs which chunk.
    """
    (n_valid,) = da.compute(valid.sum())
    if size >= n_valid:
        return valid
    draws = da.random.default_rng(seed).random(valid.shape[0], chunks=valid.chunks)
    return valid & (draws < size / int(n_valid))


def sample_rows(rows, valid, size, seed):
    """Return the rows to fit on: the valid ones, or about ``size`` of them drawn at random.

    The same rows are drawn on every run and on every cluster. A drawn sample is persisted on
    the cluster, in chunks of :data:`SAMPLE_CHUNK_ROWS` rows; all valid rows stay lazy (read
    from the source on every pass), in the source's chunks.

    Parameters
    ----------
    rows : dask.array.Array of shape (n_rows, n_features)
    valid : dask.array.Array of shape (n_rows,) of bool, or None for all rows
    size : int or None
        How many rows to draw (about); None for all valid rows.
    seed : int
    """
    if size is not None and (valid is not None or size < rows.shape[0]):
        if valid is None:
            valid = da.ones(rows.shape[0], dtype=bool, chunks=(rows.chunks[0],))
        valid = _draw(valid.rechunk((rows.chunks[0],)), size, seed)
        sample = rows[valid].persist()
        sample.compute_chunk_sizes()
        return sample.rechunk({0: SAMPLE_CHUNK_ROWS}).persist()
    if valid is None:
        return rows
    valid_rows = rows[valid.rechunk((rows.chunks[0],))]
    valid_rows.compute_chunk_sizes()
    return valid_rows.rechunk({0: tuple(size for size in valid_rows.chunks[0] if size)})


def fingerprint(*sections):
    """Return a short hash of config sections: a checkpoint is resumed only by the same job."""
    text = json.dumps([section.to_dict() for section in sections], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    """Where and how often a job saves its fitting state, and which job it belongs to.

    Disabled, it never touches ``path``. Enabled, every write and the final removal go through
    ``guard``: only a checkpoint daskgmm wrote, holding nothing else, is replaced or deleted.
    """

    path: str
    every: int
    fingerprint: str
    enabled: bool = True
    guard: Guard = field(default_factory=Guard)

    def load(self):
        """Return ``(models, state)`` saved by this job, None if there is no checkpoint.

        Raises
        ------
        ConfigError
            If the checkpoint was written by a job with a different input, model or training,
            or cannot be read.
        """
        if not self.enabled:
            return None
        self.guard.check(self.path, "checkpoint", CHECKPOINT, replace=True)
        try:
            saved = read_checkpoint(self.path, GaussianMixture)
        except Exception as error:  # zarr's or the model's own errors for a damaged folder
            raise ConfigError(f"cannot read {self.path} ({type(error).__name__}: {error}); "
                              "delete it, or rerun without --resume to start over",
                              "checkpoint") from None
        if saved is None:
            return None
        models, state = saved
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.path} was written by a job with another input, model or "
                              "training section; delete it, or rerun without --resume to start "
                              "over", "checkpoint")
        return models, state

    def save(self, models, state, step=None):
        """Save the state (when enabled, and at every ``every``-th step when ``step`` is given)."""
        if not self.enabled or (step is not None and step % self.every):
            return
        path = self.guard.check(self.path, "checkpoint", CHECKPOINT, replace=True)
        write_checkpoint(path, models, {**state, "fingerprint": self.fingerprint})

    def remove(self):
        """Delete the checkpoint (after the job's output is committed)."""
        if self.enabled:
            self.guard.remove(self.path, "checkpoint", CHECKPOINT)
            self.discard_partial()

    def discard_partial(self):
        """Delete half-written checkpoints a killed job left (the last complete one stays)."""
        if self.enabled:
            path = self.guard.check(self.path, "checkpoint", CHECKPOINT, replace=True)
            remove_dead_staging(path.parent, CHECKPOINT, path.name)


@dataclass
class EMState:
    """Where a stepped fit is: the initialisation running, its model and bounds, the best so far."""

    init: int = 0
    current: GaussianMixture = None
    lower_bounds: list = field(default_factory=list)
    best: GaussianMixture = None

    def models(self):
        named = {"current": self.current, "best": self.best}
        return {name: model for name, model in named.items() if model is not None}

    def attrs(self):
        return {"init": self.init, "lower_bounds": self.lower_bounds}

    @classmethod
    def restore(cls, models, state):
        """Rebuild the state from what :meth:`Checkpoint.load` returned."""
        return cls(init=state["init"], current=models.get("current"),
                   lower_bounds=list(state["lower_bounds"]), best=models.get("best"))


def estimator(config, **overrides):
    """Return an unfitted GaussianMixture with the ``model`` section's parameters."""
    params = {
        "n_components": config.n_components,
        "covariance_type": config.covariance_type,
        "tol": config.tol,
        "reg_covar": config.reg_covar,
        "max_iter": config.max_iter,
        "n_init": config.n_init,
        "init_params": config.init_params,
        "random_state": config.random_state,
        "split_every": config.split_every,
    }
    return GaussianMixture(**{**params, **overrides})


def _initial_model(X, config, init):
    """The model right after initialisation ``init`` (before any EM iteration)."""
    seed = config.random_state
    if init > 0:  # the first one matches GaussianMixture(random_state=seed); later ones differ
        seed = np.random.default_rng(np.random.SeedSequence([config.random_state, init]))
    return estimator(config, max_iter=0, n_init=1, random_state=seed).fit(X)


def em_step(model, X):
    """Run one EM iteration from the model's current parameters (sets ``converged_``)."""
    model.set_params(warm_start=True, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)


class _HideEstimatorLog(logging.Filter):
    def filter(self, record):
        return record.name != "daskgmm"


@contextmanager
def _own_iteration_log():
    """Hide the estimator's own lines (each one-step fit would call itself iteration 1).

    A filter on the "daskgmm" logger drops only records logged on it, not those of its children
    (this module's logger), which reach the same handlers.
    """
    hide = _HideEstimatorLog()
    logging.getLogger("daskgmm").addFilter(hide)
    try:
        yield
    finally:
        logging.getLogger("daskgmm").removeFilter(hide)


def _run_em(X, config, state, checkpoint):
    """Step the current initialisation until it converges or reaches ``max_iter``."""
    model = state.current
    while len(state.lower_bounds) < config.max_iter and not model.converged_:
        started = time.perf_counter()
        previous = model.lower_bound_
        em_step(model, X)
        state.lower_bounds.append(model.lower_bound_)
        _record_run(model, state.lower_bounds)
        checkpoint.save(state.models(), state.attrs(), step=len(state.lower_bounds))
        logger.info("iteration %d lower bound %.10g change %.3g (%.3fs)", len(state.lower_bounds),
                    model.lower_bound_, model.lower_bound_ - previous,
                    time.perf_counter() - started)
    if config.max_iter and not model.converged_:
        logger.warning("initialisation %d did not converge in %d iterations; raise model.max_iter "
                       "or model.tol", state.init, config.max_iter)


def _record_run(model, lower_bounds):
    model.n_iter_ = len(lower_bounds)
    model.lower_bounds_ = list(lower_bounds)


def fit_mixture(X, config, checkpoint, state=None):
    """Fit a GaussianMixture by checkpointed EM steps; the best of ``n_init`` runs wins.

    Parameters
    ----------
    X : dask.array.Array of shape (n_rows, n_features)
        The (persisted) rows to fit on.
    config : ModelConfig
    checkpoint : Checkpoint
    state : EMState, optional
        A resumed state; a fresh fit when None.

    Returns
    -------
    GaussianMixture
        Fitted, with ``n_iter_``, ``lower_bounds_`` and the parameters of ``config``.
    """
    state = state or EMState()
    checkpoint.discard_partial()
    with _own_iteration_log():
        for init in range(state.init, config.n_init):
            state.init = init
            if state.current is None:
                logger.info("initialisation %d of %d", init + 1, config.n_init)
                state.current, state.lower_bounds = _initial_model(X, config, init), []
            _run_em(X, config, state, checkpoint)
            if state.best is None or config.max_iter == 0 or \
                    state.current.lower_bound_ > state.best.lower_bound_:
                state.best = state.current
            state.init, state.current, state.lower_bounds = init + 1, None, []
            checkpoint.save(state.models(), state.attrs())
    best = state.best
    best.set_params(**estimator(config).get_params())
    return best
