"""Initial responsibilities, and a block's sufficient statistics under them.

Pure NumPy. Each kind of initial responsibilities writes those of one slice of a block's rows
into a buffer (``fill(centred, reference, position, start, out)``: the slice's rows
``start...`` of the block at ``position``, given as ``(x - reference)^T``, into ``out`` of
shape (n_components, n)), so the statistics pass (:func:`initial_stats_block`) works slice by
slice in the block's float dtype with per-thread buffers, like the E-step
(:func:`daskgmm.kernels.em_block`), and never holds a block-sized one-hot matrix.
"""

from dataclasses import dataclass

import numpy as np

from .design import design_matrix, n_design_features
from .distances import CenterTerms, center_scores, nearest_one_hot
from .kernels import as_float_block, count_nonfinite_rows
from .lowest import LowestRows
from .slices import row_slices, slice_length, thread_scratch
from .statistics import MomentAccumulator

# Draws of the stream between two components of the same row (more than a block's rows).
_COMPONENT_STREAM = 1 << 40


@dataclass(frozen=True)
class NearestCenterResponsibilities:
    """One-hot responsibilities: each row belongs to its nearest centre (ties: the first)."""

    centers: np.ndarray

    @property
    def n_components(self):
        return len(self.centers)

    def fill(self, centred, reference, position, start, out):
        terms = CenterTerms.of(self.centers, out.dtype, reference)
        nearest_one_hot(center_scores(centred, terms), out)


@dataclass(frozen=True)
class ChosenRowResponsibilities:
    """Responsibility 1 for component ``k`` at the ``k``-th chosen row, 0 elsewhere.

    ``points`` and ``weights`` hold the chosen rows' values (float64) and row weights, known
    without reading the data again.
    """

    rows: np.ndarray
    points: np.ndarray
    weights: np.ndarray

    @property
    def n_components(self):
        return len(self.rows)

    def fill(self, centred, reference, position, start, out):
        out[:] = 0.0
        local = self.rows - (position.start + start)
        inside = (local >= 0) & (local < out.shape[1])
        out[np.flatnonzero(inside), local[inside]] = 1.0


@dataclass(frozen=True)
class RandomResponsibilities:
    """Uniform random responsibilities normalised per row.

    Component ``k`` of row ``i`` of a block is draw ``k 2^40 + i`` of the block's stream,
    seeded by ``(seed, block)``: the same values whichever slices the block is cut into, each
    slice's drawn straight into its buffer, one component at a time.
    """

    seed: int
    n_components: int

    def fill(self, centred, reference, position, start, out):
        bits = np.random.PCG64([self.seed, position.index])
        generator = np.random.Generator(bits)
        bits.advance(start)
        draws = out if out.dtype == np.float64 else thread_scratch(
            "random-draws", out.shape, np.float64)
        for component in draws:
            generator.random(out=component)
            bits.advance(_COMPONENT_STREAM - out.shape[1])
        if draws is not out:
            out[:] = draws
        out /= out.sum(axis=0)


@dataclass(frozen=True)
class GivenResponsibilities:
    """Responsibilities computed up front for in-memory data: labels (one-hot) or a matrix."""

    values: np.ndarray
    n_components: int

    def fill(self, centred, reference, position, start, out):
        first = position.start + start
        values = self.values[first : first + out.shape[1]]
        if values.ndim == 1:
            np.equal(np.arange(len(out))[:, None], values, out=out, casting="unsafe")
        else:
            out[:] = values.T


def initial_stats_block(block, row_weights, position, responsibilities, reference,
                        covariance_type):
    """Sufficient statistics of one block under initial ``responsibilities``, about
    ``reference``, one slice of rows at a time.

    Returns
    -------
    daskgmm.statistics.SufficientStats
        With ``log_likelihood`` 0 (there are no parameters yet) and no worst rows.
    """
    block = as_float_block(block)
    n_rows, n_features = block.shape
    n_components = responsibilities.n_components
    pooled = covariance_type == "tied"
    n_design = n_design_features(covariance_type, n_features)
    step = slice_length(n_design + n_components, n_rows)
    phi_buffer = thread_scratch("init-phi", (n_design, step), block.dtype)
    resp_buffer = thread_scratch("init-resp", (n_components + pooled, step), block.dtype)
    reference = np.asarray(reference, dtype=block.dtype)
    no_log_likelihood = np.zeros(step)
    accumulator = MomentAccumulator(n_design, n_components, covariance_type)
    n_nonfinite = 0
    for rows in row_slices(n_rows, step):
        size = rows.stop - rows.start
        phi = design_matrix(block[rows], reference, covariance_type, phi_buffer[:, :size])
        resp = resp_buffer[:, :size]
        centred = phi[1 : 1 + n_features]
        responsibilities.fill(centred, reference, position, rows.start, resp[:n_components])
        weights = None if row_weights is None else np.asarray(row_weights[rows], block.dtype)
        if weights is not None:
            resp[:n_components] *= weights
        if pooled:  # the pooled scatter is over all rows, whatever the responsibilities
            resp[n_components] = 1.0 if weights is None else weights
        accumulator.add(phi, resp, no_log_likelihood[:size], weights)
        if not np.isfinite(centred).all():
            n_nonfinite += count_nonfinite_rows(block[rows])
    stats = accumulator.stats(reference.astype(np.float64))
    stats.n_nonfinite = n_nonfinite
    return LowestRows(0).attach(stats, block)
