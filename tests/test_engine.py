"""The engine: reproducible passes, a fixed merge tree, one compute per EM iteration, no gather.

Dask work is watched with a ``dask.callbacks.Callback`` on the threaded scheduler (callbacks see
every task a local scheduler runs) and with arrays whose chunks are produced on demand by a
function that counts how often each chunk is read.
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from uuid import uuid4

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.callbacks import Callback
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import (
    COVARIANCE_TYPES, FITTED_ARRAYS, assert_same_model, initial_parameters, make_blobs)
from daskgmm import ComponentReseedWarning, GaussianMixture
from daskgmm.design import n_design_features
from daskgmm.engine import dask_row_data, map_reduce, numpy_row_data
from daskgmm.graph import reduction_graph
from daskgmm.kernels import em_block, make_log_density
from daskgmm.placement import task_runs
from daskgmm.slices import slice_length
from daskgmm.tree import tree_reduce
from daskgmm.options import INIT_METHODS

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_COMPONENTS = 3


@pytest.fixture(scope="module")
def X():
    """Overlapping components, so that EM still moves the parameters after many iterations."""
    return make_blobs(scale=2.0)


def as_input(array, kind, chunk_rows=450):
    """Return ``array`` as NumPy, or as a Dask array chunked by rows only."""
    if kind == "numpy":
        return array
    return da.from_array(array, chunks=(chunk_rows,) + (-1,) * (array.ndim - 1))


def blob_labels(n_samples=2003, n_components=3):
    """The component each row of ``make_blobs`` was drawn from (rows are grouped by component)."""
    sizes = np.full(n_components, n_samples // n_components)
    sizes[: n_samples % n_components] += 1
    return np.repeat(np.arange(n_components), sizes)


class CountingArray:
    """A Dask array whose chunks are cut from ``data`` on demand, counting the reads of each chunk.

    ``reads`` maps the first row of a chunk to the number of times the chunk was produced.
    """

    def __init__(self, data, chunk_rows):
        self.data = data
        self.reads = Counter()
        self._lock = threading.Lock()
        chunks = da.core.normalize_chunks((chunk_rows, -1), data.shape)
        self.array = da.map_blocks(self._read, chunks=chunks, dtype=data.dtype,
                                   meta=np.empty((0, 0), dtype=data.dtype),
                                   name=f"counted-rows-{uuid4().hex}")

    def _read(self, block_info=None):
        (start, stop), _ = block_info[None]["array-location"]
        with self._lock:
            self.reads[start] += 1
        return self.data[start:stop].copy()

    def every_chunk_read(self, times):
        """The ``reads`` expected when every chunk was read exactly ``times`` times."""
        starts = np.cumsum((0,) + self.array.chunks[0][:-1])
        return Counter({int(start): times for start in starts})


class TaskWatcher(Callback):
    """Counts the computes a local scheduler starts and the most rows any task returned."""

    def __init__(self):
        super().__init__()
        self.computes = 0
        self.most_rows = 0

    def _start(self, dsk):
        self.computes += 1

    def _posttask(self, key, result, dsk, state, worker_id):
        self.most_rows = max(self.most_rows, rows_in(result))


def rows_in(value):
    """The most rows of any NumPy array in a task result (looking inside tuples and lists)."""
    if isinstance(value, np.ndarray):
        return value.shape[0] if value.ndim else 0
    if isinstance(value, (tuple, list)):
        return max((rows_in(item) for item in value), default=0)
    return 0


# ------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize("kind", ["numpy", "dask", "dask-cluster"])
def test_same_seed_and_chunking_give_the_same_bits(X, kind, request):
    if kind == "dask-cluster":
        request.getfixturevalue("client")
        scheduler = "distributed"
    else:
        scheduler = "threads"

    data = as_input(X, "numpy" if kind == "numpy" else "dask")
    options = {"init_params": "kmeans", "random_state": 0, "max_iter": 5, "tol": 0.0}

    with dask.config.set(scheduler=scheduler):
        first = GaussianMixture(N_COMPONENTS, **options).fit(data)
        second = GaussianMixture(N_COMPONENTS, **options).fit(data)

    assert_same_model(first, second)


@pytest.mark.parametrize("layout", ["dask-chunks-300", "dask-chunks-700", "numpy-blocks-256"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_block_layout_does_not_change_the_model(X, covariance_type, layout, threads):
    options = {"covariance_type": covariance_type, "max_iter": 20, "tol": 0.0,
               **initial_parameters(X, covariance_type)}
    data, block_rows = {
        "dask-chunks-300": (as_input(X, "dask", chunk_rows=300), None),
        "dask-chunks-700": (as_input(X, "dask", chunk_rows=700), None),
        "numpy-blocks-256": (X, 256),
    }[layout]

    model = GaussianMixture(N_COMPONENTS, block_rows=block_rows, **options).fit(data)
    expected = GaussianMixture(N_COMPONENTS, **options).fit(X)

    assert_same_model(model, expected, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_split_every_two_combines_like_split_every_eight(X, covariance_type, threads):
    data = as_input(X, "dask", chunk_rows=190)
    assert len(data.chunks[0]) == 11
    options = {"covariance_type": covariance_type, "max_iter": 20, "tol": 0.0,
               **initial_parameters(X, covariance_type)}

    narrow = GaussianMixture(N_COMPONENTS, split_every=2, **options).fit(data)
    wide = GaussianMixture(N_COMPONENTS, split_every=8, **options).fit(data)

    assert_same_model(narrow, wide, rtol=1e-12)


# ------------------------------------------------------------------ the reduction tree


@pytest.mark.parametrize(
    ("n_values", "split_every", "expected"),
    [
        (1, 2, 0),
        (5, 2, (((0, 1), (2, 3)), 4)),
        (7, 3, ((((0, 1), 2), ((3, 4), 5)), 6)),
        (4, 8, (((0, 1), 2), 3)),
    ],
)
def test_tree_reduce_merges_in_a_fixed_tree(n_values, split_every, expected):
    merged = tree_reduce(range(n_values), split_every, combine=lambda left, right: (left, right))
    assert merged == expected


@dataclass(frozen=True)
class MergeOrder:
    """A block result whose sum records which blocks were merged, and in which order."""

    tree: object

    def __add__(self, other):
        return MergeOrder((self.tree, other.tree))


def block_index(block, weights, position):
    return MergeOrder(position.index)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_map_reduce_merges_blocks_in_the_same_fixed_tree(kind, threads):
    data = np.zeros((7, 2))
    if kind == "numpy":
        source = numpy_row_data(data, None, block_rows=1)
    else:
        source = dask_row_data(da.from_array(data, chunks=(1, 2)), None)

    merged = map_reduce(source, block_index, split_every=3)

    assert merged == MergeOrder(((((0, 1), 2), ((3, 4), 5)), 6))



@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
@pytest.mark.parametrize("n_chunks", [12, 40, 100])
def test_dask_pass_merges_its_chunks_in_the_fixed_tree(n_chunks, scheduler, request):
    # Chunks run several to a task, combine tasks merge up to 9 tasks' partial trees, and the
    # client merges the last 3 (first pass) or up to 9 (second pass, the results being small):
    # always the tree of tree_reduce over the chunks, as for NumPy blocks.
    if scheduler == "distributed":
        request.getfixturevalue("client")
    source = dask_row_data(da.from_array(np.zeros((n_chunks, 2)), chunks=(1, 2)), None)
    expected = tree_reduce([MergeOrder(i) for i in range(n_chunks)], split_every=3)

    with dask.config.set(scheduler=scheduler):
        first = map_reduce(source, block_index, split_every=3)
        second = map_reduce(source, block_index, split_every=3)

    assert first == second == expected
    assert 1 < len(source.task_blocks) < n_chunks  # several tasks, several chunks to a task


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_any_cut_of_the_chunks_into_tasks_merges_in_the_same_tree(size):
    # Runs of `size` chunks, also cut where the (made up) holding worker changes: a task's
    # partial tree leaves what it cannot merge for the client, which merges the same tree.
    holders = ["a"] * 7 + ["b"] * 11 + ["a"] * 2 + ["c"] * 9
    source = dask_row_data(da.from_array(np.zeros((len(holders), 2)), chunks=(1, 2)), None)
    blocks = [block for run in source.task_blocks for block in run]
    source.task_blocks = task_runs(blocks, size, holders)

    with dask.config.set(scheduler="threads"):
        merged = map_reduce(source, block_index, split_every=3)

    assert all(len({holders[b[0].index] for b in run}) == 1 for run in source.task_blocks)
    assert merged == tree_reduce([MergeOrder(i) for i in range(len(holders))], split_every=3)


def combine_tasks(source, split_every):
    """The combine tasks in the graph of a pass of ``block_index`` over ``source``."""
    (top, *_) = reduction_graph(source, block_index, (), split_every)
    return [key for key in top.dask if key[0] == top.key[0] and key[1] > 0]


@pytest.mark.parametrize(("result_nbytes", "expected"), [(None, 2), (100, 0), (1 << 20, 2)])
def test_client_merges_two_levels_only_of_results_seen_to_be_small(result_nbytes, expected):
    # 6 chunks, one task each; split_every=3: two combine tasks leave 2 results for the
    # client (at most 3), or the client takes all 6 (at most 9) if an earlier pass's results
    # were small enough for 9 of them to be fetched.
    source = dask_row_data(da.zeros((6, 2), chunks=(1, 2)), None)
    if result_nbytes is not None:
        source.result_nbytes[block_index] = result_nbytes

    assert len(source.task_blocks) == 6
    assert len(combine_tasks(source, split_every=3)) == expected


def block_statistics(X, covariance_type, n_blocks):
    """The statistics of ``n_blocks`` consecutive row blocks of X under a fitted mixture."""
    fitted = SklearnGaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                                    random_state=0).fit(X)
    density = make_log_density(fitted.weights_, fitted.means_, fitted.precisions_cholesky_,
                               covariance_type, fitted.weights_ @ fitted.means_, np.float64)
    return [em_block(block, None, density, covariance_type)
            for block in np.array_split(X, n_blocks)]


def assert_stats_close(stats, expected, rtol):
    for name in ("reference", "counts", "first", "second"):
        assert_allclose(getattr(stats, name), getattr(expected, name), rtol=rtol, err_msg=name)
    assert_allclose(stats.log_likelihood, expected.log_likelihood, rtol=rtol)
    assert stats.total_weight == expected.total_weight
    assert stats.n_nonfinite == expected.n_nonfinite
    assert_allclose(stats.worst_scores, expected.worst_scores, rtol=rtol)
    assert_allclose(stats.worst_points, expected.worst_points, rtol=rtol)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sufficient_stats_add_is_associative(X, covariance_type):
    a, b, c = block_statistics(X, covariance_type, 3)
    assert_stats_close((a + b) + c, a + (b + c), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sufficient_stats_of_blocks_add_up_to_the_whole(X, covariance_type):
    (whole,) = block_statistics(X, covariance_type, 1)
    parts = block_statistics(X, covariance_type, 5)

    merged = tree_reduce(parts, split_every=2)

    assert_stats_close(merged, whole, rtol=1e-10)
    assert len(merged.worst_scores) == N_COMPONENTS


# ------------------------------------------------------------------ passes over Dask data


@pytest.mark.parametrize("init_params", ["given", *INIT_METHODS])
def test_fit_never_gathers_X(X, init_params, threads):
    """No task of any pass, initialisation included, returns more rows than a chunk holds."""
    counted = CountingArray(X, chunk_rows=300)
    if init_params == "given":
        options = initial_parameters(X, "full")
    else:
        options = {"init_params": init_params, "random_state": 0}

    with TaskWatcher() as watcher:
        GaussianMixture(N_COMPONENTS, max_iter=5, tol=0.0, **options).fit(counted.array)

    assert watcher.computes >= 5
    assert watcher.most_rows <= 300


def test_task_watcher_sees_a_gather(X, threads):
    """The check above can fail: gathering X is a task that returns all of X's rows."""
    counted = CountingArray(X, chunk_rows=300)
    with TaskWatcher() as watcher:
        counted.array.compute()
    assert watcher.most_rows == len(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_each_em_iteration_is_one_compute_reading_every_chunk_once(X, covariance_type, threads):
    counted = CountingArray(X, chunk_rows=300)
    init = initial_parameters(X, covariance_type)

    with TaskWatcher() as watcher:
        GaussianMixture(N_COMPONENTS, covariance_type=covariance_type, max_iter=5, tol=0.0,
                        **init).fit(counted.array)

    assert watcher.computes == 5
    assert counted.reads == counted.every_chunk_read(5)


def test_persist_reads_each_chunk_once(X, threads):
    counted = CountingArray(X, chunk_rows=300)
    init = initial_parameters(X, "full")

    GaussianMixture(N_COMPONENTS, max_iter=5, tol=0.0, persist=True, **init).fit(counted.array)

    assert counted.reads == counted.every_chunk_read(1)


@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
def test_persist_gives_the_same_model(X, scheduler, request):
    if scheduler == "distributed":
        request.getfixturevalue("client")
    data = as_input(X, "dask")
    weights = as_input(np.random.default_rng(1).uniform(0.5, 2.0, size=len(X)), "dask")
    options = {"max_iter": 5, "tol": 0.0, "random_state": 0}

    with dask.config.set(scheduler=scheduler):
        persisted = GaussianMixture(N_COMPONENTS, persist=True, **options)
        persisted.fit(data, sample_weight=weights)
        streamed = GaussianMixture(N_COMPONENTS, persist=False, **options)
        streamed.fit(data, sample_weight=weights)

    assert_same_model(persisted, streamed, rtol=1e-12)


# ------------------------------------------------------------------ initialisation


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_every_init_method_finds_separated_blobs(init_params, kind, threads):
    data = as_input(make_blobs(), kind)

    # tol is tight because random responsibilities start every component at the overall mean,
    # where the lower bound barely moves for the first iterations (so in scikit-learn too).
    model = GaussianMixture(N_COMPONENTS, init_params=init_params, n_init=3, tol=1e-6,
                            max_iter=300, random_state=0).fit(data)

    for name in FITTED_ARRAYS:
        assert np.isfinite(getattr(model, name)).all(), name
    labels = np.asarray(model.predict(data))
    assert adjusted_rand_score(blob_labels(), labels) > 0.9


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("init_params", ["random_from_data", "k-means++"])
def test_initial_means_are_distinct_rows_of_X(X, init_params, kind, threads):
    model = GaussianMixture(N_COMPONENTS, init_params=init_params, max_iter=0,
                            random_state=0).fit(as_input(X, kind))

    distances = np.linalg.norm(model.means_[:, None, :] - X[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    assert_allclose(model.means_, X[nearest], rtol=1e-12)
    assert len(set(nearest)) == N_COMPONENTS


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_component_far_from_the_data_is_reseeded(covariance_type, kind, threads):
    blobs = make_blobs()
    init = initial_parameters(blobs, covariance_type)
    init["means_init"] = init["means_init"].copy()
    init["means_init"][-1] = 1e6

    with pytest.warns(ComponentReseedWarning):
        model = GaussianMixture(N_COMPONENTS, covariance_type=covariance_type, max_iter=50,
                                **init).fit(as_input(blobs, kind))

    assert model.n_reseeded_ >= 1
    for name in FITTED_ARRAYS:
        assert np.isfinite(getattr(model, name)).all(), name
    assert np.all(model.weights_ > 0)
    assert np.all((blobs.min(axis=0) <= model.means_) & (model.means_ <= blobs.max(axis=0)))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("n_features", [1, 3, 32, 200])
def test_slice_temporaries_stay_under_the_mmap_threshold(covariance_type, n_features):
    # Dask's nanny pins glibc's mmap threshold at 128 KiB (see daskgmm.slices): a slice's
    # per-row float64 temporaries must stay under it, or each one faults fresh pages.
    n_design = n_design_features(covariance_type, n_features)

    rows = slice_length(n_design, 10**8)

    assert 1 <= rows and rows * np.dtype(np.float64).itemsize < 128 * 2**10


def test_passes_over_a_zarr_array_run_on_every_worker(tmp_path, client):
    # Each chunk's read depends on the one key holding the Zarr array object; unless that is
    # copied into the tasks, the scheduler runs every block task on the worker holding it.
    from distributed import get_task_stream

    data = make_blobs(n_samples=200_000, n_features=3, n_components=N_COMPONENTS)
    zarr.create_array(str(tmp_path / "X.zarr"), data=data, chunks=(10_000, 3))
    X = da.from_zarr(str(tmp_path / "X.zarr"))

    init = initial_parameters(data, "full")
    with get_task_stream(client) as stream:
        GaussianMixture(N_COMPONENTS, max_iter=3, tol=0.0, **init).fit(X)

    workers = Counter(task["worker"] for task in stream.data if "daskgmm-pass" in str(task["key"]))
    assert len(workers) == 2 and min(workers.values()) >= 0.25 * sum(workers.values())


def persisted_in_runs(client, data, chunk_rows, run):
    """``data`` as a Dask array persisted with chunk ``i`` on worker ``(i // run) % 2``."""
    from distributed import wait

    workers = sorted(client.scheduler_info()["workers"])

    def holder(key):
        return [workers[(key[1] // run) % len(workers)]]

    with dask.annotate(workers=holder, allow_other_workers=False):
        array = da.from_array(data, chunks=(chunk_rows, data.shape[1]), asarray=True)
        array = array.map_blocks(np.copy)
    persisted = client.persist(array, optimize_graph=False)
    wait(persisted)
    holders = client.who_has(persisted)
    assert len(holders) == persisted.numblocks[0]
    assert all(list(holders[key]) == holder(key) for key in holders)
    return persisted


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_persisted_chunks_run_where_they_are_held_with_the_numpy_result(client,
                                                                        covariance_type):
    # 48 chunks held by the two workers in alternate runs of 3: a task takes only chunks of
    # one worker (no chunk moves), all of them (one task per worker and pass), yet the fit is
    # the NumPy fit over the same blocks to the bit.
    from distributed import get_task_stream

    data = make_blobs(n_samples=48 * 500, n_features=3, n_components=N_COMPONENTS)
    X = persisted_in_runs(client, data, chunk_rows=500, run=3)
    init = initial_parameters(data, covariance_type)
    options = dict(covariance_type=covariance_type, max_iter=4, tol=0.0, **init)

    with get_task_stream(client) as stream:
        on_dask = GaussianMixture(N_COMPONENTS, **options).fit(X)
    on_numpy = GaussianMixture(N_COMPONENTS, block_rows=500, **options).fit(data)

    block_tasks = [task for task in stream.data if "daskgmm-pass" in str(task["key"])
                   and task["key"][1] == 0]
    assert len(block_tasks) == 4 * 2
    assert not [part for task in block_tasks for part in task["startstops"]
                if part["action"] == "transfer"]
    for name in ("weights_", "means_", "covariances_", "lower_bound_"):
        assert_array_equal(getattr(on_dask, name), getattr(on_numpy, name), err_msg=name)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_block_reuses_its_thread_buffers_without_changing_a_bit(X, covariance_type):
    # A thread's slice buffers outlive a block: a small block run after a large one (whose
    # slices filled them with other rows) gives what it gives in a thread that never ran one.
    fitted = SklearnGaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                                    random_state=0).fit(X)
    density = make_log_density(fitted.weights_, fitted.means_, fitted.precisions_cholesky_,
                               covariance_type, fitted.weights_ @ fitted.means_, np.float64)
    small = X[:301]
    with ThreadPoolExecutor(1) as fresh_thread:
        expected = fresh_thread.submit(em_block, small, None, density, covariance_type).result()

    em_block(X, None, density, covariance_type)
    reused = em_block(small, None, density, covariance_type)

    assert_stats_close(reused, expected, rtol=0)
