"""Which chunks each first-level task of a pass runs, and on which worker they are held.

How chunks are cut into tasks decides where and how evenly the work runs, never the result
(:mod:`daskgmm.tree`).
"""

import os

from .dask_compat import active_client

# Small unheld Dask chunks are run several to a task (see blocks_per_task).
TASK_BYTES = 32 * 2**20
MAX_BLOCKS_PER_TASK = 8
TASKS_PER_THREAD = 4


def task_runs(blocks, size, holders=None):
    """The blocks each first-level task of a pass runs, at most ``size`` to a task.

    Without ``holders``: runs of consecutive blocks starting at multiples of ``size``. With
    ``holders`` (the worker holding each block): each worker's blocks in order, ``size`` at a
    time, consecutive or not (:mod:`daskgmm.tree_runs` merges them into the same tree). So no
    task of a pass over persisted chunks waits for another worker's chunks to be moved to it,
    every worker runs the chunks it holds, and however ``persist`` interleaved them it runs
    them in as few tasks as if they were consecutive: a task costs a few milliseconds besides
    its work (bench/README.md). A pass is then as balanced as the chunks are, and
    :mod:`daskgmm.balance` evens the chunks out first.
    """
    if holders is None:
        return [blocks[start : start + size] for start in range(0, len(blocks), size)]
    by_worker = {}
    for block, worker in zip(blocks, holders):
        by_worker.setdefault(worker, []).append(block)
    return [held[start : start + size] for held in by_worker.values()
            for start in range(0, len(held), size)]


def chunk_holders(array, inputs):
    """The workers holding each chunk of ``array`` (``inputs``: key references, one per chunk),
    as sorted tuples, if all are held on the distributed cluster of the active client, else
    None. A chunk is held by several workers once a task has fetched it."""
    from distributed import futures_of, wait

    client = active_client()
    if client is None:
        return None
    futures = futures_of(array)
    # Persisting is asynchronous: chunks still being computed are held nowhere yet.
    wait(futures)
    who_has = client.who_has(futures)
    holders = [tuple(sorted(who_has.get(item.key) or ())) for item in inputs]
    return holders if all(holders) else None


def blocks_per_task(array, held):
    """How many consecutive chunks of ``array`` one first-level task of a pass runs, at most.

    Chunks already held in memory (``held``: persisted) are run a thread's share to a task:
    a task costs a few milliseconds of the scheduler's and the worker's time besides its
    work (bench/README.md), and a task of held chunks costs no memory. Runs also end where
    the holding worker changes (:func:`task_runs`), so each worker gets about one task per
    thread.

    Chunks that a task computes (read, generate) are held in memory by the task all at once:
    one to a task, unless small; then up to ``MAX_BLOCKS_PER_TASK`` of them and about
    ``TASK_BYTES`` of data per task, but never so many that fewer than ``TASKS_PER_THREAD``
    tasks are left per thread of the cluster to spread evenly.
    """
    n_chunks = array.numblocks[0]
    if held:
        return max(1, -(-n_chunks // cluster_threads()))
    by_size = int(TASK_BYTES * n_chunks // max(array.nbytes, 1))
    by_parallelism = n_chunks // (TASKS_PER_THREAD * cluster_threads())
    return max(1, min(MAX_BLOCKS_PER_TASK, by_size, by_parallelism))


def cluster_threads():
    """Threads of the workers of the default distributed client, else this machine's cores."""
    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1
