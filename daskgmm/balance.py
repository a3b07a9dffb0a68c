"""Persisted chunks evened out over the workers once, before the passes of a fit run on them.

``persist`` leaves chunks wherever the scheduler put them (10 of 16 on one of two workers, or
all on one); every pass, whose tasks run where their chunks are held (:mod:`daskgmm.placement`),
would then wait for the fullest worker. So the surplus chunks of the workers holding more than
their share (rows per thread) are copied, once, to the workers holding less, and the passes use
the copies. The user's own chunks are never moved or freed: their futures keep them, so the
moved chunks are held twice while the fit runs (no public API moves a key; the active memory
manager may later drop the replica of an original that its copy's worker fetched, never a copy).
"""

import logging
from dataclasses import dataclass
from itertools import groupby

from dask.base import tokenize

from .dask_compat import TaskRef, active_client

logger = logging.getLogger(__name__)

MiB = 2**20


@dataclass(frozen=True)
class HeldChunks:
    """The chunks a fit's passes run on: one key reference and one holding worker per chunk,
    and the futures of the chunks copied to even them out (held for as long as the fit runs)."""

    inputs: list
    holders: list
    copies: tuple = ()


def surplus_moves(holders, rows, nthreads):
    """The fewest chunks to move so that rows per thread are even: ``[(chunk, worker)]``.

    ``holders``: the worker holding each chunk; ``rows``: each chunk's rows; ``nthreads``: the
    threads of every worker, holding chunks or not. Chunks move one at a time from the worker
    with the most rows per thread to the one with the fewest, while that lowers the most; a
    worker only gives or only receives, and a chunk moves at most once, so only the surplus
    above each worker's share moves.
    """
    threads = {**{worker: 1 for worker in holders}, **nthreads}
    load = dict.fromkeys(threads, 0)
    for worker, count in zip(holders, rows):
        load[worker] += count
    current = list(holders)
    moves, givers, receivers = [], set(), set()
    while True:
        per_thread = {worker: load[worker] / threads[worker] for worker in load}
        giver = max(load, key=lambda worker: (per_thread[worker], worker))
        others = [worker for worker in load if worker not in givers and worker != giver]
        if giver in receivers or not others:
            return moves
        receiver = min(others, key=lambda worker: (per_thread[worker], worker))
        room = per_thread[giver] * threads[receiver] - load[receiver]
        chunk = _chunk_to_move(current, holders, rows, giver, room)
        if chunk is None:
            return moves
        moves.append((chunk, receiver))
        givers.add(giver)
        receivers.add(receiver)
        current[chunk] = receiver
        load[giver] -= rows[chunk]
        load[receiver] += rows[chunk]


def chosen_holders(holders, rows, nthreads):
    """One worker per chunk from the workers holding it (``holders``, tuples): the only one,
    or of several the one with the fewest rows per thread once the others are counted."""
    threads = {**{worker: 1 for held in holders for worker in held}, **nthreads}
    load = dict.fromkeys(threads, 0)
    for held, count in zip(holders, rows):
        if len(held) == 1:
            load[held[0]] += count
    chosen = []
    for held, count in zip(holders, rows):
        worker = min(held, key=lambda name: (load[name] / threads[name], name))
        if len(held) > 1:
            load[worker] += count
        chosen.append(worker)
    return chosen


def _chunk_to_move(current, holders, rows, giver, room):
    """The largest (then last) chunk ``giver`` still holds of its own with fewer than ``room``
    rows, or None."""
    candidates = [index for index, worker in enumerate(current)
                  if worker == giver and holders[index] == giver and rows[index] < room]
    return max(candidates, key=lambda index: (rows[index], index), default=None)


def evened_out(array, inputs, holders):
    """The chunks of persisted ``array`` for a fit's passes, evened out over the workers of the
    active client (:func:`surplus_moves`): ``inputs`` (key references, one per chunk) with the
    moved chunks replaced by their copies, and where every chunk is held.

    ``holders`` are the workers holding each chunk; of several, the chunk counts for the one
    with the fewest rows per thread (:func:`chosen_holders`).
    """
    client = active_client()
    nthreads = client.nthreads()
    holders = chosen_holders(holders, array.chunks[0], nthreads)
    moves = surplus_moves(holders, array.chunks[0], nthreads)
    if not moves:
        return HeldChunks(list(inputs), list(holders))
    copies = _copies(client, array, inputs, moves)
    placed = client.who_has(copies)
    moved_inputs, moved_holders = list(inputs), list(holders)
    for (chunk, target), copy in zip(moves, copies):
        moved_inputs[chunk] = TaskRef(copy.key)
        # A copy lands elsewhere only if its target left meanwhile.
        moved_holders[chunk] = min(placed.get(copy.key) or (target,))
    _log_moves(array, holders, moved_holders, [chunk for chunk, _ in moves])
    return HeldChunks(moved_inputs, moved_holders, tuple(copies))


def _copies(client, array, inputs, moves):
    """Copy each moved chunk to its target worker; return the copies' futures once held.

    A copy is a task on the original chunk restricted to its target loosely: if the target
    dies, the scheduler recomputes the copy on another worker instead of waiting for the target
    forever. Its key is named by the chunk and the target, so fits of the same placement run
    passes of the same graph.
    """
    from distributed import futures_of, wait

    originals = {future.key: future for future in futures_of(array)}
    copies = []
    for chunk, target in moves:
        original = originals[inputs[chunk].key]
        copies.append(client.submit(chunk_copy, original, workers=[target],
                                    allow_other_workers=True,
                                    key=f"daskgmm-chunk-copy-{tokenize(original.key, target)}"))
    wait(copies)
    return copies


def chunk_copy(block):
    """The chunk itself, held under a new key on the worker this runs on."""
    return block


def _log_moves(array, before, after, moved):
    """Log one line: how many chunks moved, from and to which workers, and their bytes."""
    nbytes = sum(array.chunks[0][chunk] for chunk in moved) * array.dtype.itemsize
    nbytes *= array.shape[1]
    routes = sorted((before[chunk], after[chunk]) for chunk in moved)
    described = ", ".join(f"{source} -> {target}: {len(list(group))}"
                          for (source, target), group in groupby(routes))
    logger.info("persisted chunks evened out over the workers: %d of %d chunks (%.1f MiB) "
                "copied (%s)", len(moved), len(before), nbytes / MiB, described)
