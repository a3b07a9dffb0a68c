"""Out of core: a fit streams a Zarr array larger than all worker memory, reading each chunk once.

840 MiB of float32 rows (uncompressed, so bytes on disk are bytes of data) on two worker
processes of 400 MiB each (importing scikit-learn alone would take ~130 MiB of each; the workers
import daskgmm's kernels only). The fit starts from explicit initial parameters, so every read
belongs to an EM pass. Asserted, measured: every worker's peak RSS during the fit stays under
its ``memory_limit``, nothing is spilled, no worker is restarted, and a Zarr store that counts
its reads in the worker processes sees every chunk read exactly once per EM iteration.
"""

import os

import dask.array as da
import numpy as np
import pytest
import zarr
from dask.utils import parse_bytes

import worker_probes
from daskgmm import GaussianMixture

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]

N_WORKERS = 2
MEMORY_LIMIT = "400MiB"
N_FEATURES = 3
N_COMPONENTS = 8
N_ITER = 2
DATA_BYTES = 840 * 2**20
CHUNK_BYTES = 8 * 2**20
ROW_BYTES = 4 * N_FEATURES


def component_means(seed=0):
    return np.random.default_rng(seed).normal(scale=4.0, size=(N_COMPONENTS, N_FEATURES))


def mixture_block(block_info=None):
    """One chunk of rows drawn from the mixture, from a generator seeded by the chunk's index."""
    (n_rows, _), (index, _) = (block_info[None]["chunk-shape"],
                               block_info[None]["chunk-location"])
    rng = np.random.default_rng([1, index])
    labels = rng.integers(N_COMPONENTS, size=n_rows)
    rows = component_means()[labels] + rng.normal(scale=0.7, size=(n_rows, N_FEATURES))
    return rows.astype(np.float32)


def write_rows(path):
    """Write ``DATA_BYTES`` of rows, uncompressed, in chunks of ``CHUNK_BYTES``, block by block."""
    n_rows, chunk_rows = DATA_BYTES // ROW_BYTES, CHUNK_BYTES // ROW_BYTES
    rows = da.map_blocks(mixture_block, chunks=((chunk_rows,) * (n_rows // chunk_rows),
                                                (N_FEATURES,)),
                         dtype=np.float32, meta=np.empty((0, 0), np.float32))
    target = zarr.create_array(str(path), shape=rows.shape, chunks=(chunk_rows, N_FEATURES),
                               dtype=np.float32, compressors=None)
    da.store(rows, target, lock=False, scheduler="threads")
    return {f"c/{i}/0" for i in range(rows.numblocks[0])}


def reads_summed(client):
    """Chunk reads since the last reset, summed over the workers."""
    total = {}
    for reads in client.run(worker_probes.chunk_reads).values():
        for key, count in reads.items():
            total[key] = total.get(key, 0) + count
    return total


def least_and_most(reads, keys):
    """The fewest and most reads of one chunk (a chunk never read counts 0)."""
    unknown = [count for key, count in reads.items() if key not in keys]
    counts = [reads.get(key, 0) for key in keys] + unknown
    return min(counts), max(counts)


def initial_parameters():
    """Near the generating means, unit weights, wide precisions: explicit, no initialisation."""
    noise = np.random.default_rng(2).normal(scale=0.3, size=(N_COMPONENTS, N_FEATURES))
    return {"weights_init": np.full(N_COMPONENTS, 1 / N_COMPONENTS),
            "means_init": component_means() + noise,
            "precisions_init": np.stack([np.eye(N_FEATURES) / 2.0] * N_COMPONENTS)}


def fit_measured(client, X, keys):
    """Fit on the cluster, measuring memory, spills, restarts and reads per iteration."""
    client.run(worker_probes.reset_chunk_reads)
    client.run(worker_probes.reset_peak_rss)
    processes = client.run(os.getpid)
    snapshots = []

    def after_iteration(state):
        if state.current is not None:
            snapshots.append(reads_summed(client))

    model = GaussianMixture(N_COMPONENTS, covariance_type="full", tol=0.0, max_iter=N_ITER,
                            **initial_parameters())
    model.fit(X, callback=after_iteration)
    previous, per_iteration = {}, []
    for snapshot in snapshots:
        delta = {key: count - previous.get(key, 0) for key, count in snapshot.items()}
        per_iteration.append(least_and_most(delta, keys))
        previous = snapshot
    return {"peak_rss": client.run(worker_probes.peak_rss),
            "workers_restarted": processes != client.run(os.getpid),
            "spills": client.run(worker_probes.spilled),
            "reads_per_iteration": per_iteration, "model": model}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """The measurements of one fit on a dataset written for this module."""
    from distributed import Client, LocalCluster

    path = tmp_path_factory.mktemp("outofcore") / "X.zarr"
    keys = write_rows(path)
    store = worker_probes.CountingStore(str(path), read_only=True)
    X = da.from_zarr(zarr.open_array(store=store, mode="r"))
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                      memory_limit=MEMORY_LIMIT, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # Workers that first meet daskgmm inside a task hold the GIL importing it, and the
        # other worker, waiting for the pass's argument, spills the chunks it keeps loading.
        client.run(worker_probes.import_kernels)
        client.run(worker_probes.reset_chunk_reads)
        X.sum().compute()
        reads_per_sum = least_and_most(reads_summed(client), keys)
        measured = fit_measured(client, X, keys)
    disk_bytes = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return {"data_bytes": X.nbytes, "disk_bytes": disk_bytes, "chunks": X.numblocks[0],
            "reads_per_sum": reads_per_sum, **measured}


def test_data_is_larger_than_total_worker_memory(result):
    assert result["disk_bytes"] >= result["data_bytes"] > N_WORKERS * parse_bytes(MEMORY_LIMIT)
    assert result["chunks"] >= DATA_BYTES // CHUNK_BYTES


def test_every_worker_stays_under_its_memory_limit(result):
    assert not result["workers_restarted"]
    assert len(result["peak_rss"]) == N_WORKERS
    for peak in result["peak_rss"].values():
        assert peak < parse_bytes(MEMORY_LIMIT)


def test_nothing_is_spilled(result):
    for spill in result["spills"].values():
        assert spill == {"keys_on_disk": 0, "bytes_written": 0}


def test_every_chunk_is_read_exactly_once_per_iteration(result):
    assert result["reads_per_sum"] == (1, 1)  # the counting store sees every read
    assert result["reads_per_iteration"] == [(1, 1)] * N_ITER


def test_the_fit_ran_every_iteration(result):
    model = result["model"]
    assert model.n_iter_ == N_ITER and len(model.lower_bounds_) == N_ITER
    assert np.all(np.diff(model.lower_bounds_) >= 0)
