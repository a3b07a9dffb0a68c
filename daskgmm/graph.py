"""The Dask graph of one pass: block tasks over runs of chunks, then combine tasks over them.

Every first-level task runs a block function on some chunks (:mod:`daskgmm.placement`) and
merges the results as far as they allow in the pass's fixed tree (:mod:`daskgmm.tree_runs`);
combine tasks merge those partial trees until a few are left for the client to merge
(:func:`client_merges`).
Graph nodes come from :mod:`daskgmm.dask_compat`, the one module using dask's private API.
"""

import uuid
from functools import reduce
from operator import add

import cloudpickle
from dask.base import tokenize
from dask.core import flatten, iskey
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .dask_compat import DataNode, Task, TaskRef, data_nodes
from .tree_runs import LeafRuns

# Block functions' arguments are copied into every block task up to this many bytes in all.
_INLINE_ARGS_BYTES = 1 << 20
# Plain data a chunk's task depends on is copied into the task up to this many bytes.
_INLINE_DATA_BYTES = 64 * 2**10
# The client merges up to split_every ** 2 partial results if they hold at most this much.
_CLIENT_MERGE_BYTES = 4 * 2**20


def reduction_graph(source, block_fn, args, split_every):
    """Build a graph mapping ``block_fn`` over the chunks and merging the results' partial trees.

    ``source`` is the :class:`daskgmm.engine.RowData` of a Dask array. Returns the Delayed
    partial trees left for the client to merge (:func:`client_merges`).
    """
    merges = client_merges(source, block_fn, split_every)
    # The graph's shape is in the name: a key must never stand for two different merges.
    name = "daskgmm-pass-" + tokenize(source.data, source.weights, block_fn, args, split_every,
                                      merges)
    layer = {}
    args_reference = _shared_args(args, name, layer, len(source.task_blocks))
    level = []
    for index, blocks in enumerate(source.task_blocks):
        key = (name, 0, index)
        inputs = [item for block in blocks for item in block]
        layer[key] = Task(key, _apply_blocks, block_fn, args_reference,
                          (source.n_blocks, split_every), *inputs)
        level.append(key)
    top = _add_combine_tasks(layer, name, level, split_every, merges)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=_graph_dependencies(source))
    return [Delayed(key, graph, layer=name) for key in top]


def chained_graph(source, block_fn, step_fn, before, split_every):
    """Build the first-level tasks of a pass that computes its own block arguments.

    Each task computes ``args = step_fn(*before)`` (``before``: the tasks of the pass before,
    as Delayed, or values), runs ``block_fn`` on its blocks with them, and returns ``(args,
    partial tree)``. So a pass chained to the one before (online EM's next wave, whose
    parameters are the M-step of the wave before) waits for no task between the two: its
    block tasks repeat the small ``step_fn`` instead (bench/README.md). Returns the Delayed
    tasks; their partial trees merge into the pass's tree of fan-in ``split_every``
    (:mod:`daskgmm.tree_runs`), as :func:`reduction_graph`'s do.
    """
    name = f"daskgmm-chained-{uuid.uuid4().hex}"  # every chained pass is new work
    refs = [TaskRef(item.key) if isinstance(item, Delayed) else DataNode(None, item)
            for item in before]
    layer, keys = {}, []
    for index, blocks in enumerate(source.task_blocks):
        key = (name, 0, index)
        inputs = [item for block in blocks for item in block]
        layer[key] = Task(key, _step_then_blocks, step_fn, len(refs), block_fn,
                          (source.n_blocks, split_every), *refs, *inputs)
        keys.append(key)
    chained = [item for item in before if isinstance(item, Delayed)]
    graph = HighLevelGraph.from_collections(name, layer,
                                            dependencies=_graph_dependencies(source) + chained)
    return [Delayed(key, graph, layer=name) for key in keys]


def given(value):
    """The ``step_fn`` of the first of chained passes: its arguments as given."""
    return value


def _step_then_blocks(step_fn, n_before, block_fn, tree_shape, *rest):
    args = step_fn(*rest[:n_before])
    return args, _apply_blocks(block_fn, args, tree_shape, *rest[n_before:])


def _apply_blocks(block_fn, args, tree_shape, *blocks):
    """Run ``block_fn`` on blocks in order, ``(position, data, weights)`` flattened, and
    merge the results as far as they go in the pass's tree, ``tree_shape`` = (blocks, fan-in).
    """
    results = []
    for i in range(0, len(blocks), 3):
        position, data, weights = blocks[i : i + 3]
        results.append((position.index, block_fn(data, weights, position, *args)))
    return LeafRuns.of_leaves(*tree_shape, results)


def _combine_group(*parts):
    """Merge the partial trees of the blocks of several tasks."""
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


def _graph_dependencies(source):
    """The collections whose graphs a pass's graph must carry.

    Not the data's when its chunks are held on the cluster: the block tasks refer to their keys,
    which the scheduler knows, and sending the keys' graph with every pass would make the
    scheduler order and check every key before starting the pass (bench/README.md).
    """
    data = [] if source.chunk_holders is not None else [source.data]
    return data + ([] if source.weights is None else [source.weights])


def client_merges(source, block_fn, split_every):
    """How many partial results the client fetches and merges itself.

    Fetching a few small results costs the client the same round trip as fetching one, without
    first moving them to the worker of a combine task and waiting for it there (bench/README.md).
    So the client merges up to ``split_every ** 2`` results if they hold at most
    ``_CLIENT_MERGE_BYTES``, judging by the size of ``block_fn``'s result in the first pass over
    ``source``, else (and on that first pass) up to ``split_every``.
    """
    nbytes = source.result_nbytes.get(block_fn)
    if nbytes is not None and nbytes * split_every**2 <= _CLIENT_MERGE_BYTES:
        return split_every**2
    return split_every


def _add_combine_tasks(layer, name, level, split_every, merges):
    """Add to ``layer`` tasks merging the results at keys ``level`` until at most ``merges``
    are left, and return their keys.

    Each task merges ``split_every`` consecutive results, or ``split_every ** 2`` while more
    than ``split_every * merges`` are left (half the round trips between workers and
    scheduler). Partial trees merge into the same tree in any grouping (:mod:`daskgmm.tree`),
    so this shapes only the work, never the result.
    """
    depth = 0
    while len(level) > merges:
        depth += 1
        fan_in = split_every**2 if len(level) > split_every * merges else split_every
        next_level = []
        for i in range(0, len(level), fan_in):
            key = (name, depth, i // fan_in)
            parts = [TaskRef(k) for k in level[i : i + fan_in]]
            layer[key] = Task(key, _combine_group, *parts)
            next_level.append(key)
        level = next_level
    return level


def block_inputs(array):
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
    Zarr array object, and the scheduler runs them all on the worker that holds it, leaving the
    other workers idle (bench/README.md).
    """
    subs = {key: data[key] for key in task.dependencies if key in data}
    return task.substitute(subs) if subs else task
