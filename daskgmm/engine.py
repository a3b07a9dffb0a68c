"""One pass over the data: NumPy row blocks in-process, or a Dask array mapped and tree-reduced.

This is the only module that builds Dask graphs for EM. A pass applies a block function (from
:mod:`daskgmm.kernels` or :mod:`daskgmm.init`) to every block of rows and merges the small results
with ``+`` in a fixed tree over the blocks (:mod:`daskgmm.tree`), so the result does not depend on
which worker or thread ran a block, nor on how blocks were grouped into tasks.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, reduce
from operator import add

import cloudpickle
import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten, iskey
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from threadpoolctl import ThreadpoolController

from .dask_compat import DataNode, Task, TaskRef, active_client, data_nodes
from .kernels import float_dtype_of
from .tree import PartialTree, tree_reduce

DEFAULT_SPLIT_EVERY = 8
# NumPy input is cut into blocks of about this many elements (8 MB of float64).
_NUMPY_BLOCK_ELEMENTS = 1 << 20
# Small unheld Dask chunks are run several to a task (see _blocks_per_task).
_TASK_BYTES = 32 * 2**20
_MAX_BLOCKS_PER_TASK = 8
_TASKS_PER_THREAD = 4
# Block functions' arguments are copied into every block task up to this many bytes in all.
_INLINE_ARGS_BYTES = 1 << 20
# Plain data a chunk's task depends on is copied into the task up to this many bytes.
_INLINE_DATA_BYTES = 64 * 2**10
# The client merges up to split_every ** 2 partial results if they hold at most this much.
_CLIENT_MERGE_BYTES = 4 * 2**20


_blas_controller = None
_blas_limit_depth = 0
_blas_limit_lock = threading.Lock()


@contextmanager
def single_threaded_blas():
    """Run BLAS single-threaded in this process while blocks run in parallel.

    Parallelism comes from blocks (threads here, or Dask workers); BLAS threads competing with
    them on the same cores make a pass several times slower, and make the M-step's many tiny
    LAPACK calls (a 3 x 3 triangular solve: 17 us on one thread, up to 16 ms with OpenBLAS's
    threads on a busy machine) slower still. Dask's worker processes already start with one
    BLAS thread; this covers in-process threads (NumPy input, Dask's threaded scheduler,
    in-process clusters) and the client. Re-entrant: nested uses cost nothing.
    """
    global _blas_controller, _blas_limit_depth
    with _blas_limit_lock:
        outermost = _blas_limit_depth == 0
        _blas_limit_depth += 1
        if outermost:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            limit = _blas_controller.limit(limits=1, user_api="blas")
    try:
        yield
    finally:
        with _blas_limit_lock:
            _blas_limit_depth -= 1
            if outermost:
                limit.restore_original_limits()


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
    pickled, as first seen (see :func:`_client_merges`).
    """

    data: object
    weights: object
    row_starts: tuple
    block_rows: int = 0
    last_result: object = None
    result_nbytes: dict = field(default_factory=dict)

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

    @cached_property
    def task_blocks(self):
        """Dask data only: the blocks each first-level task of a pass runs, in order.

        Runs of consecutive blocks (see :func:`_task_runs`), each block given as
        ``(position, data input, weights input)``. How the blocks are cut into runs decides
        where the work runs, never the result (:mod:`daskgmm.tree`).
        """
        weights = [None] * self.n_blocks if self.weights is None else _block_inputs(self.weights)
        blocks = list(zip(self.positions(), self._data_inputs, weights))
        size = _blocks_per_task(self.data, self._chunks_held)
        return _task_runs(blocks, size, self.chunk_holders)

    @cached_property
    def chunk_holders(self):
        """Dask data only: the worker holding each chunk, if every chunk is held in memory
        (persisted) on the cluster of the active distributed client, else None."""
        return _holders(self.data, self._data_inputs) if self._chunks_held else None

    @cached_property
    def _data_inputs(self):
        return _block_inputs(self.data)

    @cached_property
    def _chunks_held(self):
        """Whether every chunk is data already (persisted), not a task to compute."""

        return all(isinstance(item, TaskRef) for item in self._data_inputs)


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
    """Merge the partial trees of consecutive runs of blocks."""
    return reduce(add, parts)


def _shared_args(args, name, layer, n_tasks):
    """What every block task takes as ``args``: the value itself if small, else a graph key.

    Small arguments go into every task: a separate key would be one more task to run before
    any block task can start, and (the scheduler batching its messages to a worker over 5 ms)
    delay the first block tasks by up to that. Large ones go into the graph once, as a key
    every block task depends on: a graph key (not scattered data) so that the scheduler can
    recompute it when the workers holding it die.
    """

    if n_tasks * len(cloudpickle.dumps(args)) <= _INLINE_ARGS_BYTES:
        return DataNode(None, args)
    args_key = (name + "-args",)
    layer[args_key] = DataNode(args_key, args)
    return TaskRef(args_key)


def _reduction_graph(source, block_fn, args, pass_position, split_every):
    """Build a graph mapping ``block_fn`` over the chunks and merging the results' partial trees.

    Returns the Delayed partial trees left for the client to merge (:func:`_client_merges`).
    """

    client_merges = _client_merges(source, block_fn, split_every)
    # The graph's shape is in the name: a key must never stand for two different merges.
    name = "daskgmm-pass-" + tokenize(source.data, source.weights, block_fn, args, pass_position,
                                      split_every, client_merges)
    layer = {}
    args_reference = _shared_args(args, name, layer, len(source.task_blocks))
    level = []
    for index, blocks in enumerate(source.task_blocks):
        key = (name, 0, index)
        inputs = [item for block in blocks for item in block]
        layer[key] = Task(key, _apply_blocks, block_fn, pass_position, args_reference,
                          (source.n_blocks, split_every), *inputs)
        level.append(key)
    top = _add_combine_tasks(layer, name, level, split_every, client_merges)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=_graph_dependencies(source))
    return [Delayed(key, graph, layer=name) for key in top]


def _graph_dependencies(source):
    """The collections whose graphs a pass's graph must carry.

    Not the data's when its chunks are held on the cluster: the block tasks refer to their keys,
    which the scheduler knows, and sending the keys' graph with every pass made the scheduler
    take 17-26 ms to start a pass over 1,000 held chunks (ordering and checking every key).
    """
    data = [] if source.chunk_holders is not None else [source.data]
    return data + ([] if source.weights is None else [source.weights])


def _client_merges(source, block_fn, split_every):
    """How many partial results the client fetches and merges itself.

    Fetching a few small results costs the client the same round trip as fetching one, without
    first moving them to the worker of a combine task and waiting for it there (a pass over 10
    chunks of 24 MB on 2 worker processes: 195 ms instead of 205). So the client merges up to
    ``split_every ** 2`` results if they hold at most ``_CLIENT_MERGE_BYTES``, judging by the
    size of ``block_fn``'s result in the first pass over ``source``, else (and on that first
    pass) up to ``split_every``.
    """
    nbytes = source.result_nbytes.get(block_fn)
    if nbytes is not None and nbytes * split_every**2 <= _CLIENT_MERGE_BYTES:
        return split_every**2
    return split_every


def _add_combine_tasks(layer, name, level, split_every, client_merges):
    """Add to ``layer`` tasks merging the results at keys ``level`` until at most
    ``client_merges`` are left, and return their keys.

    Each task merges ``split_every`` consecutive results, or ``split_every ** 2`` while more
    than ``split_every * client_merges`` are left (half the round trips between workers and
    scheduler). Partial trees merge into the same tree in any grouping (:mod:`daskgmm.tree`),
    so this shapes only the work, never the result.
    """

    depth = 0
    while len(level) > client_merges:
        depth += 1
        fan_in = split_every**2 if len(level) > split_every * client_merges else split_every
        next_level = []
        for i in range(0, len(level), fan_in):
            key = (name, depth, i // fan_in)
            parts = [TaskRef(k) for k in level[i : i + fan_in]]
            layer[key] = Task(key, _combine_group, *parts)
            next_level.append(key)
        level = next_level
    return level


def _block_inputs(array):
    """What a block task takes for each row chunk of ``array``: the chunk's own task, or its key.

    A chunk that is computed (read from Zarr, generated, sliced) is computed inside the block
    task that uses it: one task per chunk instead of two, and the chunk never sits in a worker's
    memory between them (where a busy worker would hold, or spill, chunks it has loaded but not
    yet used). Chunks that are already data (persisted) stay references to their keys.
    """

    graph = array.__dask_graph__()
    keys = list(flatten(array.__dask_keys__()))
    layer = graph.layers.get(array.name) if isinstance(graph, HighLevelGraph) else graph
    tasks = dict(layer) if layer is not None else {}
    needed = {key for task in tasks.values() if isinstance(task, Task) for key in task.dependencies}
    data = _small_data(array, graph, needed)
    return [_with_data(tasks[key], data) if isinstance(tasks.get(key), Task) else TaskRef(key)
            for key in keys]


def _small_data(array, graph, keys):
    """Those of ``keys`` that ``array``'s graph holds as plain data (not tasks) of at most
    ``_INLINE_DATA_BYTES``, as ``{key: DataNode}``: the Zarr array object of from_zarr."""
    from dask.highlevelgraph import MaterializedLayer
    from dask.sizeof import sizeof

    if isinstance(graph, HighLevelGraph):
        layers = [graph.layers[name].mapping for name in graph.dependencies.get(array.name, ())
                  if isinstance(graph.layers[name], MaterializedLayer)]
    else:
        layers = [graph]
    # A value that could be a key would be an alias to another key, not data.
    found = {key: layer[key] for layer in layers for key in keys
             if key in layer and not iskey(layer[key])}
    return {key: node for key, node in data_nodes(found).items()
            if sizeof(node.value) <= _INLINE_DATA_BYTES}


def _with_data(task, data):
    """``task`` with the small data it depends on copied in, so that it depends on no key.

    Otherwise every block task of a pass over a Zarr array depends on the one key holding the
    Zarr array object, and the scheduler runs them all on the worker that holds it: a whole fit
    on 2 workers was measured with the second one idle throughout.
    """
    subs = {key: data[key] for key in task.dependencies if key in data}
    return task.substitute(subs) if subs else task


def _task_runs(blocks, size, holders=None):
    """Cut ``blocks`` into runs of at most ``size``, starting at multiples of ``size`` and
    wherever the next block is held by another worker (``holders``, one per block, or None).

    So that no task of a pass over persisted chunks waits for another worker's chunks to be
    moved to it, and every worker runs the chunks it holds (a pass is then as balanced as the
    chunks are: 100 chunks held 50 and 50 by two workers, cut into 13 runs of 8 regardless,
    made 7 tasks and 52 chunks for one worker and 6 tasks for the other).
    """
    runs = []
    for index, block in enumerate(blocks):
        moved = holders is not None and index > 0 and holders[index] != holders[index - 1]
        if not runs or index % size == 0 or moved:
            runs.append([])
        runs[-1].append(block)
    return runs


def _holders(array, inputs):
    """The worker holding each chunk of ``array`` (``inputs``: key references, one per chunk),
    if all are held on the distributed cluster of the active client, else None."""
    from distributed import futures_of, wait

    client = active_client()
    if client is None:
        return None
    futures = futures_of(array)
    # Persisting is asynchronous: chunks still being computed are held nowhere yet.
    wait(futures)
    who_has = client.who_has(futures)
    holders = [min(who_has.get(item.key) or ("",)) for item in inputs]
    return holders if all(holders) else None


def _blocks_per_task(array, held):
    """How many consecutive chunks of ``array`` one first-level task of a pass runs, at most.

    Chunks already held in memory (``held``: persisted) are run a thread's share to a task:
    a task costs a few milliseconds of the scheduler's and the worker's time besides its
    work (on 2 cores, 2.4 MB chunks one to a task spent 17% of a pass outside the kernel),
    and a task of held chunks costs no memory. Runs also end where the holding worker
    changes (:func:`_task_runs`), so each worker gets about one task per thread.

    Chunks that a task computes (read, generate) are held in memory by the task all at once:
    one to a task, unless small; then up to ``_MAX_BLOCKS_PER_TASK`` of them and about
    ``_TASK_BYTES`` of data per task, but never so many that fewer than
    ``_TASKS_PER_THREAD`` tasks are left per thread of the cluster to spread evenly.
    """
    n_chunks = array.numblocks[0]
    if held:
        return max(1, -(-n_chunks // _cluster_threads()))
    by_size = int(_TASK_BYTES * n_chunks // max(array.nbytes, 1))
    by_parallelism = n_chunks // (_TASKS_PER_THREAD * _cluster_threads())
    return max(1, min(_MAX_BLOCKS_PER_TASK, by_size, by_parallelism))


def _cluster_threads():
    """Threads of the workers of the default distributed client, else this machine's cores."""
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def _apply_blocks(block_fn, pass_position, args, tree_shape, *blocks):
    """Run ``block_fn`` on consecutive blocks, ``(position, data, weights)`` flattened, and
    merge the results as far as they go in the pass's tree, ``tree_shape`` = (blocks, fan-in).
    """
    results = []
    for i in range(0, len(blocks), 3):
        position, data, weights = blocks[i : i + 3]
        extra = (position,) if pass_position else ()
        results.append((position.index, block_fn(data, weights, *extra, *args)))
    return PartialTree.of_leaves(*tree_shape, results)


def map_reduce(source, block_fn, *args, pass_position=False, split_every=DEFAULT_SPLIT_EVERY):
    """Apply ``block_fn(block, weights, [position,] *args)`` to every block and merge with ``+``.

    Both kinds of data merge the block results in the tree of :func:`tree_reduce` over the
    blocks. For Dask data this is one ``compute`` of one graph; only a few small partial trees
    (:func:`_client_merges`) come back to the client, which merges them. For NumPy data the
    blocks run on a thread pool in-process.
    """
    with single_threaded_blas():
        if source.is_dask:
            top = _reduction_graph(source, block_fn, args, pass_position, split_every)
            results = _compute(source, top)
            if block_fn not in source.result_nbytes:
                source.result_nbytes[block_fn] = len(cloudpickle.dumps(results[0]))
            return reduce(add, results).result()
        return tree_reduce(_numpy_map(source, block_fn, args, pass_position), split_every)


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
