"""One pass over the data: NumPy row blocks in-process, or a Dask array mapped and tree-reduced.

A pass applies a block function (from :mod:`daskgmm.kernels` or :mod:`daskgmm.init`) to every
block of rows and merges the small results with ``+`` in a fixed tree over the blocks
(:mod:`daskgmm.tree`), so the result does not depend on which worker or thread ran a block, nor
on how blocks were grouped into tasks. Every block function is called the same way,
``block_fn(block, row_weights, position, *args)``. The graph of a pass over Dask data is built
by :mod:`daskgmm.graph`, its tasks placed by :mod:`daskgmm.placement`, on persisted chunks
evened out over the workers by :mod:`daskgmm.balance`.
"""

from dataclasses import dataclass, field
from functools import cached_property, reduce
from operator import add

import cloudpickle
import dask
import dask.array as da
import numpy as np

from .balance import HeldChunks, evened_out
from .dask_compat import TaskRef, active_client
from .graph import block_inputs, reduction_graph
from .kernels import float_dtype_of
from .options import GAUSSIAN_MIXTURE_PARAMETERS
from .placement import blocks_per_task, chunk_holders, task_runs
from .threads import map_in_threads, single_threaded_blas
from .tree import tree_reduce

DEFAULT_SPLIT_EVERY = GAUSSIAN_MIXTURE_PARAMETERS["split_every"].default
# NumPy input is cut into blocks of about this many elements (8 MB of float64).
_NUMPY_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class BlockPosition:
    """Where a block sits: its index among the blocks and the index of its first row."""

    index: int
    start: int


@dataclass
class RowData:
    """Validated 2-D data cut into blocks of whole rows, with optional per-row weights.

    ``data`` is a NumPy array or a Dask array chunked along rows only; ``weights`` is None or of
    the same kind with the same row blocks. ``row_starts`` holds the first row of every block.
    ``last_result`` holds the futures of the last pass's results on a distributed cluster (see
    :func:`_compute`); ``result_nbytes`` the size of one block function's result, by function,
    pickled, as first seen (see :func:`daskgmm.graph.client_merges`). ``n_passes`` counts the
    passes :func:`map_reduce` made over the data.
    """

    data: object
    weights: object
    row_starts: tuple
    block_rows: int = 0
    last_result: object = None
    result_nbytes: dict = field(default_factory=dict)
    n_passes: int = 0

    @property
    def is_dask(self):
        return isinstance(self.data, da.Array)

    @property
    def n_rows(self):
        return self.data.shape[0]

    @property
    def n_features(self):
        return self.data.shape[1]

    @property
    def dtype(self):
        """The floating dtype the per-row work runs in."""
        return float_dtype_of(self.data.dtype)

    def shape(self):
        """The :class:`RowShape` of these rows."""
        return RowShape(self.n_rows, self.n_features, self.dtype)

    @property
    def n_blocks(self):
        return len(self.row_starts)

    def positions(self):
        return [BlockPosition(i, start) for i, start in enumerate(self.row_starts)]

    @cached_property
    def task_blocks(self):
        """Dask data only: the blocks each first-level task of a pass runs, in order.

        Runs of consecutive blocks (see :func:`daskgmm.placement.task_runs`), each block given
        as ``(position, data input, weights input)``. How the blocks are cut into runs decides
        where the work runs, never the result (:mod:`daskgmm.tree`).
        """
        weights = [None] * self.n_blocks if self.weights is None else block_inputs(self.weights)
        inputs = self._data_inputs if self.held_chunks is None else self.held_chunks.inputs
        blocks = list(zip(self.positions(), inputs, weights))
        size = blocks_per_task(self.data, self._chunks_held)
        return task_runs(blocks, size, self.chunk_holders)

    @cached_property
    def held_chunks(self):
        """Dask data only: if every chunk is held in memory (persisted) on the cluster of the
        active distributed client, the chunks the passes run on, evened out over the workers
        once (:class:`daskgmm.balance.HeldChunks`, held as long as this data), else None."""
        if not self._chunks_held:
            return None
        holders = chunk_holders(self.data, self._data_inputs)
        return None if holders is None else evened_out(self.data, self._data_inputs, holders)

    @property
    def chunk_holders(self):
        """The worker holding each chunk the passes run on, if :attr:`held_chunks`, else None."""
        return None if self.held_chunks is None else self.held_chunks.holders

    @cached_property
    def _data_inputs(self):
        return block_inputs(self.data)

    def chunks_subset(self, indices):
        """Dask data only: the RowData of the chunks ``indices``, in that order (an online
        fit's wave). Chunks held on the cluster stay where :attr:`held_chunks` evened them out,
        once for all the subsets; a subset moves none."""
        part = dask_row_data(self.data.blocks[indices],
                             None if self.weights is None else self.weights.blocks[indices])
        if self.held_chunks is not None:
            held = self.held_chunks
            part.__dict__["held_chunks"] = HeldChunks([held.inputs[i] for i in indices],
                                                      [held.holders[i] for i in indices])
            part.__dict__["_chunks_held"] = True
        return part

    @cached_property
    def _chunks_held(self):
        """Whether every chunk is data already (persisted), not a task to compute."""
        return all(isinstance(item, TaskRef) for item in self._data_inputs)


@dataclass(frozen=True)
class RowShape:
    """The rows, features and dtype of a :class:`RowData`: what an M-step reads of its data,
    small enough to go into a task (see :mod:`daskgmm.online`)."""

    n_rows: int
    n_features: int
    dtype: object


def numpy_row_data(data, weights, block_rows=None):
    """Wrap an in-memory 2-D array (and weights) as :class:`RowData` cut into row blocks."""
    if block_rows is None:
        block_rows = max(1024, _NUMPY_BLOCK_ELEMENTS // max(data.shape[1], 1))
    starts = tuple(range(0, max(data.shape[0], 1), block_rows))
    return RowData(data=data, weights=weights, row_starts=starts, block_rows=block_rows)


def dask_row_data(data, weights):
    """Wrap a Dask array chunked by rows (and weights with the same row chunks)."""
    starts = tuple(int(s) for s in np.cumsum((0,) + data.chunks[0][:-1]))
    return RowData(data=data, weights=weights, row_starts=starts)


def _numpy_map(source, block_fn, args):
    """``block_fn(block, row_weights, position, *args)`` of every block of NumPy ``source``."""

    def run(position):
        rows = slice(position.start, position.start + source.block_rows)
        weights = None if source.weights is None else source.weights[rows]
        return block_fn(source.data[rows], weights, position, *args)

    return map_in_threads(run, source.positions())


def map_reduce(source, block_fn, *args, split_every=DEFAULT_SPLIT_EVERY):
    """Apply ``block_fn(block, row_weights, position, *args)`` to every block; merge with ``+``.

    Both kinds of data merge the block results in the tree of :func:`tree_reduce` over the
    blocks. For Dask data this is one ``compute`` of one graph; only a few small partial trees
    (:func:`daskgmm.graph.client_merges`) come back to the client, which merges them. For NumPy
    data the blocks run on a thread pool in-process.
    """
    source.n_passes += 1
    with single_threaded_blas():
        if source.is_dask:
            top = reduction_graph(source, block_fn, args, split_every)
            results = _compute(source, top)
            if block_fn not in source.result_nbytes:
                source.result_nbytes[block_fn] = len(cloudpickle.dumps(results[0]))
            return reduce(add, results).result()
        return tree_reduce(_numpy_map(source, block_fn, args), split_every)


def _compute(source, delayed_values):
    """Compute the small ``delayed_values`` of one pass, on the distributed client if active.

    With a client, the results' futures are released only when the next pass over ``source``
    has been submitted. The client batches its messages to the scheduler over 10 ms: releasing
    the results at once (as ``dask.compute`` does) would hold the next pass's graph, submitted
    a few milliseconds later after the M-step, until those 10 ms are over.
    """
    client = active_client()
    if client is None:
        return list(dask.compute(*delayed_values))
    futures = client.compute(delayed_values)
    # Drops the previous pass's futures: their release is sent after this graph.
    source.last_result = futures
    return client.gather(futures)


def _row_block(block, row_weights, position, row_fn, *args):
    return row_fn(block, *args)


def map_rows(source, row_fn, *args, n_columns=None, dtype=None):
    """Apply ``row_fn(block, *args)`` to every block and stack the per-row results.

    Returns a NumPy array for NumPy data and a lazy Dask array with the same row chunks for Dask
    data. ``n_columns`` is None for one value per row, else the width of each result row.
    """
    dtype = source.dtype if dtype is None else dtype
    if source.is_dask:
        if n_columns is None:
            return source.data.map_blocks(row_fn, *args, drop_axis=1, dtype=dtype,
                                          meta=np.empty((0,), dtype=dtype))
        chunks = (source.data.chunks[0], (n_columns,))
        return source.data.map_blocks(row_fn, *args, chunks=chunks, dtype=dtype,
                                      meta=np.empty((0, 0), dtype=dtype))
    with single_threaded_blas():
        parts = _numpy_map(source, _row_block, (row_fn, *args))
    return np.concatenate(parts, axis=0)


def take_rows(source, indices):
    """Return the rows at ``indices`` (few) as a float64 NumPy array, without gathering the data."""
    indices = np.asarray(indices)
    order = np.argsort(indices)
    rows = source.data[indices[order]]
    if source.is_dask:
        rows = rows.compute()
    result = np.empty((len(indices), source.n_features))
    result[order] = np.asarray(rows, dtype=np.float64)
    return result
