"""The EM loop (the BaseMixture template): callbacks, resuming to the bit, the pieces it needs."""

import copy
import inspect

import dask.array as da
import numpy as np
import pytest

from conftest import COVARIANCE_TYPES, assert_same_model, make_blobs
import daskgmm
from daskgmm import GaussianMixture, base, mixture
from daskgmm.base import EMRun
from daskgmm.mixture import FitState
from daskgmm.options import GAUSSIAN_MIXTURE_PARAMETERS, defaults


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


def test_the_callback_sees_every_iteration_and_every_initialisation_end():
    X = make_blobs(n_samples=600)
    model = GaussianMixture(3, n_init=2, tol=1e-8, max_iter=20, random_state=0)
    seen = states_seen(model, X)
    runs = [[s.current for s in seen if s.current is not None and s.init == i] for i in range(2)]
    for run in runs:
        # One state per iteration, each extending the last, until convergence or max_iter.
        assert [state.n_iter for state in run] == list(range(1, len(run) + 1))
        assert all(later.lower_bounds[:-1] == earlier.lower_bounds
                   for earlier, later in zip(run, run[1:]))
        assert not any(state.converged for state in run[:-1])
        assert run[-1].converged or run[-1].n_iter == 20
    ends = [s for s in seen if s.current is None]
    assert [s.init for s in ends] == [1, 2]
    assert len(seen) == len(runs[0]) + len(runs[1]) + len(ends)
    # The first initialisation with the highest final lower bound is the model.
    best = max((run[-1] for run in runs), key=lambda state: state.lower_bounds[-1])
    assert ends[-1].best.lower_bounds == best.lower_bounds == model.lower_bounds_
    assert model.n_iter_ == best.n_iter and model.converged_ == best.converged


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


def test_fit_state_and_em_run_are_public_where_the_fit_is():
    assert daskgmm.FitState is FitState is base.FitState
    assert daskgmm.EMRun is mixture.EMRun is base.EMRun


def test_a_run_converges_when_its_bound_gains_less_than_tol():
    run = EMRun(params=None, start_bound=-10.0)
    assert run.record(-5.0, tol=1.0) == 5.0 and not run.converged
    assert run.record(-4.5, tol=1.0) == 0.5 and run.converged
    assert (run.n_iter, run.lower_bound) == (2, -4.5)


def test_the_signature_defaults_are_the_parameter_table():
    signature = inspect.signature(GaussianMixture.__init__).parameters
    declared = {name: p.default for name, p in signature.items() if name != "self"}
    assert declared == defaults(GAUSSIAN_MIXTURE_PARAMETERS)
    assert list(GaussianMixture().get_params()) == sorted(GAUSSIAN_MIXTURE_PARAMETERS)


PIECES = ("_check_initial_parameters", "_initial_parameters", "_log_density_of", "_m_step",
          "_compute_lower_bound", "_get_parameters", "_set_parameters")


@pytest.mark.parametrize("missing", PIECES)
def test_a_mixture_missing_a_piece_of_the_template_cannot_be_made(missing):
    pieces = {name: getattr(GaussianMixture, name) for name in PIECES if name != missing}
    Incomplete = type("Incomplete", (base.BaseMixture,), {
        "__init__": GaussianMixture.__init__, **pieces})
    with pytest.raises(TypeError, match=missing):
        Incomplete()


def test_the_template_runs_a_subclass_s_pieces():
    """A subclass that changes only the lower bound changes what the loop reports and stops on."""
    class HalvedBound(GaussianMixture):
        def _compute_lower_bound(self, stats, previous, params):
            return super()._compute_lower_bound(stats, previous, params) / 2

    X = make_blobs(n_samples=300)
    plain = GaussianMixture(2, tol=0.0, max_iter=4, random_state=0).fit(X)
    halved = HalvedBound(2, tol=0.0, max_iter=4, random_state=0).fit(X)
    np.testing.assert_array_equal(halved.means_, plain.means_)
    assert halved.lower_bounds_ == [bound / 2 for bound in plain.lower_bounds_]
