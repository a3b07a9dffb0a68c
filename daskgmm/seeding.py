"""Random rows of a block, drawn for the initialisation: weighted row samples and k-means++ trials.

Pure NumPy; these are the block functions of the sampling passes (``block_fn(block,
row_weights, position, *args)``). A row of mass ``m`` gets the key ``log(E / m)``, ``E``
standard exponential (a logarithm, so that subnormal weights neither overflow the key nor
underflow the mass; ``E / m``, the same order, without weights), and a sample is the rows
with the lowest keys: drawn with probability
proportional to ``m`` without replacement (Efraimidis and Spirakis), and mergeable over blocks
by keeping the lowest keys again (:class:`RowSample`). Every row gets a key, even without
weights: so equal weights draw the very rows no weights draw, and fit the same model. A block
is worked on one slice of rows at a time, in its own float dtype
(:mod:`daskgmm.distances`); its keys come from a generator seeded by ``(seed, block)``, so a
sample depends on the seed and the chunking, never on scheduling.
"""

from dataclasses import dataclass

import numpy as np

from .distances import CenterTerms, center_scores, centred_rows, row_norms
from .kernels import as_float_block, count_nonfinite_rows
from .lowest import LowestRows, lowest, merge_lowest
from .slices import row_slices, slice_length


def block_rng(seed, position):
    """The random generator of one block of a pass: seeded by the pass's seed and the block."""
    return np.random.default_rng([seed, position.index])


@dataclass
class RowSample:
    """The rows with the lowest keys seen so far, with their values and row weights.

    Also carries what the pass saw of all rows: the sum of their weights and how many hold NaN
    or infinity.
    """

    keys: np.ndarray
    rows: np.ndarray
    points: np.ndarray
    weights: np.ndarray
    keep: int
    total_weight: float = 0.0
    n_nonfinite: int = 0

    def __add__(self, other):
        keys, payload = merge_lowest((self.keys, self._payload()), (other.keys, other._payload()),
                                     self.keep)
        return RowSample(keys, payload[:, 0].astype(np.int64), payload[:, 2:], payload[:, 1],
                         self.keep, self.total_weight + other.total_weight,
                         self.n_nonfinite + other.n_nonfinite)

    def _payload(self):
        return np.column_stack([self.rows, self.weights, self.points])


def _block_sample(block, row_weights, position, chosen, keys, keep, n_nonfinite):
    """The :class:`RowSample` of a block's rows ``chosen`` with ``keys``; infinite keys (rows of
    zero mass) are never drawn."""
    drawn = np.isfinite(keys)
    chosen, keys = chosen[drawn], keys[drawn]
    weights = np.ones(len(chosen)) if row_weights is None else row_weights[chosen]
    total_weight = len(block) if row_weights is None else np.sum(row_weights, dtype=float)
    return RowSample(keys, position.start + chosen, np.asarray(block[chosen], dtype=np.float64),
                     np.asarray(weights, dtype=np.float64), keep, float(total_weight),
                     n_nonfinite)


def _slice_nonfinite(rows, values):
    """Rows of a slice holding NaN or infinity, counted only if ``values`` (computed from the
    rows, one per row or the rows themselves) are not all finite."""
    return 0 if np.isfinite(values).all() else count_nonfinite_rows(rows)


def _count_nonfinite(block):
    step = slice_length(block.shape[1], len(block))
    return sum(_slice_nonfinite(block[rows], block[rows]) for rows in row_slices(len(block), step))


def _closest_distances(block, terms):
    """Each row's squared distance to its nearest centre (float64), one slice at a time, and
    how many rows are not finite."""
    closest = np.empty(len(block))
    n_nonfinite = 0
    for rows in row_slices(len(block), slice_length(block.shape[1] + terms.n_centers, len(block))):
        centred = centred_rows(block[rows], terms.reference)
        values = center_scores(centred, terms).min(axis=0) + row_norms(centred)
        np.maximum(values, 0.0, out=closest[rows])
        n_nonfinite += _slice_nonfinite(block[rows], values)
    return closest, n_nonfinite


def sample_block(block, row_weights, position, seed, keep, centers, bound=np.inf):
    """Draw the block's ``keep`` rows with the lowest keys ``log(E / m)``, among those whose
    key is at most ``bound``.

    The mass ``m`` of a row is its weight (1 without weights), times its squared distance to
    the nearest of ``centers`` unless ``centers`` is None (k-means++'s ``D^2`` weighting).
    """
    block = as_float_block(block)
    exponentials = block_rng(seed, position).standard_exponential(len(block))
    if centers is None:
        keys = _keys(exponentials, 1.0, row_weights)
        n_nonfinite = _count_nonfinite(block)
    else:
        closest, n_nonfinite = _closest_distances(block, CenterTerms.of(centers, block.dtype))
        keys = _keys(exponentials, closest, row_weights)
    chosen = np.arange(len(keys)) if bound == np.inf else np.flatnonzero(keys <= bound)
    chosen = chosen[lowest(keys[chosen], keep)]
    return _block_sample(block, row_weights, position, chosen, keys[chosen], keep, n_nonfinite)


def _keys(exponentials, mass, row_weights, weight_scale=1.0):
    """Keys ranking the rows as ``log(E / (m w))`` does: that, with weights (``weight_scale``,
    a power of two, scales them exactly); ``E / m`` without, where no subnormal weight can
    overflow the ratio. Infinite where the mass is zero (never drawn), NaN for non-finite
    rows."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if row_weights is None:
            return exponentials / mass
        keys = np.log(exponentials) - np.log(mass)
        keys -= np.log(np.asarray(row_weights, dtype=np.float64) * weight_scale)
    return keys


@dataclass
class TrialSums:
    """For each k-means++ trial centre: the weighted cost of adding it, and the next draws.

    ``costs[t]`` is ``sum w min(D(x), d(x, trial_t))`` (``D`` the squared distance to the
    nearest centre chosen so far); ``samples[t]`` the rows drawn by ``w min(D, d_t)``.
    """

    costs: np.ndarray
    samples: list
    n_nonfinite: int = 0

    def __add__(self, other):
        return TrialSums(self.costs + other.costs,
                         [a + b for a, b in zip(self.samples, other.samples)],
                         self.n_nonfinite + other.n_nonfinite)


def trials_block(block, row_weights, position, seed, centers, trials, keep, weight_scale):
    """Cost of each trial centre given ``centers``, and ``keep`` rows drawn for each trial.

    One exponential is drawn per row and shared by the trials: each trial's draws are a
    sample by its own masses, and the trial to keep is chosen by the costs alone. The costs
    weigh the rows by their weights times ``weight_scale``, a power of two that brings
    subnormal weights into the normal range (exactly), so that costs keep their precision.
    """
    block = as_float_block(block)
    terms = CenterTerms.of(np.concatenate([centers, trials]), block.dtype)
    n_chosen = len(centers)
    rng = block_rng(seed, position)
    costs = np.zeros(len(trials))
    lowest_keys = [LowestRows(keep) for _ in trials]
    n_nonfinite = 0
    for rows in row_slices(len(block), slice_length(block.shape[1] + terms.n_centers, len(block))):
        centred = centred_rows(block[rows], terms.reference)
        scores = center_scores(centred, terms)
        mass = scores[n_chosen:]
        if n_chosen:
            np.minimum(mass, scores[:n_chosen].min(axis=0), out=mass)
        mass += row_norms(centred)
        np.maximum(mass, 0.0, out=mass)
        n_nonfinite += _slice_nonfinite(block[rows], mass[0])
        weights = None if row_weights is None else row_weights[rows]
        if weights is None:
            costs += mass.sum(axis=1, dtype=np.float64)
        else:
            costs += mass @ (np.asarray(weights, dtype=np.float64) * weight_scale)
        if keep:
            exponentials = rng.standard_exponential(rows.stop - rows.start)
            for trial, keys in zip(lowest_keys, _keys(exponentials, mass, weights, weight_scale)):
                trial.add(keys, rows.start)
    samples = [_block_sample(block, row_weights, position, lowest.indices, lowest.scores, keep, 0)
               for lowest in lowest_keys]
    return TrialSums(costs, samples, n_nonfinite)
