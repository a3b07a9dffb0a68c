"""partial_fit: online EM on mini-batches, from the same pieces as batch EM.

A step of size 1 on one batch is a batch-EM iteration; the running statistics move between
reference points exactly; the same batches in the same order give the same bits; the running
lower bound settles near batch EM's mean log-likelihood.
"""

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import COVARIANCE_TYPES
from daskgmm import GaussianMixture
from daskgmm.engine import map_reduce
from daskgmm.kernels import em_pass_block, make_log_density
from daskgmm.stepwise import recentred, step_size
from daskgmm.validation import row_data

pytestmark = pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")


def rows(n_rows=3000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, -4.0, 2.0], [-5.0, 5.0, 1.0]])
    return centres[rng.integers(0, 3, n_rows)] + rng.normal(size=(n_rows, 3))


def started(covariance_type, **params):
    """Initial parameters every estimator of a test starts from."""
    start = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, random_state=0)
    start.fit(rows(600, seed=9))
    return dict(n_components=3, covariance_type=covariance_type, weights_init=start.weights_,
                means_init=start.means_, precisions_init=start.precisions_, **params)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_step_of_size_one_is_a_batch_em_iteration(covariance_type):
    X = rows()
    online = GaussianMixture(**started(covariance_type, learning_offset=0.0))
    online.partial_fit(X)  # initialises
    online.partial_fit(X)  # step 1: (1 + 0) ** -0.7 = 1
    batch = GaussianMixture(**started(covariance_type), max_iter=1, tol=0.0).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert_allclose(getattr(online, name), getattr(batch, name), rtol=1e-10, atol=1e-13,
                        err_msg=name)
    assert_allclose(online.lower_bound_, batch.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_statistics_move_between_reference_points_exactly(covariance_type):
    model = GaussianMixture(**started(covariance_type), max_iter=1).fit(rows(600))
    source = row_data(rows(), None)
    params = model._get_parameters()

    def stats_about(reference):
        density = make_log_density(params.weights, params.means, params.precisions_cholesky,
                                   covariance_type, reference, np.float64)
        return map_reduce(source, em_pass_block, density, covariance_type)

    here, there = stats_about(np.zeros(3)), stats_about(np.array([4.0, -3.0, 1.0]))
    moved = recentred(here, there.reference, covariance_type)
    for name in ("counts", "first", "second", "pooled_first"):
        assert_allclose(getattr(moved, name), getattr(there, name), rtol=1e-10, atol=1e-8,
                        err_msg=name)


def test_the_same_batches_in_the_same_order_give_the_same_bits():
    X = da.from_array(rows(6000), chunks=1000)
    fitted = []
    for _ in range(2):
        model = GaussianMixture(3, random_state=0)
        for block in X.blocks:
            model.partial_fit(block)
        fitted.append(model)
    for name in ("weights_", "means_", "covariances_"):
        assert_array_equal(getattr(fitted[0], name), getattr(fitted[1], name), err_msg=name)
    assert fitted[0].online_steps_ == 5 and fitted[0].lower_bounds_ == fitted[1].lower_bounds_


def test_the_running_lower_bound_settles_near_batch_ems():
    X = rows(40_000, seed=1)
    online = GaussianMixture(**started("full"))
    for i, batch in enumerate(np.array_split(X, 40)):
        online.partial_fit(batch)
        # No estimate before the first step (the first call initialises), finite after it.
        assert np.isfinite(online.lower_bound_) == (i > 0)
        online.predict(batch[:5])  # usable after every call
    batch_em = GaussianMixture(**started("full"), max_iter=200).fit(X)
    assert abs(online.score(X) - batch_em.score(X)) < 0.01
    assert abs(online.lower_bounds_[-1] - batch_em.lower_bound_) < 0.05
    assert np.std(online.lower_bounds_[-10:]) < 0.05


def test_a_batch_of_another_width_is_refused_and_the_schedule_is_checked():
    model = GaussianMixture(3, random_state=0).partial_fit(rows(300))
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(rows(300)[:, :2])
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(3, learning_decay=0.5).partial_fit(rows(300))
    assert step_size(1, 0.7, 0.0) == 1.0 and step_size(2, 1.0, 0.0) == 0.5
