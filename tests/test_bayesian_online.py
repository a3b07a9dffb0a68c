"""BayesianGaussianMixture online: partial_fit and learning_method="online" as stochastic
variational inference (the running statistics scaled to the data's weight for the posterior).

A step of size 1 on one batch is a batch variational iteration; an online fit lands near the
batch fit's model; it resumes from a checkpoint to the same bits; a saved model continues.
"""

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import COVARIANCE_TYPES, interrupted_fit
from daskgmm import BayesianGaussianMixture

pytestmark = pytest.mark.filterwarnings("ignore::daskgmm.ConvergenceWarning")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
POSTERIOR = ("weights_", "means_", "covariances_", "mean_precision_", "degrees_of_freedom_")


def rows(n_rows=20_000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1).normal(scale=8, size=(4, 3))
    return centres[rng.integers(0, 4, n_rows)] + rng.normal(size=(n_rows, 3))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_a_step_of_size_one_is_a_batch_variational_iteration(covariance_type, prior_type):
    X = rows(5000)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0,
                  weight_concentration_prior_type=prior_type)
    online = BayesianGaussianMixture(**params, learning_offset=0.0)
    online.partial_fit(X)  # initialises: the posterior of the initial responsibilities
    online.partial_fit(X)  # step 1, of size (1 + 0) ** -0.51 = 1, scaled to 5000 rows
    batch = BayesianGaussianMixture(**params, max_iter=1, tol=0.0).fit(X)
    for name in POSTERIOR:
        assert_allclose(getattr(online, name), getattr(batch, name), rtol=1e-9, atol=1e-12,
                        err_msg=name)
    assert online.online_weight_ == 5000.0


def test_an_online_fit_lands_near_the_batch_fit():
    X = da.from_array(rows(), chunks=1000)
    batch = BayesianGaussianMixture(n_components=10, random_state=0, max_iter=500).fit(X)
    online = BayesianGaussianMixture(n_components=10, random_state=0, learning_method="online",
                                     max_passes=5, batch_size=2000).fit(X)
    assert np.isfinite(online.lower_bounds_).all() and online.n_iter_ <= 5
    assert batch.score(X) - online.score(X) < 0.01
    assert online.online_weight_ == 20_000.0
    # Every cluster has a component near its centre (the components the data do not need fade
    # far more slowly than in batch, which needs hundreds of passes for it: see the README).
    centres = np.random.default_rng(1).normal(scale=8, size=(4, 3))
    distances = np.linalg.norm(centres[:, None] - online.means_[None], axis=2)
    assert distances.min(axis=1).max() < 1.0  # one standard deviation; the clusters are 8 apart


def test_an_online_bayesian_fit_resumes_from_a_checkpoint_to_the_same_bits(tmp_path):
    X = da.from_array(rows(), chunks=500)  # 40 chunks, 20 waves a pass: groups of 16 steps
    params = dict(n_components=6, learning_method="online", random_state=2, max_passes=2,
                  tol=0.0)
    whole = BayesianGaussianMixture(**params).fit(X)
    state = interrupted_fit(BayesianGaussianMixture(**params), X,
                            lambda state: 0 < state.current.n_iter < 19, tmp_path / "checkpoint")
    resumed = BayesianGaussianMixture(**params).fit(X, resume=state)
    for name in POSTERIOR:
        assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    assert resumed.lower_bounds_ == whole.lower_bounds_


def test_a_saved_online_model_continues_as_the_one_in_memory(tmp_path):
    X = rows()
    model = BayesianGaussianMixture(n_components=4, random_state=0)
    for start in range(0, 12_000, 3000):
        model.partial_fit(X[start:start + 3000])
    model.save(tmp_path / "model.zarr")
    loaded = BayesianGaussianMixture.load(tmp_path / "model.zarr")
    model.partial_fit(X[12_000:15_000])
    loaded.partial_fit(X[12_000:15_000])
    for name in POSTERIOR:
        assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    assert loaded.online_steps_ == 4 and loaded.online_weight_ == 12_000.0


def test_partial_fit_continues_a_bayesian_model_fitted_in_batch():
    X = rows()
    batch = BayesianGaussianMixture(n_components=4, random_state=0, max_iter=300,
                                    learning_offset=100.0).fit(X)
    means, score = batch.means_.copy(), batch.score(X)
    batch.partial_fit(X[:2000])  # a small step from the model's implied statistics
    assert batch.online_steps_ == 1 and abs(batch.online_weight_ - 22_000.0) < 1.0
    assert np.abs(batch.means_ - means).max() < 0.05
    assert abs(batch.score(X) - score) < 1e-3
