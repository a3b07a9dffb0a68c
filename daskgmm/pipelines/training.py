"""Fitting for jobs: the rows to fit on, their scaling, and the checkpoint of the fit.

A job fits with the estimator's own EM loop; the checkpoint is the loop's callback, saving its
:class:`~daskgmm.mixture.FitState` as it goes, so a resumed job continues exactly where a killed
one stopped and ends at the estimator's model, to the bit.
"""

import hashlib
import json
import logging
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from daskgmm import GaussianMixture
from daskgmm.atomic import remove_dead_staging
from daskgmm.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    exists as checkpoint_exists,
    read_checkpoint,
    read_fit_state,
    write_checkpoint,
    write_fit_state,
)
from daskgmm.config import ConfigError
from daskgmm.guard import Guard
from daskgmm.storage import is_url
from daskgmm.store import read_attrs

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
        """Learn the mean and standard deviation of every column of a NumPy or Dask array of rows
        (``compute`` computes the Dask ones)."""
        moments = rows.mean(axis=0), rows.std(axis=0)
        center, scale = compute(*moments) if isinstance(rows, da.Array) else moments
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

    def clear(self):
        """Check with the job's guard that the checkpoint may be written; return its real path."""
        return self.guard.check(self.path, "checkpoint", CHECKPOINT, replace=True)

    def load(self):
        """Return what this job saved: a FitState (a fit) or ``(models, state)`` (a grid).

        None if there is no checkpoint (or checkpoints are off).

        Raises
        ------
        ConfigError
            If the checkpoint was written by a job with a different input, model or training,
            or cannot be read.
        """
        if not self.enabled:
            return None
        self.clear()
        try:
            saved, fingerprint = self._read()
        except Exception as error:  # zarr's or the model's own errors for a damaged folder
            raise ConfigError(f"cannot read {self.path} ({type(error).__name__}: {error}); "
                              "delete it, or rerun without --resume to start over",
                              "checkpoint") from None
        if saved is not None and fingerprint != self.fingerprint:
            raise ConfigError(f"{self.path} was written by a job with another input, model or "
                              "training section; delete it, or rerun without --resume to start "
                              "over", "checkpoint")
        return saved

    def _read(self):
        if not checkpoint_exists(self.path):
            return None, None
        if read_attrs(self.path).get("format") == CHECKPOINT_FORMAT:
            state, extra = read_fit_state(self.path)
            return state, extra.get("fingerprint")
        models, state = read_checkpoint(self.path, GaussianMixture)
        return (models, state), state.get("fingerprint")

    def save(self, models, state):
        """Save named models and a JSON ``state`` (a grid's progress), when enabled."""
        if self.enabled:
            write_checkpoint(self.clear(), models, {**state, "fingerprint": self.fingerprint})

    def save_fit(self, state):
        """A ``fit`` callback: save the fit's state every ``every`` iterations and at the end
        of every initialisation, when enabled."""
        if not self.enabled or (state.current is not None and state.current.n_iter % self.every):
            return
        write_fit_state(self.clear(), state, {"fingerprint": self.fingerprint})

    def remove(self):
        """Delete the checkpoint (after the job's output is committed)."""
        if self.enabled:
            self.guard.remove(self.path, "checkpoint", CHECKPOINT)
            self.discard_partial()

    def discard_partial(self):
        """Delete half-written checkpoints a killed job left (the last complete one stays)."""
        if self.enabled:
            path = self.clear()
            if not is_url(path):  # in a bucket, the next write's claim deletes them
                remove_dead_staging(path.parent, CHECKPOINT, path.name)


def estimator(config, **overrides):
    """Return an unfitted mixture (``model.kind``'s) with the ``model`` section's parameters."""
    return config.estimator(**overrides)


def fit_mixture(X, config, checkpoint, resumed=None, training=None):
    """Fit the ``model`` section's mixture on X with the estimator's own loop (online EM when
    the ``training`` section says so).

    Parameters
    ----------
    X : dask.array.Array of shape (n_rows, n_features)
        The (persisted) rows to fit on.
    config : ModelConfig
    checkpoint : Checkpoint
        Saves the fit's state as it goes.
    resumed : FitState, optional
        The state a killed job saved: the fit continues from it to the uninterrupted model.
    training : TrainingConfig, optional

    Returns
    -------
    GaussianMixture
    """
    checkpoint.discard_partial()
    online = {} if training is None else training.estimator_params()
    return estimator(config, **online).fit(X, callback=checkpoint.save_fit, resume=resumed)
