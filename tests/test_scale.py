"""Out of core: a fit streams a Zarr array larger than all worker memory, reading each chunk once.

This is ``bench/bench_outofcore.py`` scaled down (840 MiB of float32 on two worker processes of
400 MiB each; importing scikit-learn alone takes ~130 MiB of each), with its claims asserted: every worker's measured peak RSS stays under its
``memory_limit``, nothing is spilled, no worker is restarted, and a Zarr store that counts its
reads sees every chunk read exactly once per EM iteration.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from dask.utils import parse_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_outofcore  # noqa: E402
import common  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_WORKERS = 2
MEMORY_LIMIT = "400MiB"
N_FEATURES = 3
N_COMPONENTS = 8
N_ITER = 2
DATA_BYTES = 840 * 2**20
CHUNK_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """The benchmark's measurements on a dataset written for this module."""
    path = tmp_path_factory.mktemp("outofcore") / "X.zarr"
    row_bytes = 4 * N_FEATURES
    common.write_zarr(path, DATA_BYTES // row_bytes, N_FEATURES, N_COMPONENTS,
                      CHUNK_BYTES // row_bytes)
    return bench_outofcore.measure(path, N_COMPONENTS, N_ITER, N_WORKERS, MEMORY_LIMIT)


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
    assert result["reads_per_sum"] == (1, 1)
    assert result["reads_per_iteration"] == [(1, 1)] * N_ITER


def test_the_fit_ran_every_iteration(result):
    assert len(result["iteration_seconds"]) == N_ITER
    assert np.all(np.diff(result["lower_bounds"]) >= 0)
