"""The estimator's EM loop: its callback sees every iteration, and a fit resumes to the bit."""

import copy

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from conftest import COVARIANCE_TYPES, make_blobs
from daskgmm import GaussianMixture
from daskgmm.mixture import FitState

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class Stop(Exception):
    pass


def states_seen(model, X, stop_after=None):
    """Fit ``model`` on X; return copies of every state its callback saw (until the stop)."""
    seen = []

    def callback(state):
        seen.append(copy.deepcopy(state))
        if stop_after is not None and len(seen) == stop_after:
            raise Stop

    try:
        model.fit(X, callback=callback)
    except Stop:
        pass
    return seen


def assert_same_model(model, expected):
    for name in FITTED:
        assert_array_equal(getattr(model, name), getattr(expected, name))
    assert model.lower_bounds_ == expected.lower_bounds_
    assert (model.n_iter_, model.converged_) == (expected.n_iter_, expected.converged_)


def test_the_callback_sees_every_iteration_and_every_initialisation_end():
    X = make_blobs(n_samples=600)
    model = GaussianMixture(3, n_init=2, tol=1e-8, max_iter=20, random_state=0)
    seen = states_seen(model, X)
    per_init = [[s.current.n_iter for s in seen if s.current is not None and s.init == i]
                for i in range(2)]
    assert [len(iterations) for iterations in per_init] == [
        len(run) for run in (per_init[0], per_init[1])]
    assert per_init[0] == list(range(1, len(per_init[0]) + 1))
    ends = [s for s in seen if s.current is None]
    assert [s.init for s in ends] == [1, 2]
    assert ends[-1].best.lower_bounds == model.lower_bounds_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_a_fit_resumed_from_any_state_ends_at_the_uninterrupted_model(covariance_type, kind):
    X = make_blobs(n_samples=900).astype(np.float32)
    if kind == "dask":
        X = da.from_array(X, chunks=100)
    params = dict(n_components=3, covariance_type=covariance_type, n_init=2, tol=1e-6,
                  max_iter=8, random_state=1)
    uninterrupted = GaussianMixture(**params)
    seen = states_seen(uninterrupted, X)
    for stop in (1, len(seen) // 2, len(seen) - 1):
        saved = states_seen(GaussianMixture(**params), X, stop_after=stop)[-1]
        resumed = GaussianMixture(**params).fit(X, resume=saved)
        assert_same_model(resumed, uninterrupted)


def test_a_resumed_state_is_a_plain_value():
    state = FitState(init=0)
    assert state.current is None and state.best is None and state.random_state is None
