"""Property tests: over random shapes, chunkings, integer weights and dtypes, daskgmm is sklearn.

Hypothesis draws a problem (rows, features, components, covariance type, dtype, integer sample
weights, NumPy row blocks or Dask chunks, and a seed for the data); both estimators start from the
same initial parameters taken from the data and run three EM iterations. An integer weight is
checked against scikit-learn on the rows repeated that many times, which is what it means.
"""

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import COVARIANCE_TYPES
from daskgmm import GaussianMixture

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning",
    "ignore::daskgmm.sklearn_compat.ComponentReseedWarning",
)

PROPERTIES = settings(max_examples=50, deadline=None, print_blob=True,
                      suppress_health_check=[HealthCheck.too_slow])
MAX_ITER = 3
REG_COVAR = 1e-3
# (rtol, atol relative to the data's scale) against scikit-learn in float64.
TOLERANCE = {np.float64: (1e-6, 1e-9), np.float32: (2e-3, 2e-4)}


@dataclass
class Problem:
    """One drawn fitting problem and how its data are presented to daskgmm."""

    X: np.ndarray
    sample_weight: np.ndarray
    n_components: int
    covariance_type: str
    chunks: tuple
    kind: str

    def daskgmm_input(self):
        """X and weights as NumPy with row blocks (``block_rows``) or as chunked Dask arrays."""
        if self.kind == "numpy":
            return self.X, self.sample_weight
        X = da.from_array(self.X, chunks=(self.chunks, -1))
        weights = None if self.sample_weight is None else da.from_array(self.sample_weight,
                                                                         chunks=(self.chunks,))
        return X, weights

    def repeated_rows(self):
        """The rows as scikit-learn sees them: each repeated by its integer weight."""
        if self.sample_weight is None:
            return self.X
        return np.repeat(self.X, self.sample_weight, axis=0)


@st.composite
def problems(draw, dtypes=(np.float64,)):
    n_rows = draw(st.integers(20, 300))
    n_features = draw(st.integers(1, 5))
    n_components = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centres = rng.normal(scale=3.0, size=(n_components, n_features))
    X = centres[rng.integers(n_components, size=n_rows)] + rng.normal(
        scale=rng.uniform(0.3, 2.0, size=n_features), size=(n_rows, n_features))
    weighted = draw(st.booleans())
    sample_weight = rng.integers(0, 4, size=n_rows) if weighted else None
    cuts = draw(st.lists(st.integers(1, n_rows - 1), unique=True, max_size=6))
    bounds = [0] + sorted(cuts) + [n_rows]
    return Problem(
        X=X.astype(draw(st.sampled_from(dtypes))),
        sample_weight=sample_weight,
        n_components=n_components,
        covariance_type=draw(st.sampled_from(COVARIANCE_TYPES)),
        chunks=tuple(b - a for a, b in zip(bounds, bounds[1:])),
        kind=draw(st.sampled_from(["numpy", "dask"])),
    )


def initial_parameters(problem, seed=0):
    """Uniform weights, means at K distinct rows plus jitter, precisions from the data's scale."""
    rows = problem.repeated_rows().astype(np.float64)
    distinct = np.unique(rows, axis=0)
    assume(len(distinct) >= problem.n_components and len(rows) >= 2)
    rng = np.random.default_rng(seed)
    k, d = problem.n_components, rows.shape[1]
    means = distinct[rng.choice(len(distinct), k, replace=False)] + rng.normal(scale=1e-3,
                                                                               size=(k, d))
    variance = rows.var(axis=0).mean() + REG_COVAR
    precisions = {
        "full": np.stack([np.eye(d) / variance] * k),
        "tied": np.eye(d) / variance,
        "diag": np.full((k, d), 1 / variance),
        "spherical": np.full(k, 1 / variance),
    }[problem.covariance_type]
    return {"weights_init": np.full(k, 1 / k), "means_init": means, "precisions_init": precisions}


def fit_both(problem):
    """Fit scikit-learn (on the repeated rows) and daskgmm from the same start, 3 iterations."""
    params = dict(n_components=problem.n_components, covariance_type=problem.covariance_type,
                  max_iter=MAX_ITER, tol=0.0, reg_covar=REG_COVAR,
                  **initial_parameters(problem))
    try:
        reference = SklearnGaussianMixture(**params).fit(problem.repeated_rows().astype(float))
    except ValueError:
        assume(False)
    X, weights = problem.daskgmm_input()
    block_rows = max(problem.chunks)
    with dask.config.set(scheduler="threads"):
        model = GaussianMixture(split_every=2, block_rows=block_rows, **params).fit(
            X, sample_weight=weights)
    # A component that lost its weight is re-seeded by daskgmm, not by scikit-learn.
    assume(model.n_reseeded_ == 0)
    return reference, model


def assert_close_to_sklearn(model, reference, X, dtype):
    """Weights, means, covariances and lower bound, to ``TOLERANCE`` at the data's scale."""
    rtol, atol = TOLERANCE[dtype]
    scale = max(float(np.abs(X).max()), 1.0)
    assert_allclose(model.weights_, reference.weights_, rtol=rtol, atol=atol)
    assert_allclose(model.means_, reference.means_, rtol=rtol, atol=atol * scale)
    assert_allclose(model.covariances_, reference.covariances_, rtol=rtol, atol=atol * scale**2)
    assert model.lower_bound_ == pytest.approx(reference.lower_bound_, rel=rtol, abs=atol)


@PROPERTIES
@given(problems())
def test_same_model_as_sklearn_in_float64(problem):
    reference, model = fit_both(problem)
    assert model.means_.dtype == np.float64
    assert_close_to_sklearn(model, reference, problem.X, np.float64)


@PROPERTIES
@given(problems(dtypes=(np.float32,)))
def test_same_model_as_sklearn_in_float32(problem):
    reference, model = fit_both(problem)
    assert model.means_.dtype == np.float32
    assert_close_to_sklearn(model, reference, problem.X, np.float32)


@PROPERTIES
@given(problems())
def test_lower_bound_never_decreases(problem):
    """Exact EM (no covariance regularisation) cannot lower the likelihood."""
    X, weights = problem.daskgmm_input()
    params = initial_parameters(problem)
    with dask.config.set(scheduler="threads"):
        try:
            model = GaussianMixture(problem.n_components, covariance_type=problem.covariance_type,
                                    max_iter=MAX_ITER, tol=0.0, reg_covar=0.0, split_every=2,
                                    **params).fit(X, sample_weight=weights)
        except ValueError:
            assume(False)
    assume(model.n_reseeded_ == 0 and np.isfinite(model.lower_bounds_).all())
    bounds = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-9 * (1 + np.abs(bounds[1:])))
