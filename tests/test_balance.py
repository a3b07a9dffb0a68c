"""Persisted chunks spread unevenly over the workers are evened out once, at the start of a fit.

The uneven spreads are made by hand (a worker annotation per chunk), as ``persist`` may leave
them; the product never needs that. On a real in-process cluster of three workers: where the
passes' chunks are held and run, how many were copied (the surplus, no more), that even and
streamed inputs are left alone, and that the model is the same to the bit however the chunks
were spread. With worker processes: a fit survives losing the worker the copies went to.
"""

import logging
import os
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (
    assert_same_model, initial_parameters, make_blobs, process_cluster, wait_until_processing,
    write_zarr)
from daskgmm import GaussianMixture
from daskgmm.balance import chosen_holders, surplus_moves
from daskgmm.engine import dask_row_data, map_reduce

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_CHUNKS = 16
CHUNK_ROWS = 500
N_WORKERS = 3


@pytest.fixture(scope="module")
def client():
    """A real distributed scheduler with three in-process single-threaded workers."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def data():
    return make_blobs(n_samples=N_CHUNKS * CHUNK_ROWS, n_features=3, n_components=3, scale=2.0)


def fewest_moves(counts, n_chunks):
    """The oracle: the fewest chunks to move for every worker (equal threads) to hold its fair
    share rounded up or down, found by trying every choice of the workers rounded up."""
    floor, extra = divmod(n_chunks, len(counts))
    return min(sum(max(0, count - floor - (worker in rounded_up))
                   for worker, count in enumerate(counts))
               for rounded_up in combinations(range(len(counts)), extra))


def persisted_on(client, data, holder_of):
    """``data`` persisted in chunks of CHUNK_ROWS, chunk ``i`` on worker ``holder_of[i]``."""
    from distributed import wait

    workers = sorted(client.scheduler_info()["workers"])
    with dask.annotate(workers=lambda key: [workers[holder_of[key[1]]]],
                       allow_other_workers=False):
        # A new name every time: keys persisted by an earlier test would keep their places.
        array = da.from_array(data, chunks=(CHUNK_ROWS, data.shape[1]), name=False)
        array = array.map_blocks(np.copy)
    persisted = client.persist(array, optimize_graph=False)
    wait(persisted)
    return persisted


def rows_by_worker(block, row_weights, position):
    """A block function: the rows of the block, counted for the worker that runs it."""
    from distributed import get_worker

    return Counter({get_worker().address: len(block)})


def counts_by_worker(client, holders):
    return [holders.count(worker) for worker in sorted(client.scheduler_info()["workers"])]


UNEVEN = {
    "all on one worker": [0] * N_CHUNKS,
    "10 and 6, one worker empty (joined late)": [0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0],
    "10, 4 and 2": [0] * 6 + [1, 2] * 2 + [0, 1] * 2 + [0, 0],
}
EVEN = {
    "dealt in turn": [i % N_WORKERS for i in range(N_CHUNKS)],
    "in runs": [i * N_WORKERS // N_CHUNKS for i in range(N_CHUNKS)],
}


@pytest.mark.parametrize("holder_of", UNEVEN.values(), ids=UNEVEN.keys())
def test_uneven_chunks_are_evened_out_once_by_copying_only_the_surplus(client, data,
                                                                       holder_of):
    from distributed import get_task_stream

    X = persisted_on(client, data, holder_of)
    originals = client.who_has(X)
    source = dask_row_data(X, None)
    held = source.held_chunks

    counts = counts_by_worker(client, held.holders)
    assert max(counts) - min(counts) <= 1 and sum(counts) == N_CHUNKS
    copied = [i for i, item in enumerate(held.inputs) if item.key != X.__dask_keys__()[i][0]]
    held_before = [holder_of.count(w) for w in range(N_WORKERS)]
    assert len(copied) == len(held.copies) == fewest_moves(held_before, N_CHUNKS) > 0
    # Every chunk is where the passes' tasks are cut for, and the passes run it there.
    located = client.who_has()
    assert [min(located[item.key]) for item in held.inputs] == held.holders
    with get_task_stream(client) as stream:
        ran = [map_reduce(source, rows_by_worker) for _ in range(2)]
    expected = Counter({worker: CHUNK_ROWS * held.holders.count(worker)
                        for worker in set(held.holders)})
    assert ran == [expected, expected]
    block_tasks = [task for task in stream.data
                   if "daskgmm-pass" in str(task["key"]) and task["key"][1] == 0]
    assert not [part for task in block_tasks for part in task["startstops"]
                if part["action"] == "transfer"]
    # Once: later passes run on the same copies; the user's own chunks are still held where
    # they were (a copy's target fetched the original to copy it, for a while).
    assert source.held_chunks is held
    now = client.who_has(X)
    assert all(set(originals[key]) <= set(now[key]) for key in originals)


@pytest.mark.parametrize("holder_of", EVEN.values(), ids=EVEN.keys())
def test_even_chunks_are_not_copied(client, data, holder_of):
    X = persisted_on(client, data, holder_of)

    held = dask_row_data(X, None).held_chunks

    assert held.copies == ()
    assert [item.key for item in held.inputs] == [key for (key,) in X.__dask_keys__()]


@pytest.mark.parametrize("kind", ["zarr", "graph"])
def test_streamed_inputs_are_not_copied(client, data, tmp_path, kind, caplog):
    if kind == "zarr":
        X = da.from_zarr(str(write_zarr(tmp_path / "X.zarr", da.from_array(
            data, chunks=(CHUNK_ROWS, 3)))))
    else:
        X = da.from_array(data, chunks=(CHUNK_ROWS, 3)).map_blocks(np.copy)
    init = initial_parameters(data, "full")

    with caplog.at_level(logging.INFO, logger="daskgmm"):
        GaussianMixture(3, max_iter=2, tol=0.0, **init).fit(X)

    assert dask_row_data(X, None).held_chunks is None
    assert "evened out" not in caplog.text


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_the_model_is_the_same_to_the_bit_however_the_chunks_were_spread(client, data,
                                                                         covariance_type):
    # k-means initialisation: its passes run on the evened-out chunks too.
    options = dict(covariance_type=covariance_type, max_iter=6, tol=0.0, random_state=0)
    even = GaussianMixture(3, **options).fit(persisted_on(client, data, EVEN["in runs"]))
    for holder_of in UNEVEN.values():
        uneven = GaussianMixture(3, **options).fit(persisted_on(client, data, holder_of))
        assert_same_model(uneven, even)


def test_one_log_line_says_how_many_chunks_moved_where_and_their_bytes(client, data, caplog):
    X = persisted_on(client, data, UNEVEN["all on one worker"])
    source, target, *_ = sorted(client.scheduler_info()["workers"])

    with caplog.at_level(logging.INFO, logger="daskgmm"):
        GaussianMixture(3, max_iter=2, tol=0.0, **initial_parameters(data, "diag", 3),
                        covariance_type="diag").fit(X)

    (line,) = [record.getMessage() for record in caplog.records
               if "evened out" in record.getMessage()]
    assert f"10 of {N_CHUNKS} chunks ({10 * CHUNK_ROWS * 3 * 8 / 2**20:.1f} MiB) copied" in line
    assert f"{source} -> {target}: 5" in line


def test_a_worker_that_joined_late_gets_its_share(client, data):
    X = persisted_on(client, data, EVEN["dealt in turn"])
    client.cluster.scale(N_WORKERS + 1)
    try:
        client.wait_for_workers(N_WORKERS + 1, timeout=60)
        held = dask_row_data(X, None).held_chunks
        assert counts_by_worker(client, held.holders) == [4, 4, 4, 4]
        assert len(held.copies) == 2 + 1 + 1
    finally:
        client.cluster.scale(N_WORKERS)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 4).flatmap(
    lambda n_workers: st.lists(st.integers(0, n_workers - 1), min_size=1, max_size=30)
    .map(lambda holders: (n_workers, holders))))
def test_moves_are_the_fewest_that_even_the_chunks_out(spread):
    n_workers, holders = spread
    workers = [f"w{i}" for i in range(n_workers)]

    moves = surplus_moves([workers[i] for i in holders], [CHUNK_ROWS] * len(holders),
                          dict.fromkeys(workers, 1))

    after = list(holders)
    for chunk, target in moves:
        assert after[chunk] == holders[chunk]  # a chunk moves once, from its own worker
        after[chunk] = workers.index(target)
    counts = [after.count(i) for i in range(n_workers)]
    assert max(counts) - min(counts) <= 1
    assert len(moves) == fewest_moves([holders.count(i) for i in range(n_workers)],
                                      len(holders))


@pytest.mark.parametrize("rows, nthreads, expected", [
    # Twice the threads, twice the rows.
    ([100] * 12, {"a": 2, "b": 1}, {"a": 8, "b": 4}),
    # By rows, not chunks: the one large chunk stays, the small ones go.
    ([600] + [100] * 6, {"a": 1, "b": 1}, {"a": 1, "b": 6}),
])
def test_shares_are_rows_per_thread(rows, nthreads, expected):
    holders = ["b"] * len(rows)

    moves = surplus_moves(holders, rows, nthreads)

    for chunk, target in moves:
        holders[chunk] = target
    assert Counter(holders) == expected


def test_a_chunk_held_twice_counts_for_the_worker_with_fewer_rows():
    # A task fetched chunks 0 and 1 to worker b: b, which holds less, runs them; no copy.
    holders = [("a", "b"), ("a", "b"), ("a",), ("a",), ("b",)]
    rows = [100] * 5

    chosen = chosen_holders(holders, rows, {"a": 1, "b": 1})

    assert chosen == ["b", "a", "a", "a", "b"]
    assert surplus_moves(chosen, rows, {"a": 1, "b": 1}) == []


@pytest.mark.slow
def test_a_fit_survives_losing_the_worker_the_copies_went_to(tmp_path, caplog):
    # Processes: the copies travel between workers. All chunks persisted on one worker, so the
    # other gets the copies; killing it mid-fit loses them, and the scheduler recomputes them
    # on the survivor (a copy's target is a preference, not a requirement).
    from test_failures import FIT_TIMEOUT_SECONDS, iterations_logged, model

    data = make_blobs(n_samples=2_000_000, seed=1, scale=2.0)
    means = data[[0, len(data) // 2, len(data) - 1]]
    X = da.from_zarr(str(write_zarr(tmp_path / "X.zarr", da.from_array(
        data, chunks=(100_000, 3)))))
    with ThreadPoolExecutor(1) as pool, process_cluster(tmp_path) as (client, workers):
        reference = model(means, max_iter=10).fit(X)
        pids = client.run(os.getpid)
        keeper = min(pids)
        (victim,) = [worker for worker in workers if worker.pid != pids[keeper]]
        # Strictly: the keeper survives, so its chunks are never computed again elsewhere.
        persisted = client.persist(X, workers=[keeper], allow_other_workers=False)
        with iterations_logged(2) as second_iteration_done, \
                caplog.at_level(logging.INFO, logger="daskgmm"):
            fit = pool.submit(model(means, max_iter=10).fit, persisted)
            assert second_iteration_done.wait(FIT_TIMEOUT_SECONDS)
            wait_until_processing(client, victim.pid, FIT_TIMEOUT_SECONDS)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            interrupted = fit.result(timeout=FIT_TIMEOUT_SECONDS)
    assert "10 of 20 chunks" in caplog.text
    assert_same_model(interrupted, reference)
