"""The mini-batches of an online fit: waves of row pieces, visited in a seeded shuffled order.

A piece is a run of rows inside one chunk (one block, for NumPy data): a whole chunk, or, when
a chunk has more rows than ``batch_size``, a part of ``batch_size / threads`` rows. A wave is
consecutive pieces of a pass's order: one per worker thread, or as many as make ``batch_size``
rows, so a wave keeps every thread busy and its statistics are tree-reduced like a pass's.
Without ``batch_size``, data of fewer than :data:`MIN_WAVES` chunks per thread (NumPy data's
blocks, often) are cut into batches of a :data:`MIN_WAVES`-th of the rows. A pass visits
every piece once, in an order drawn from ``(seed, pass)``: the same seed gives the same waves.
Only a wave's rows are read or held at a time.
"""

import os
from dataclasses import dataclass

import dask.array as da
import numpy as np

from .engine import dask_row_data, numpy_row_data
from .placement import cluster_threads

# A pass has at least this many waves (steps), whatever the chunks: online EM's steps shrink,
# and a pass of a few large ones ends far from the optimum (bench/README.md).
MIN_WAVES = 20


@dataclass(frozen=True)
class WavePlan:
    """How the rows of ``source`` (the engine's RowData) are cut into pieces and waves.

    Attributes
    ----------
    pieces : tuple of (int, int)
        The ``(start, stop)`` rows of every piece, in the data's order.
    batch_rows : int or None
        The rows a wave gathers (``batch_size``), or None for one piece per thread.
    threads : int
        The worker threads a wave is cut for.
    """

    pieces: tuple
    batch_rows: int | None
    threads: int

    @classmethod
    def of(cls, source, batch_size=None, threads=None):
        """The plan of ``source``'s rows for mini-batches of ``batch_size`` rows (None: one
        chunk per thread) on ``threads`` threads (None: the cluster's, or this machine's)."""
        threads = threads or available_threads(source)
        if batch_size is None and source.n_blocks < MIN_WAVES * threads:
            batch_size = max(1, -(-source.n_rows // MIN_WAVES))  # too few chunks: cut them
        bounds = list(source.row_starts) + [source.n_rows]
        most = None if batch_size is None else max(1, -(-batch_size // threads))
        pieces = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            # A chunk larger than a batch is cut so that a batch spans a piece per thread.
            split = batch_size is not None and stop - start > batch_size
            edges = [*range(start, stop, most), stop] if split else [start, stop]
            pieces += list(zip(edges[:-1], edges[1:]))
        return cls(tuple(pieces), batch_size, threads)

    def order(self, seed, pass_index, shuffle=True):
        """The pieces' indices in the order pass ``pass_index`` (from 0) visits them."""
        if not shuffle:
            return np.arange(len(self.pieces))
        return np.random.default_rng([seed, pass_index]).permutation(len(self.pieces))

    def waves(self, seed, pass_index, shuffle=True):
        """The waves of one pass: lists of ``(start, stop)`` pieces."""
        waves, wave, rows = [], [], 0
        for index in self.order(seed, pass_index, shuffle):
            start, stop = self.pieces[index]
            wave.append((start, stop))
            rows += stop - start
            full = rows >= self.batch_rows if self.batch_rows else len(wave) >= self.threads
            if full:
                waves.append(wave)
                wave, rows = [], 0
        return waves + ([wave] if wave else [])


def wave_rows(source, wave):
    """The engine's RowData of one wave's rows (lazy for Dask data: only they are read)."""
    if source.is_dask:
        return _dask_wave_rows(source, wave)
    data = [source.data[start:stop] for start, stop in wave]
    weights = None if source.weights is None else \
        [source.weights[start:stop] for start, stop in wave]
    joined = data[0] if len(data) == 1 else np.concatenate(data)
    if weights is not None:
        weights = weights[0] if len(weights) == 1 else np.concatenate(weights)
    # Blocks as partial_fit cuts the same rows, or a block per piece of a cut block.
    most = max(stop - start for start, stop in wave)
    return numpy_row_data(joined, weights, min(source.block_rows, most))


def _dask_wave_rows(source, wave):
    """A wave's rows as Dask arrays: its whole chunks as they are (no copy, no slicing task;
    read by tasks of their own, which workers run ahead of the wave), or slices of cut ones."""
    chunk_of = {start: index for index, start in enumerate(source.row_starts)}
    stops = dict(zip(source.row_starts, [*source.row_starts[1:], source.n_rows]))
    if all(stops.get(start) == stop for start, stop in wave):
        return source.chunks_subset([chunk_of[start] for start, _ in wave])
    arrays = [None if array is None else da.concatenate([array[start:stop]
                                                         for start, stop in wave])
              for array in (source.data, source.weights)]
    return dask_row_data(*arrays)


def available_threads(source):
    """The threads a pass over ``source`` runs on: the cluster's for Dask data, else the cores."""
    return cluster_threads() if source.is_dask else os.cpu_count() or 1
