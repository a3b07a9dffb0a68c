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
    """Cut ``blocks`` into runs of at most ``size``, starting at multiples of ``size`` and
    wherever the next block is held by another worker (``holders``, one per block, or None).

    So that no task of a pass over persisted chunks waits for another worker's chunks to be
    moved to it, and every worker runs the chunks it holds: a pass is then as balanced as the
    chunks are (runs cut at multiples of ``size`` alone were not; see bench/README.md).
    """
    runs = []
    for index, block in enumerate(blocks):
        moved = holders is not None and index > 0 and holders[index] != holders[index - 1]
        if not runs or index % size == 0 or moved:
            runs.append([])
        runs[-1].append(block)
    return runs


def chunk_holders(array, inputs):
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
