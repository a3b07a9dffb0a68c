"""The job runner on a cluster of real processes: a worker killed mid-fit, a worker out of memory.

``python -m daskgmm.run`` runs in a subprocess against separately started ``dask scheduler`` and
``dask worker`` processes (each worker under a nanny) on 127.0.0.1, through ``cluster.address``.
Every run has a deadline: a job that hangs is killed and fails its test.
"""

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from numpy.testing import assert_array_equal

from conftest import (
    assert_same_model,
    kill_group,
    make_blobs,
    process_cluster,
    wait_until_processing,
    write_zarr,
)
from daskgmm import GaussianMixture
from daskgmm.ownership import write_marker
from daskgmm.run import main
from jobs_helpers import run_runner


REPO = Path(__file__).resolve().parents[2]
JOB_SECONDS = 120
MAX_ITER = 8


def write_job(data, output, address):
    """A fit job of ``MAX_ITER`` EM iterations on the scheduler at ``address``; return its file."""
    job = {
        "pipeline": "fit",
        "input": {"path": str(data)},
        "model": {"n_components": 3, "tol": 0.0, "max_iter": MAX_ITER, "random_state": 0},
        "output": {"path": str(output), "probabilities": False},
        "cluster": {"address": address, "timeout": 60},
    }
    path = output.with_name(output.name + ".yaml")
    path.write_text(yaml.safe_dump(job))
    return path


@contextmanager
def started_job(job_file):
    """Start the runner on ``job_file``; yield the process, whose stderr is a pipe of text.

    A watchdog kills the job if it runs past ``JOB_SECONDS``, which ends its stderr too.
    """
    process = subprocess.Popen([sys.executable, "-m", "daskgmm.run", str(job_file)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    watchdog = threading.Timer(JOB_SECONDS, kill_group, (process,))
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        kill_group(process)
        process.stderr.close()


def finished(process, seen=""):
    """Wait for a started job; return its exit status and all it wrote to stderr."""
    stderr = seen + process.stderr.read()
    status = process.wait()
    assert status != -signal.SIGKILL, f"the job hung for {JOB_SECONDS} s:\n{stderr}"
    return status, stderr


def read_until(process, words):
    """Read the job's stderr up to the line holding ``words``; return what was read."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if words in line:
            return "".join(seen)
    raise AssertionError(f"the job ended before logging {words!r}:\n{''.join(seen)}")


def worker_pids(client):
    return sorted(client.run(os.getpid).values())


def assert_same_saved_model(output, reference):
    model = GaussianMixture.load(output / "model.zarr")
    assert_same_model(model, GaussianMixture.load(reference / "model.zarr"), rtol=1e-12)
    assert model.n_iter_ == MAX_ITER


def labels(output):
    return zarr.open_group(str(output / "result.zarr"), mode="r")["labels"][...]


@pytest.mark.slow
def test_job_survives_a_killed_worker_and_saves_the_same_model(tmp_path):
    data = tmp_path / "rows.zarr"
    # Enough rows that the passes after the second iteration last long enough (hundreds of
    # milliseconds in all) for the victim to be caught running one.
    zarr.create_array(str(data), data=make_blobs(n_samples=2_000_000, seed=1, scale=2.0),
                      chunks=(100_000, 3))
    reference, output = tmp_path / "reference", tmp_path / "out"
    with process_cluster(tmp_path, nanny=True) as (client, _):
        address = client.scheduler.address
        done = run_runner(write_job(data, reference, address), timeout=JOB_SECONDS)
        assert done.returncode == 0, done.stderr
        with started_job(write_job(data, output, address)) as process:
            seen = read_until(process, " iteration 2 lower bound")
            victim = worker_pids(client)[0]
            wait_until_processing(client, victim, JOB_SECONDS)
            os.kill(victim, signal.SIGKILL)  # the worker, not its nanny, which starts a new one
            status, stderr = finished(process, seen)
        assert status == 0, stderr
        assert f" iteration {MAX_ITER} lower bound" in stderr[len(seen):]  # killed mid-fit
        client.wait_for_workers(2, timeout=JOB_SECONDS)
        assert victim not in worker_pids(client)
    assert_same_saved_model(output, reference)
    assert_array_equal(labels(output), labels(reference))


def write_big_chunks(path, chunk_rows, n_chunks):
    """Rows of small whole numbers, in chunks of ``chunk_rows``: big in memory, small on disk."""
    rows = zarr.create_array(str(path), shape=(chunk_rows * n_chunks, 3), dtype="float64",
                             chunks=(chunk_rows, 3))
    rng = np.random.default_rng(0)
    for start in range(0, rows.shape[0], chunk_rows):
        rows[start:start + chunk_rows] = rng.integers(0, 8, size=(chunk_rows, 3))


@pytest.mark.slow
def test_job_with_a_worker_out_of_memory_fails_clearly(tmp_path):
    """A chunk (192 MiB) too big for a worker's 200 MiB limit: the nanny kills the worker.

    The workers never pause: where dask.array finds xarray (and so pandas) to import, a
    worker's imports alone take ~160 MiB, the 80% at which it would pause for good and the
    job wait for ever. Every worker that tries a task reading the chunk dies, so the job
    fails (exit status 1) with one paragraph saying that workers died and what to do, writes nothing, and leaves the
    cluster with both its workers restored.
    """
    data, output = tmp_path / "rows.zarr", tmp_path / "out"
    write_big_chunks(data, chunk_rows=8 * 2**20, n_chunks=2)
    cluster = process_cluster(tmp_path, nanny=True, memory_limit="200MiB", pause=False)
    with cluster as (client, _):
        done = run_runner(write_job(data, output, client.scheduler.address),
                          timeout=JOB_SECONDS)
        status, stderr = done.returncode, done.stderr
        client.wait_for_workers(2, timeout=JOB_SECONDS)
    assert status == 1, stderr
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("daskgmm.run: the fit job") and "KilledWorker: " in message
    assert "workers died" in message and "memory" in message and "--verbose" in message
    assert not output.exists()


def test_resume_from_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    write_zarr(tmp_path / "rows.zarr", make_blobs(n_samples=300))
    (tmp_path / "out.checkpoint").mkdir()  # a checkpoint's marker, but no Zarr group in it
    write_marker(tmp_path / "out.checkpoint", "checkpoint", "out.checkpoint", complete=True)
    job = write_job(tmp_path / "rows.zarr", tmp_path / "out", "tcp://127.0.0.1:1")
    assert main([str(job), "--resume"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"error: {job}: checkpoint: cannot read {tmp_path / 'out.checkpoint'}")
    assert "without --resume" in stderr and not (tmp_path / "out").exists()
