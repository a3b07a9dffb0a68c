"""A damaged Zarr chunk is named with its store; tracebacks only with --verbose, none on success.

The inputs are Zarr stores written by zarr, with one chunk file overwritten with garbage or cut to
zero bytes. Jobs run as ``python -m daskgmm.run`` in a subprocess; the estimator runs on the
module's in-process cluster and on Dask's threaded scheduler.
"""

from collections import Counter

import numpy as np
import pytest
import yaml
import zarr

from conftest import make_blobs
from daskgmm import GaussianMixture
from daskgmm.reading import ChunkReadError
from daskgmm.store import open_array
from jobs_helpers import run_runner

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

JOB_SECONDS = 300
ROWS, CHUNK_ROWS = 4000, 500
DAMAGED_CHUNK = "c/3/0"  # rows 1500-1999, as zarr 3 names the chunk file
# Runs a job as `python -m daskgmm.run` does, but logs what a closing cluster's scheduler logs
# when one of its last batched sends finds a connection closed, at the point of the close where
# that was seen: after the cluster has restored its own log level, while its event loop runs.
LATE_RECORD_RUNNER = """
import logging, sys
from distributed.comm import CommClosedError
from distributed.deploy.cluster import Cluster
from daskgmm.run import main

closing = Cluster._close

async def close_logging_late(self):
    logging.getLogger("distributed.batched").info(
        "Batched Comm Closed", exc_info=CommClosedError("in <InProc (closed)>: emulated"))
    await closing(self)

Cluster._close = close_logging_late
sys.exit(main(sys.argv[1:]))
"""


def write_store(path, compressed=True):
    """Rows written by zarr in chunks of ``CHUNK_ROWS`` rows (zstd, or with no compressor)."""
    options = {} if compressed else {"compressors": None}
    zarr.create_array(str(path), data=make_blobs(n_samples=ROWS), chunks=(CHUNK_ROWS, 3),
                      **options)
    return path


def damage(store, how):
    """Overwrite the chunk file ``DAMAGED_CHUNK`` of ``store`` with garbage, or truncate it."""
    chunk = store / DAMAGED_CHUNK
    assert chunk.stat().st_size > 0
    chunk.write_bytes(np.random.default_rng(0).bytes(200) if how == "garbage" else b"")
    return store


@pytest.fixture(params=["garbage", "empty"])
def damaged_store(request, tmp_path):
    # Garbage fails zstd; an empty chunk of an uncompressed store fails NumPy's reshape.
    store = write_store(tmp_path / "rows.zarr", compressed=request.param == "garbage")
    return damage(store, request.param)


def write_job(tmp_path, data, processes):
    """A fit job (as configs/fit.yaml) on ``data`` on a local cluster of two workers."""
    job = {
        "pipeline": "fit",
        "input": {"path": str(data)},
        "model": {"n_components": 3, "max_iter": 5, "random_state": 0},
        "output": {"path": str(tmp_path / "out"), "overwrite": True, "probabilities": False},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "processes": processes,
                    "dashboard_address": ":0"},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def assert_names_the_chunk(message, store):
    assert f"cannot read chunk {DAMAGED_CHUNK} of the Zarr array {store} " in message, message
    assert f"(file {store / DAMAGED_CHUNK})" in message, message
    assert "damaged or truncated" in message, message


# ---------------------------------------------------------------- the job runner


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True])
def test_a_damaged_chunk_fails_the_job_in_one_paragraph_naming_it(tmp_path, damaged_store,
                                                                   processes):
    done = run_runner(write_job(tmp_path, damaged_store, processes), timeout=JOB_SECONDS)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("daskgmm.run: the fit job") and "ChunkReadError: " in message
    assert_names_the_chunk(message, damaged_store)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_damaged_chunk_shows_its_traceback_with_verbose(tmp_path, damaged_store):
    done = run_runner(write_job(tmp_path, damaged_store, processes=False), "--verbose",
                      timeout=JOB_SECONDS)

    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert_names_the_chunk(done.stderr.strip().splitlines()[-1], damaged_store)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True])
def test_a_successful_job_prints_no_traceback(tmp_path, processes):
    # Whether the scheduler's last sends find a connection closed depends on timing: each run
    # also logs such a record late in the close, so that the test does not.
    job = write_job(tmp_path, write_store(tmp_path / "rows.zarr"), processes)
    for args in ([], ["--verbose"]):
        done = run_runner(job, *args, runner=("-c", LATE_RECORD_RUNNER), timeout=JOB_SECONDS)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "CommClosedError" not in done.stderr, \
            done.stderr


# ---------------------------------------------------------------- the estimator


def test_a_fit_on_the_cluster_reads_chunks_in_its_pass_tasks_and_names_a_damaged_one(tmp_path,
                                                                                     client):
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        GaussianMixture(3, max_iter=3, random_state=0).fit(
            open_array(write_store(tmp_path / "rows.zarr")))
    # Every chunk is read inside a pass's task (none has a task of its own), on both workers.
    assert stream.data and all("daskgmm-pass-" in str(task["key"]) for task in stream.data)
    assert len(Counter(task["worker"] for task in stream.data)) == 2

    store = damage(write_store(tmp_path / "damaged.zarr"), "garbage")
    with pytest.raises(ChunkReadError) as raised:
        GaussianMixture(3, max_iter=3, random_state=0).fit(open_array(store))
    assert_names_the_chunk(str(raised.value), store)
    assert raised.value.chunk == DAMAGED_CHUNK and raised.value.array == str(store)


@pytest.mark.parametrize("opened", [open_array, lambda path: zarr.open(str(path), mode="r")],
                         ids=["store.open_array", "zarr.Array"])
def test_a_fit_on_threads_names_the_damaged_chunk(tmp_path, damaged_store, threads, opened):
    with pytest.raises(ChunkReadError) as raised:
        GaussianMixture(3, max_iter=3, random_state=0).fit(opened(damaged_store))
    assert_names_the_chunk(str(raised.value), damaged_store)
