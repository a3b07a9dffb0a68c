"""One pass over the data: NumPy row blocks in-process, or a Dask array mapped and tree-reduced.

This is the only module that builds Dask graphs for EM. A pass applies a block function (from
:mod:`daskgmm.kernels` or :mod:`daskgmm.init`) to every block of rows and merges the small results
with ``+`` in a fixed tree, so the result does not depend on which worker or thread ran a block.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from operator import add

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from threadpoolctl import ThreadpoolController

from .kernels import float_dtype_of

DEFAULT_SPLIT_EVERY = 8
# NumPy input is cut into blocks of about this many elements (8 MB of float64).
_NUMPY_BLOCK_ELEMENTS = 1 << 20


_blas_controller = None


@contextmanager
def single_threaded_blas():
    """Run BLAS single-threaded in this process while blocks run in parallel.

    Parallelism comes from blocks (threads here, or Dask workers); BLAS threads competing with
    them on the same cores make a pass several times slower. Dask's worker processes already
    start with one BLAS thread; this covers in-process threads (NumPy input, Dask's threaded
    scheduler, in-process clusters).
    """
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


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
    """

    data: object
    weights: object
    row_starts: tuple
    block_rows: int = 0

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

    @property
    def n_blocks(self):
        return len(self.row_starts)

    def positions(self):
        return [BlockPosition(i, start) for i, start in enumerate(self.row_starts)]


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


def _numpy_blocks(source):
    for position in source.positions():
        rows = slice(position.start, position.start + source.block_rows)
        weights = None if source.weights is None else source.weights[rows]
        yield source.data[rows], weights, position


def tree_reduce(values, split_every=DEFAULT_SPLIT_EVERY, combine=add):
    """Merge ``values`` with ``combine`` in a fixed tree of fan-in ``split_every``."""
    values = list(values)
    while len(values) > 1:
        values = [reduce(combine, values[i : i + split_every])
                  for i in range(0, len(values), split_every)]
    return values[0]


def _numpy_map(source, block_fn, args, pass_position):
    def run(item):
        block, weights, position = item
        if pass_position:
            return block_fn(block, weights, position, *args)
        return block_fn(block, weights, *args)

    items = list(_numpy_blocks(source))
    if len(items) == 1:
        return [run(items[0])]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(run, items))


def _combine_group(*parts):
    return reduce(add, parts)


def _shared_args(args, name, layer):
    """Put ``args`` in the graph once, as a key every block task depends on.

    A graph key (not scattered data) so that the scheduler can recompute it when the workers
    holding it die.
    """
    from dask._task_spec import DataNode, TaskRef

    args_key = (name + "-args",)
    layer[args_key] = DataNode(args_key, args)
    return TaskRef(args_key)


def _reduction_graph(source, block_fn, args, pass_position, split_every):
    """Build a graph mapping ``block_fn`` over the chunks and merging the results in a tree."""
    from dask._task_spec import Task, TaskRef

    name = "daskgmm-pass-" + tokenize(source.data, source.weights, block_fn, args, pass_position)
    layer = {}
    args_reference = _shared_args(args, name, layer)
    data_keys = [key for (key,) in source.data.__dask_keys__()]
    weight_keys = (
        [None] * len(data_keys) if source.weights is None else source.weights.__dask_keys__()
    )
    level = []
    for position, data_key, weight_key in zip(source.positions(), data_keys, weight_keys):
        key = (name, 0, position.index)
        weights = None if weight_key is None else TaskRef(weight_key)
        extra = (position,) if pass_position else ()
        layer[key] = Task(key, _apply_block, block_fn, TaskRef(data_key), weights, *extra,
                          args_reference)
        level.append(key)
    depth = 0
    while len(level) > 1:
        depth += 1
        next_level = []
        for i in range(0, len(level), split_every):
            key = (name, depth, i // split_every)
            layer[key] = Task(key, _combine_group, *[TaskRef(k) for k in level[i : i + split_every]])
            next_level.append(key)
        level = next_level
    dependencies = [source.data] + ([] if source.weights is None else [source.weights])
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return Delayed(level[0], graph, layer=name)


def _apply_block(block_fn, block, weights, *rest):
    *position, args = rest
    return block_fn(block, weights, *position, *args)


def map_reduce(source, block_fn, *args, pass_position=False, split_every=DEFAULT_SPLIT_EVERY):
    """Apply ``block_fn(block, weights, [position,] *args)`` to every block and merge with ``+``.

    For Dask data this is one ``compute`` of one graph; only the merged result (a small value)
    comes back to the client. For NumPy data the blocks run on a thread pool in-process.
    """
    with single_threaded_blas():
        if source.is_dask:
            graph = _reduction_graph(source, block_fn, args, pass_position, split_every)
            (result,) = dask.compute(graph)
            return result
        return tree_reduce(_numpy_map(source, block_fn, args, pass_position), split_every)


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
        parts = _numpy_map(source, lambda block, _w, *a: row_fn(block, *a), args, False)
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
