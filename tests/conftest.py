"""Shared fixtures and checks: a real LocalCluster, a cluster of real processes, reproducible
mixture data, and the comparison of two fitted models."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_limits

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
# The fitted parameters of a GaussianMixture (daskgmm's or scikit-learn's).
FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
DASK = str(Path(sys.executable).parent / "dask")
# As a nanny would set them: one BLAS thread per single-threaded worker.
WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STARTUP_SECONDS = 60


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Small matrices: BLAS threads only contend with the Dask threads on a small machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def threads():
    """Run Dask work on the threaded scheduler, even while the module's cluster is up."""
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def client():
    """A real distributed scheduler with two in-process workers, one per module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        yield dask_client


@contextmanager
def process_cluster(directory, n_workers=2, nanny=False, memory_limit="0", pause=True):
    """Yield a Client of a scheduler and ``n_workers`` single-threaded worker processes.

    Real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, each in its own process
    group, killed with it on exit. Also yields the workers' ``Popen`` objects; without a nanny,
    each is the worker process, with one it is the nanny (the worker is its child). With
    ``pause=False`` the workers never pause at 80% of ``memory_limit``.
    """
    from distributed import Client

    scheduler_file = directory / "scheduler.json"
    processes = []
    client = None
    try:
        processes.append(_spawn([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--scheduler-file", str(scheduler_file)]))
        _wait_for_file(scheduler_file)
        worker = [DASK, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                  "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard",
                  "--memory-limit", memory_limit, "--nanny" if nanny else "--no-nanny"]
        settings = {} if pause else {"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"}
        processes += [_spawn(worker + ["--name", f"worker-{i}"], settings)
                      for i in range(n_workers)]
        client = Client(scheduler_file=str(scheduler_file), timeout=STARTUP_SECONDS)
        client.wait_for_workers(n_workers, timeout=STARTUP_SECONDS)
        yield client, processes[1:]
    finally:
        if client is not None:
            client.close(timeout=10)
        for process in processes:
            kill_group(process)


def _spawn(command, settings=None):
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, **WORKER_ENVIRONMENT, **(settings or {})})


def kill_group(process):
    """SIGKILL a process started in its own session, with its children; reap it."""
    if process.poll() is not None:  # reaped: its id may already belong to another process
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _wait_for_file(path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler wrote no {path} in {STARTUP_SECONDS} s")
        time.sleep(0.05)


def wait_until_processing(client, pid, timeout):
    """Return once the worker with process id ``pid`` is running a task of an EM pass."""
    (address,) = [address for address, worker_pid in client.run(os.getpid).items()
                  if worker_pid == pid]
    deadline = time.monotonic() + timeout
    while not any("daskgmm-pass" in str(key) for key in client.processing([address])[address]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {address} ran no task of a pass")


def make_blobs(n_samples=2003, n_features=3, n_components=3, seed=0, scale=6.0):
    """Rows drawn from ``n_components`` well separated anisotropic Gaussians (float64)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(n_components, n_features))
    sizes = np.full(n_components, n_samples // n_components)
    sizes[: n_samples % n_components] += 1
    parts = [
        rng.normal(size=(size, n_features)) @ rng.normal(size=(n_features, n_features)) * 0.5
        + centre
        for size, centre in zip(sizes, centres)
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def X():
    """600 rows of three separated blobs in three features (a module may define its own X)."""
    return make_blobs(n_samples=600, n_features=3, n_components=3)


@pytest.fixture(scope="module")
def fitted(X):
    """A three-component daskgmm model fitted on ``X`` (NumPy, random_state 0)."""
    from daskgmm import GaussianMixture

    return GaussianMixture(3, random_state=0).fit(X)


def with_value(X, value, row=3, column=1):
    """A copy of X with one entry (or, with a slice for ``column``, part of a row) replaced."""
    X = X.copy()
    X[row, column] = value
    return X


def assert_same_model(model, expected, rtol=None, atol=0.0):
    """``model`` has ``expected``'s fitted parameters, lower bounds, iterations and convergence.

    Without ``rtol``: to the bit, in the same dtype. With it: to that relative tolerance (and
    ``atol``), e.g. against scikit-learn.
    """
    for name in FITTED_ARRAYS:
        actual, wanted = getattr(model, name), getattr(expected, name)
        if rtol is None:
            assert actual.dtype == wanted.dtype, name
            assert_array_equal(actual, wanted, err_msg=name)
        else:
            assert_allclose(actual, wanted, rtol=rtol, atol=atol, err_msg=name)
    if rtol is None:
        assert list(model.lower_bounds_) == list(expected.lower_bounds_)
    else:
        assert_allclose(model.lower_bounds_, expected.lower_bounds_, rtol=rtol, atol=atol)
    assert (model.n_iter_, model.converged_) == (expected.n_iter_, expected.converged_)


def initial_parameters(X, covariance_type, n_components=3):
    """Parameters after a short scikit-learn fit: a fixed common starting point for EM."""
    from sklearn.mixture import GaussianMixture

    start = GaussianMixture(n_components, covariance_type=covariance_type, max_iter=3,
                            random_state=0).fit(X)
    return {
        "weights_init": start.weights_,
        "means_init": start.means_,
        "precisions_init": start.precisions_,
    }


def write_zarr(path, data):
    """Write a NumPy or Dask array as a Zarr array store with zarr itself (a user's input), in
    the Dask array's chunks (one chunk for NumPy); return the store's path."""
    import dask.array as da
    import zarr

    data = data if isinstance(data, da.Array) else da.from_array(data, chunks=data.shape)
    data = data.rechunk(data.chunksize)
    target = zarr.create_array(str(path), shape=data.shape, chunks=data.chunksize,
                               dtype=data.dtype)
    da.store(data, target, lock=False)
    return Path(path)


# ------------------------------------------------------------------ a real S3 server


@dataclass
class Bucket:
    """A bucket of the test S3 server: its name, the server's URL, and an s3fs client of it."""

    name: str
    endpoint_url: str
    fs: object

    def url(self, key):
        return f"s3://{self.name}/{key}"

    def options(self):
        """The fsspec options that reach the server (for readers outside a job)."""
        return {"endpoint_url": self.endpoint_url}

    def storage(self):
        """A job's ``storage`` section that reaches the server."""
        return {"s3": self.options()}

    def write_zarr(self, key, data):
        """Write ``data`` with zarr itself (a user's input) at ``s3://bucket/key``; return it."""
        import zarr

        target = zarr.create_array(self.url(key), shape=data.shape, chunks=data.shape,
                                   dtype=data.dtype,
                                   storage_options={"endpoint_url": self.endpoint_url})
        target[...] = data
        return self.url(key)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a loopback port, with dummy credentials in the environment.

    A real HTTP server, reached through s3fs as any S3 endpoint is: nothing inside this process
    is patched. No ``AWS_ENDPOINT_URL`` is set, so a job reaches it only through its config.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    """A new, empty bucket of the test S3 server."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return Bucket(name, s3_endpoint, fs)


def interrupted_fit(estimator, X, when, path):
    """Fit ``estimator`` on X until ``when(state)`` holds after an iteration (or online step);
    save that state as a checkpoint at ``path``, stop the fit there, and return the state read
    back from the checkpoint."""
    from daskgmm.checkpoint import read_fit_state, write_fit_state

    class Stop(Exception):
        pass

    def stop(state):
        if state.current is not None and when(state):
            write_fit_state(path, state)
            raise Stop

    try:
        estimator.fit(X, callback=stop)
    except Stop:
        return read_fit_state(path)[0]
    raise AssertionError("the fit ended before the moment to stop it")

