"""fit(learning_method="online"): online EM over waves of chunks, the first initialising.

It is partial_fit over the same batches in the same order, to the bit; it reads each chunk once
a pass and only the first wave to initialise; the same seed gives the same bits, a resume
from a checkpoint too; its running bound is finite, settles, and its model is near batch EM's.
"""

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import COVARIANCE_TYPES, interrupted_fit
from daskgmm import GaussianMixture
from daskgmm.engine import numpy_row_data
from daskgmm.online import CHAINED_STEPS
from daskgmm.waves import WavePlan
from worker_probes import CountingStore, chunk_reads, reset_chunk_reads

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def rows(n_rows=24_000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, -2.0, 1.0], [-2.5, 2.5, 0.5]])
    return centres[rng.integers(0, 3, n_rows)] + rng.normal(size=(n_rows, 3))


def assert_same_model(first, second):
    for name in FITTED:
        assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    assert first.lower_bounds_ == second.lower_bounds_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_fit_is_partial_fit_over_the_chunks_in_order(covariance_type, kind):
    X = rows()
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    if kind == "dask":
        X = da.from_array(X, chunks=2000)
        batches = list(X.blocks)
        fitted = dict(batch_size=2000)
    else:
        batches = [X[start:start + 2000] for start in range(0, len(X), 2000)]
        fitted = dict(block_rows=2000, batch_size=2000)
    online = GaussianMixture(**params, learning_method="online", shuffle=False, max_passes=1,
                             **fitted).fit(X)
    stepped = GaussianMixture(**params, block_rows=fitted.get("block_rows"))
    for batch in batches:
        stepped.partial_fit(batch)
    assert online.online_steps_ == stepped.online_steps_ == len(batches) - 1
    assert_same_model(online, stepped)
    assert online.n_iter_ == 1


def test_the_passes_visit_every_chunk_once_in_a_seeded_shuffled_order():
    source = numpy_row_data(rows(), None, 1000)
    plan = WavePlan.of(source, threads=2)
    orders = [plan.order(seed=7, pass_index=index) for index in range(2)]
    assert sorted(orders[0]) == list(range(24)) and not np.array_equal(*orders)
    assert_array_equal(plan.order(seed=7, pass_index=0), orders[0])
    waves = plan.waves(seed=7, pass_index=0)
    assert [len(wave) for wave in waves] == [2] * 12  # a chunk per thread
    cut = WavePlan.of(source, batch_size=300, threads=2)  # a batch smaller than a chunk
    assert {stop - start for start, stop in cut.pieces} == {150, 100}  # 6 x 150 + 100 a chunk
    sizes = [sum(b - a for a, b in wave) for wave in cut.waves(seed=7, pass_index=0)]
    assert sum(sizes) == 24_000 and all(300 <= size < 450 for size in sizes[:-1])


def test_the_same_seed_gives_the_same_bits_and_another_seed_another_order():
    X = da.from_array(rows(), chunks=1500)
    fit = [GaussianMixture(3, learning_method="online", random_state=seed).fit(X)
           for seed in (4, 4, 5)]
    assert_same_model(fit[0], fit[1])
    assert fit[0].lower_bounds_ != fit[2].lower_bounds_


def test_it_reads_the_first_wave_to_initialise_then_each_chunk_once_a_pass(tmp_path):
    zarr.create_array(str(tmp_path / "x.zarr"), data=rows().astype(np.float32),
                      chunks=(2000, 3))
    X = da.from_zarr(zarr.open_array(store=CountingStore(str(tmp_path / "x.zarr"),
                                                         read_only=True), mode="r"))
    reset_chunk_reads()
    model = GaussianMixture(3, learning_method="online", random_state=0, max_passes=2,
                            tol=0.0, batch_size=4000).fit(X)
    reads = chunk_reads()
    assert model.n_iter_ == 2 and model.online_steps_ == 5 + 6  # 6 waves of 2 chunks a pass
    # The first wave's two chunks are read by k-means's two passes over them, and the first
    # pass skips them; every other chunk is read once a pass.
    assert len(reads) == 12 and sorted(reads.values()) == [2] * 10 + [3] * 2


def test_the_running_bound_is_finite_and_settles_near_batch_em():
    X = da.from_array(rows(48_000), chunks=1000)
    online = GaussianMixture(3, learning_method="online", random_state=0, max_passes=30,
                             tol=1e-3).fit(X)
    bounds = np.array(online.lower_bounds_)
    assert np.isfinite(bounds).all()
    assert online.converged_ and 2 <= online.n_iter_ < 30
    batch = GaussianMixture(3, random_state=0, tol=1e-6, max_iter=500).fit(X)
    assert abs(bounds[-1] - batch.lower_bound_) < 0.01  # the running estimate
    assert batch.score(X) - online.score(X) < 0.002  # the model, on all the data
    ends = bounds[np.cumsum([23] + [24] * (online.n_iter_ - 1)) - 1]  # each pass's last
    assert abs(ends[-1] - ends[-2]) < 1e-3  # what converged_ says


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_fit_resumed_from_a_checkpoint_ends_at_the_same_bits(tmp_path, covariance_type):
    X = da.from_array(rows(), chunks=375)  # 64 chunks: 32 waves a pass, in groups of 16 steps
    params = dict(n_components=3, covariance_type=covariance_type,
                  learning_method="online", random_state=1, max_passes=3, tol=0.0)
    whole = GaussianMixture(**params).fit(X)
    state = interrupted_fit(GaussianMixture(**params), X,
                            lambda state: state.current.n_iter == CHAINED_STEPS,
                            tmp_path / "checkpoint")
    assert (state.current.online.passes, state.current.online.position) == (0, 17)
    resumed = GaussianMixture(**params).fit(X, resume=state)
    assert_same_model(whole, resumed)
    assert resumed.online_steps_ == whole.online_steps_ == 31 + 32 + 32


def test_the_steps_chained_on_a_cluster_are_partial_fit_s(client):
    X = da.from_array(rows(), chunks=1000).persist()
    online = GaussianMixture(3, learning_method="online", shuffle=False, max_passes=1,
                             random_state=0, batch_size=2000).fit(X)
    stepped = GaussianMixture(3, random_state=0)
    for start in range(0, 24_000, 2000):
        stepped.partial_fit(X[start:start + 2000].rechunk(1000))
    assert_same_model(online, stepped)


def test_partial_fit_continues_a_model_fitted_in_batch():
    X = rows()
    batch = GaussianMixture(3, random_state=0, tol=1e-6, max_iter=500, learning_offset=100.0)
    batch.fit(X)
    means, score = batch.means_.copy(), batch.score(X)
    batch.partial_fit(X[:2000])  # a step of 101 ** -0.6 = 0.06 from the model
    assert batch.online_steps_ == 1
    assert 0 < np.abs(batch.means_ - means).max() < 0.02
    assert abs(batch.score(X) - score) < 2e-4


def test_an_online_warm_start_continues_from_the_running_statistics():
    X = da.from_array(rows(), chunks=2000)
    params = dict(n_components=3, learning_method="online", random_state=0, tol=0.0,
                  batch_size=2000)  # a wave a chunk: 12 a pass
    twice = GaussianMixture(**params, max_passes=2).fit(X)
    warm = GaussianMixture(**params, max_passes=1, warm_start=True).fit(X).fit(X)
    assert abs(warm.score(X) - twice.score(X)) < 1e-4
    assert warm.online_steps_ == 11 + 12  # the second fit: a whole pass, the schedule going on


def test_bad_online_parameters_are_refused():
    with pytest.raises(ValueError, match="learning_method"):
        GaussianMixture(2, learning_method="stochastic").fit(rows(100))
    with pytest.raises(ValueError, match="max_passes"):
        GaussianMixture(2, learning_method="online", max_passes=0).fit(rows(100))
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(2, learning_method="online", learning_decay=0.4).fit(rows(100))
