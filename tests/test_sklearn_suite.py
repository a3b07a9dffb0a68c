"""scikit-learn's GaussianMixture test-suite, re-expressed against daskgmm's public API.

The checks follow ``sklearn/mixture/tests/test_gaussian_mixture.py`` and ``test_mixture.py``.
Tests of scikit-learn's private helpers are reached through the public API instead: a model
built from ``*_init`` arguments with ``max_iter=0`` exposes exactly the parameters it was given,
so its ``score_samples`` and ``predict_proba`` can be compared with naive reference densities.
Exceptions and warnings are scikit-learn's classes, which daskgmm's subclass.

The last test runs scikit-learn's estimator checks; see ``SKIPPED_CHECKS`` and ``BUG_CHECKS``.
"""

import copy
import itertools
import re
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
from numpy.testing import (
    assert_allclose,
    assert_almost_equal,
    assert_array_almost_equal,
    assert_array_equal,
)
from scipy import linalg, stats
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.covariance import EmpiricalCovariance
from sklearn.datasets import make_spd_matrix
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

import daskgmm
from conftest import COVARIANCE_TYPES
from daskgmm import GaussianMixture

DTYPES = (np.float64, np.float32)
INIT_METHODS = ("random", "random_from_data", "k-means++", "kmeans")
NOT_FITTED = (
    "This GaussianMixture instance is not fitted yet. Call 'fit' with appropriate arguments "
    "before using this estimator."
)
ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)
NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, or "
    "increase max_iter, tol, or check for degenerate data."
)

ignore_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---------------------------------------------------------------- data


@dataclass
class RandomData:
    """A random mixture and, for every covariance type, rows drawn from it in component order.

    ``X[covariance_type]`` uses the covariances of that type; ``labels`` is the component of
    every row (the same for all types).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: dict
    precisions: dict
    X: dict
    labels: np.ndarray

    @property
    def n_components(self):
        return len(self.weights)

    @property
    def n_features(self):
        return self.means.shape[1]

    @classmethod
    def draw(cls, rng, n_samples=200, n_components=2, n_features=2, scale=50,
             dtype=np.float64):
        weights = rng.rand(n_components).astype(dtype)
        weights /= weights.sum()
        means = rng.rand(n_components, n_features).astype(dtype) * scale
        covariances = {
            "spherical": 0.5 + rng.rand(n_components).astype(dtype),
            "diag": (0.5 + rng.rand(n_components, n_features).astype(dtype)) ** 2,
            "tied": make_spd_matrix(n_features, random_state=rng).astype(dtype),
            "full": np.stack([make_spd_matrix(n_features, random_state=rng).astype(dtype) * 0.5
                              for _ in range(n_components)]),
        }
        precisions = {
            "spherical": 1.0 / covariances["spherical"],
            "diag": 1.0 / covariances["diag"],
            "tied": linalg.inv(covariances["tied"]),
            "full": np.stack([linalg.inv(c) for c in covariances["full"]]),
        }
        sizes = np.round(weights * n_samples).astype(int)
        X = {covariance_type: _draw_rows(means, covariances[covariance_type], covariance_type,
                                         sizes, dtype)
             for covariance_type in COVARIANCE_TYPES}
        labels = np.repeat(np.arange(n_components), sizes)
        return cls(weights, means, covariances, precisions, X, labels)


def _draw_rows(means, covariances, covariance_type, sizes, dtype):
    """Rows of every component in turn, from a fixed seed (as scikit-learn's test data)."""
    sampler = np.random.RandomState(0)
    n_features = means.shape[1]
    return np.vstack([
        sampler.multivariate_normal(
            means[k], full_covariance(covariances, covariance_type, k, n_features), size
        ).astype(dtype)
        for k, size in enumerate(sizes)
    ])


def full_covariance(covariances, covariance_type, k, n_features):
    """Return component ``k``'s covariance as an (n_features, n_features) matrix."""
    if covariance_type == "full":
        return covariances[k]
    if covariance_type == "tied":
        return covariances
    if covariance_type == "diag":
        return np.diag(covariances[k])
    return covariances[k] * np.eye(n_features)


def naive_weighted_log_prob(X, weights, means, covariances, covariance_type):
    """``log w_k + log N(x | mu_k, Sigma_k)`` from scipy's multivariate normal, shape (n, K)."""
    n_features = X.shape[1]
    return np.column_stack([
        np.log(weights[k]) + stats.multivariate_normal.logpdf(
            X, means[k], full_covariance(covariances, covariance_type, k, n_features))
        for k in range(len(weights))
    ])


def true_start(rand_data, covariance_type, **params):
    """A model started from the true parameters of ``rand_data``."""
    return GaussianMixture(
        n_components=rand_data.n_components,
        covariance_type=covariance_type,
        weights_init=rand_data.weights,
        means_init=rand_data.means,
        precisions_init=rand_data.precisions[covariance_type],
        **params,
    )


def fixed_model(rand_data, covariance_type):
    """A model whose fitted parameters are exactly the true ones of ``rand_data``."""
    return true_start(rand_data, covariance_type, max_iter=0)


def as_matrices(precisions, covariance_type, n_components, n_features):
    """Every component's precision as a matrix, shape (n_components, n_features, n_features)."""
    return np.stack([full_covariance(precisions, covariance_type, k, n_features)
                     for k in range(n_components)])


# ---------------------------------------------------------------- parameters and *_init checks


def test_fitted_model_keeps_constructor_arguments():
    X = np.random.RandomState(0).rand(10, 2)
    params = dict(n_components=2, tol=1e-4, n_init=3, max_iter=30, reg_covar=1e-1,
                  covariance_type="full", init_params="random")
    gmm = GaussianMixture(**params).fit(X)
    for name, value in params.items():
        assert getattr(gmm, name) == value


def test_weights_init_checks():
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X["full"]
    n_components = rand_data.n_components

    bad_shape = rng.rand(n_components, 1)
    gmm = GaussianMixture(n_components=n_components, weights_init=bad_shape)
    message = re.escape(f"The parameter 'weights' should have the shape of ({n_components},), "
                        f"but got {bad_shape.shape}")
    with pytest.raises(ValueError, match=message):
        gmm.fit(X)

    gmm.weights_init = rng.rand(n_components) + 1
    with pytest.raises(ValueError, match=re.escape("'weights' should be in the range [0, 1]")):
        gmm.fit(X)

    bad_sum = rng.rand(n_components)
    bad_sum /= bad_sum.sum() + 1
    gmm.weights_init = bad_sum
    message = re.escape("The parameter 'weights' should be normalized, but got "
                        f"sum(weights) = {bad_sum.sum():.5f}")
    with pytest.raises(ValueError, match=message):
        gmm.fit(X)

    gmm = GaussianMixture(n_components=n_components, weights_init=rand_data.weights).fit(X)
    assert_array_equal(gmm.weights_init, rand_data.weights)


def test_weights_init_range_message_is_scikit_learns():
    rng = np.random.RandomState(0)
    X = RandomData.draw(rng).X["full"]
    weights = rng.rand(2) + 1
    message = re.escape(
        "The parameter 'weights' should be in the range [0, 1], but got "
        f"max value {np.min(weights):.5f}, min value {np.max(weights):.5f}"
    )
    with pytest.raises(ValueError, match=message):
        GaussianMixture(n_components=2, weights_init=weights).fit(X)


def test_means_init_checks():
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X["full"]
    n_components, n_features = rand_data.n_components, rand_data.n_features

    gmm = GaussianMixture(n_components=n_components,
                          means_init=rng.rand(n_components + 1, n_features))
    with pytest.raises(ValueError, match="The parameter 'means' should have the shape of "):
        gmm.fit(X)

    gmm.means_init = rand_data.means
    gmm.fit(X)
    assert_array_equal(gmm.means_init, rand_data.means)


def _bad_precisions(covariance_type, n_components, n_features):
    """Return ``(wrong shape, not positive-definite, expected words)`` for a covariance type."""
    not_positive_definite = np.ones((n_components, n_features, n_features))
    not_positive_definite[0] = np.eye(n_features)
    not_positive_definite[0, 0, 0] = -1.0
    return {
        "full": (np.ones((n_components + 1, n_features, n_features)), not_positive_definite,
                 "symmetric, positive-definite"),
        "tied": (np.ones((n_features + 1, n_features + 1)), not_positive_definite[0],
                 "symmetric, positive-definite"),
        "diag": (np.ones((n_components + 1, n_features)),
                 np.full((n_components, n_features), -1.0), "positive"),
        "spherical": (np.ones(n_components + 1), np.full(n_components, -1.0), "positive"),
    }[covariance_type]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_checks(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X[covariance_type]
    bad_shape, not_positive, words = _bad_precisions(
        covariance_type, rand_data.n_components, rand_data.n_features)
    gmm = GaussianMixture(n_components=rand_data.n_components, covariance_type=covariance_type,
                          random_state=rng)

    gmm.precisions_init = bad_shape
    with pytest.raises(ValueError,
                       match=f"The parameter '{covariance_type} precision' should have the shape"):
        gmm.fit(X)

    gmm.precisions_init = not_positive
    with pytest.raises(ValueError, match=f"'{covariance_type} precision' should be {words}"):
        gmm.fit(X)

    gmm.precisions_init = rand_data.precisions[covariance_type]
    gmm.fit(X)
    assert_array_equal(gmm.precisions_init, rand_data.precisions[covariance_type])


# ---------------------------------------------------------------- densities and responsibilities


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_score_samples_and_predict_proba_match_naive_densities(covariance_type):
    # The public-API form of scikit-learn's tests of _estimate_log_gaussian_prob.
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, n_components=3, n_features=3, scale=5)
    X = rng.rand(300, 3) * 5
    gmm = fixed_model(rand_data, covariance_type).fit(X)
    weighted = naive_weighted_log_prob(X, rand_data.weights, rand_data.means,
                                       rand_data.covariances[covariance_type], covariance_type)
    log_prob = logsumexp(weighted, axis=1)
    assert_allclose(gmm.score_samples(X), log_prob, rtol=1e-10)
    assert_allclose(gmm.predict_proba(X), np.exp(weighted - log_prob[:, None]), atol=1e-12)
    assert_array_equal(gmm.predict(X), weighted.argmax(axis=1))
    assert_allclose(gmm.score(X), log_prob.mean(), rtol=1e-10)


def test_responsibilities_are_normalised_and_inits_untouched():
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=5)
    X = rng.rand(rand_data.X["full"].shape[0], rand_data.n_features)
    for covariance_type in COVARIANCE_TYPES:
        gmm = true_start(rand_data, covariance_type, random_state=rng).fit(X)
        assert_allclose(gmm.predict_proba(X).sum(axis=1), 1.0)
        assert_array_equal(gmm.weights_init, rand_data.weights)
        assert_array_equal(gmm.means_init, rand_data.means)
        assert_array_equal(gmm.precisions_init, rand_data.precisions[covariance_type])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_agrees_with_predict_proba(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X[covariance_type]
    gmm = true_start(rand_data, covariance_type, random_state=rng)
    with pytest.raises(NotFittedError, match=re.escape(NOT_FITTED)):
        gmm.predict(X)
    gmm.fit(X)
    labels = gmm.predict(X)
    assert_array_equal(labels, gmm.predict_proba(X).argmax(axis=1))
    assert adjusted_rand_score(rand_data.labels, labels) > 0.95


# ---------------------------------------------------------------- fitting


@pytest.mark.filterwarnings("ignore:.*did not converge.*")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, max_iter, tol",
    [
        (0, 2, 1e-7),  # strict non-convergence
        (1, 2, 1e-1),  # loose non-convergence
        (3, 300, 1e-7),  # strict convergence
        (4, 300, 1e-1),  # loose convergence
    ],
)
def test_fit_predict_is_fit_then_predict(seed, max_iter, tol, dtype):
    rng = np.random.RandomState(seed)
    rand_data = RandomData.draw(rng, dtype=dtype)
    for covariance_type in COVARIANCE_TYPES:
        X = rand_data.X[covariance_type]
        gmm = true_start(rand_data, covariance_type, max_iter=max_iter, tol=tol, random_state=rng)
        twin = copy.deepcopy(gmm)
        labels = gmm.fit_predict(X)
        assert_array_equal(twin.fit(X).predict(X), labels)
        assert adjusted_rand_score(rand_data.labels, labels) > 0.95
        for name in ("means_", "weights_", "precisions_"):
            assert getattr(gmm, name).dtype == dtype


def test_fit_predict_is_fit_then_predict_with_n_init():
    X = np.random.RandomState(0).randn(1000, 5)
    gmm = GaussianMixture(n_components=5, n_init=5, random_state=0)
    assert_array_equal(gmm.fit_predict(X), gmm.predict(X))


def _precision_matrices_by_trace(precisions, covariance_type, n_components, n_features):
    matrices = as_matrices(precisions, covariance_type, n_components, n_features)
    return matrices[np.argsort(np.trace(matrices, axis1=1, axis2=2))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_recovers_the_true_mixture(covariance_type, dtype):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, dtype=dtype)
    n_components, n_features = rand_data.n_components, rand_data.n_features
    gmm = GaussianMixture(n_components=n_components, n_init=20, reg_covar=0,
                          covariance_type=covariance_type, random_state=rng)
    gmm.fit(rand_data.X[covariance_type])

    assert_allclose(np.sort(gmm.weights_), np.sort(rand_data.weights), rtol=0.1, atol=1e-2)
    fitted_order = gmm.means_[:, 0].argsort()
    true_order = rand_data.means[:, 0].argsort()
    assert_allclose(gmm.means_[fitted_order], rand_data.means[true_order], rtol=0.1, atol=1e-2)
    fitted = _precision_matrices_by_trace(gmm.precisions_, covariance_type, n_components,
                                          n_features)
    true = _precision_matrices_by_trace(rand_data.precisions[covariance_type], covariance_type,
                                        n_components, n_features)
    for estimate, truth in zip(fitted, true):
        reference = EmpiricalCovariance()
        reference.covariance_ = truth
        assert reference.error_norm(estimate) < 0.15
    for name in ("means_", "covariances_", "precisions_"):
        assert getattr(gmm, name).dtype == dtype


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_n_init_keeps_the_best_initialisation(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X[covariance_type]
    params = dict(n_components=rand_data.n_components, reg_covar=0,
                  covariance_type=covariance_type, random_state=rng)
    single = GaussianMixture(n_init=1, **params)
    scores = [single.fit(X).score(X) for _ in range(10)]
    best = GaussianMixture(n_init=10, **params).fit(X)
    assert_almost_equal(min(scores), best.score(X))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_convergence_warning(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=1)
    gmm = GaussianMixture(n_components=rand_data.n_components, max_iter=1, reg_covar=0,
                          covariance_type=covariance_type, random_state=rng)
    with pytest.warns(ConvergenceWarning, match=re.escape(NOT_CONVERGED)):
        gmm.fit(rand_data.X[covariance_type])


def test_convergence_warning_is_also_daskgmms_class():
    X = RandomData.draw(np.random.RandomState(0), scale=1).X["full"]
    with pytest.warns(daskgmm.ConvergenceWarning):
        GaussianMixture(n_components=2, max_iter=1, random_state=0).fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_several_initialisations_keep_the_best(covariance_type):
    # scikit-learn's test_multiple_init, made able to fail: the five initialisations end at
    # five different lower bounds (seen by the callback); the model is the one ending highest,
    # and the first of them is the fit with one initialisation.
    X = np.random.RandomState(0).randn(50, 5)
    params = dict(n_components=2, covariance_type=covariance_type, random_state=0)
    final = {}

    def record(state):
        if state.current is not None:
            final[state.init] = state.current.lower_bounds[-1]

    five = GaussianMixture(n_init=5, **params).fit(X, callback=record)
    once = GaussianMixture(**params).fit(X)
    assert sorted(final) == list(range(5)) and len(set(final.values())) == 5
    assert final[0] == once.lower_bound_
    assert five.lower_bound_ == max(final.values())
    assert five.score(X) >= once.score(X)


@pytest.mark.parametrize("covariance_type, n_parameters",
                         [("spherical", 13), ("diag", 21), ("tied", 26), ("full", 41)])
def test_number_of_free_parameters(covariance_type, n_parameters):
    # bic - aic = p (log n - 2): the parameter count, seen through the public API.
    X = np.random.RandomState(0).randn(50, 5)
    gmm = GaussianMixture(n_components=2, covariance_type=covariance_type,
                          random_state=0).fit(X)
    assert_allclose((gmm.bic(X) - gmm.aic(X)) / (np.log(50) - 2), n_parameters)


def test_bic_of_one_component_in_one_dimension_is_the_same_for_all_types():
    rng = np.random.RandomState(0)
    X = rng.randn(100, 1)
    bics = [GaussianMixture(covariance_type=covariance_type, random_state=rng).fit(X).bic(X)
            for covariance_type in COVARIANCE_TYPES]
    assert_allclose(bics, bics[0])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_aic_and_bic_are_close_to_the_gaussian_entropy(covariance_type):
    rng = np.random.RandomState(0)
    n_samples, n_features = 50, 3
    X = rng.randn(n_samples, n_features)
    sign, log_det = np.linalg.slogdet(np.cov(X.T, bias=True))
    entropy = 0.5 * (log_det + n_features * (1 + np.log(2 * np.pi)))
    gmm = GaussianMixture(n_components=2, covariance_type=covariance_type, random_state=rng,
                          max_iter=200).fit(X)
    n_parameters = (gmm.bic(X) - gmm.aic(X)) / (np.log(n_samples) - 2)
    aic = 2 * n_samples * entropy + 2 * n_parameters
    bic = 2 * n_samples * entropy + np.log(n_samples) * n_parameters
    bound = n_features / np.sqrt(n_samples)
    assert (gmm.aic(X) - aic) / n_samples < bound
    assert (gmm.bic(X) - bic) / n_samples < bound


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_verbose_output(covariance_type, capsys):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X[covariance_type]
    params = dict(n_components=rand_data.n_components, reg_covar=0,
                  covariance_type=covariance_type, random_state=rng, verbose_interval=1)
    GaussianMixture(verbose=1, **params).fit(X)
    terse = capsys.readouterr().out
    assert "Initialization 0" in terse
    assert "  Iteration 1\n" in terse
    assert "Initialization converged." in terse

    GaussianMixture(verbose=2, **params).fit(X)
    detailed = capsys.readouterr().out
    assert "Initialization 0" in detailed
    assert re.search(r"  Iteration 1\t time lapse \d+\.\d{5}s\t ll change", detailed)
    assert re.search(r"Initialization converged\. time lapse \d+\.\d{5}s\t lower bound", detailed)


@pytest.mark.filterwarnings("ignore:.*did not converge.*")
@pytest.mark.parametrize("seed", (0, 1, 2))
def test_warm_start(seed):
    X = np.random.RandomState(seed).rand(500, 2)
    params = dict(n_components=2, n_init=1, reg_covar=0, random_state=seed)

    # Two warm-started fits of one iteration each are one cold fit of two iterations.
    cold = GaussianMixture(max_iter=2, warm_start=False, **params).fit(X)
    warm = GaussianMixture(max_iter=1, warm_start=True, **params)
    first = warm.fit(X).score(X)
    second = warm.fit(X).score(X)
    assert_almost_equal(cold.weights_, warm.weights_)
    assert_almost_equal(cold.means_, warm.means_)
    assert_almost_equal(cold.precisions_, warm.precisions_)
    assert second > first

    # Repeated warm starts reach convergence where one short cold fit does not.
    cold = GaussianMixture(max_iter=5, tol=1e-6, warm_start=False, **params).fit(X)
    assert not cold.converged_
    warm = GaussianMixture(max_iter=5, tol=1e-6, warm_start=True, **params)
    for _ in range(1000):
        if warm.fit(X).converged_:
            break
    assert warm.converged_


@ignore_convergence
@pytest.mark.parametrize("max_iter", (1, 2, 50))
def test_convergence_is_detected_with_warm_start(max_iter):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng)
    X = rand_data.X["full"]
    gmm = GaussianMixture(n_components=rand_data.n_components, warm_start=True,
                          max_iter=max_iter, random_state=rng)
    for _ in range(100):
        if gmm.fit(X).converged_:
            break
    assert gmm.converged_
    assert gmm.n_iter_ <= max_iter


@pytest.mark.parametrize("dtype", DTYPES)
def test_score(dtype):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=7, dtype=dtype)
    X = rand_data.X["full"]
    assert X.dtype == dtype
    params = dict(n_components=rand_data.n_components, reg_covar=0, random_state=rng)
    one_step = GaussianMixture(max_iter=1, **params)
    with pytest.raises(NotFittedError, match=re.escape(NOT_FITTED)):
        one_step.score(X)

    with pytest.warns(ConvergenceWarning):
        one_step.fit(X)
    assert one_step.means_.dtype == dtype
    assert one_step.covariances_.dtype == dtype
    per_row = one_step.score_samples(X)
    assert per_row.dtype == dtype
    assert_almost_equal(one_step.score(X), per_row.mean(), decimal=5)

    converged = GaussianMixture(**params).fit(X)
    assert converged.score(X) > one_step.score(X)


def test_score_samples_needs_fit_and_gives_one_value_per_row():
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=7)
    X = rand_data.X["full"]
    gmm = GaussianMixture(n_components=rand_data.n_components, reg_covar=0, random_state=rng)
    with pytest.raises(NotFittedError, match=re.escape(NOT_FITTED)):
        gmm.score_samples(X)
    assert gmm.fit(X).score_samples(X).shape == (X.shape[0],)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_likelihood_never_decreases(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=7)
    X = rand_data.X[covariance_type]
    gmm = GaussianMixture(n_components=rand_data.n_components, covariance_type=covariance_type,
                          reg_covar=0, warm_start=True, max_iter=1, random_state=rng, tol=1e-7)
    previous = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(600):
            current = gmm.fit(X).score(X)
            assert current >= previous
            previous = current
            if gmm.converged_:
                break
    assert gmm.converged_


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::daskgmm.ComponentReseedWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_collapsed_components_need_regularisation(covariance_type):
    # Two points repeated five times each, ten components: without reg_covar the covariances
    # of the components are singular.
    X = np.vstack([np.ones((5, 5)), np.zeros((5, 5))])
    gmm = GaussianMixture(n_components=10, reg_covar=0, covariance_type=covariance_type,
                          random_state=np.random.RandomState(0))
    with pytest.raises(ValueError, match=re.escape(ILL_DEFINED)):
        gmm.fit(X)
    gmm.set_params(reg_covar=1e-6).fit(X)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_are_the_inverse_covariances(covariance_type, dtype):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=7, dtype=dtype)
    gmm = GaussianMixture(n_components=rand_data.n_components, covariance_type=covariance_type,
                          random_state=rng, n_init=5).fit(rand_data.X[covariance_type])
    assert gmm.precisions_.dtype == dtype
    assert gmm.covariances_.dtype == dtype
    decimal = 6 if dtype == np.float64 else 3
    if covariance_type == "full":
        for precision, covariance in zip(gmm.precisions_, gmm.covariances_):
            assert_array_almost_equal(linalg.inv(precision), covariance, decimal=decimal)
    elif covariance_type == "tied":
        assert_array_almost_equal(linalg.inv(gmm.precisions_), gmm.covariances_,
                                  decimal=decimal)
    else:
        assert_array_almost_equal(gmm.precisions_, 1.0 / gmm.covariances_, decimal=decimal)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample(covariance_type):
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, scale=7, n_components=3)
    n_components, n_features = rand_data.n_components, rand_data.n_features
    gmm = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                          random_state=rng)
    with pytest.raises(NotFittedError, match="This GaussianMixture instance is not fitted"):
        gmm.sample(0)
    gmm.fit(rand_data.X[covariance_type])
    with pytest.raises(ValueError, match="Invalid value for 'n_samples'"):
        gmm.sample(0)

    X, labels = gmm.sample(20000)
    assert X.shape == (20000, n_features)
    for k in range(n_components):
        rows = X[labels == k]
        if covariance_type == "full":
            expected, observed = gmm.covariances_[k], np.cov(rows.T)
        elif covariance_type == "tied":
            expected, observed = gmm.covariances_, np.cov(rows.T)
        elif covariance_type == "diag":
            expected, observed = gmm.covariances_[k], np.diag(np.cov(rows.T))
        else:
            expected, observed = gmm.covariances_[k], np.var(rows - gmm.means_[k])
        assert_array_almost_equal(expected, observed, decimal=1)
    sample_means = np.array([X[labels == k].mean(axis=0) for k in range(n_components)])
    assert_array_almost_equal(gmm.means_, sample_means, decimal=1)
    for n_samples in range(1, 100):
        assert gmm.sample(n_samples)[0].shape == (n_samples, n_features)


@ignore_convergence
@pytest.mark.parametrize("random_state", range(8))
def test_more_initialisations_give_a_higher_lower_bound(random_state):
    X = RandomData.draw(np.random.RandomState(random_state), n_samples=50, scale=1).X["full"]
    params = dict(n_components=2, max_iter=1, random_state=random_state)
    once = GaussianMixture(n_init=1, **params).fit(X)
    ten = GaussianMixture(n_init=10, **params).fit(X)
    assert ten.lower_bound_ >= once.lower_bound_


# The initial parameters of scikit-learn's non-regression test for its issue 18216: one EM step
# from here sends two spherical components onto single rows.
DIVERGING_INIT = dict(
    means_init=np.array([
        [0.670637869618158, 0.21038256107384043, 0.12892629765485303],
        [0.09394051075844147, 0.5759464955561779, 0.929296197576212],
        [0.5033230372781258, 0.9569852381759425, 0.08654043447295741],
        [0.18578301420435747, 0.5531158970919143, 0.19388943970532435],
        [0.4548589928173794, 0.35182513658825276, 0.568146063202464],
        [0.609279894978321, 0.7929063819678847, 0.9620097270828052],
    ]),
    precisions_init=np.array([999999.999604483, 999999.9990869573, 553.7603944542167,
                              204.78596008931834, 15.867423501783637, 85.4595728389735]),
    weights_init=[0.03333333333333341, 0.03333333333333341, 0.06666666666666674,
                  0.06666666666666674, 0.7000000000000001, 0.10000000000000007],
)


@ignore_convergence
def test_best_parameters_are_set_when_em_diverges():
    X = np.random.RandomState(0).uniform(size=(30, 3))
    gmm = GaussianMixture(covariance_type="spherical", reg_covar=0, n_components=6,
                          max_iter=1, random_state=np.random.RandomState(0), **DIVERGING_INIT)
    gmm.fit(X)
    assert not gmm.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "n_iter_",
                 "lower_bound_", "lower_bounds_"):
        assert hasattr(gmm, name)


@pytest.mark.parametrize("seed", (0, 42))
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_initial_means_are_distinct(init_params, seed):
    rng = np.random.RandomState(seed)
    rand_data = RandomData.draw(rng, scale=5)
    gmm = GaussianMixture(n_components=rand_data.n_components, init_params=init_params,
                          random_state=rng, max_iter=0).fit(rand_data.X["full"])
    for first, second in itertools.combinations(gmm.means_, 2):
        assert not np.allclose(first, second)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_every_initialisation_converges_inside_the_data(init_params, dtype):
    rng = np.random.RandomState(42)
    rand_data = RandomData.draw(rng, scale=5, dtype=dtype)
    X = rand_data.X["full"]
    gmm = GaussianMixture(n_components=rand_data.n_components, init_params=init_params,
                          random_state=rng).fit(X)
    assert gmm.means_.shape == (rand_data.n_components, X.shape[1])
    assert np.all(X.min(axis=0) <= gmm.means_)
    assert np.all(gmm.means_ <= X.max(axis=0))
    assert gmm.converged_
    for name in ("means_", "covariances_", "weights_"):
        assert getattr(gmm, name).dtype == dtype


def test_max_iter_zero_returns_the_initial_means():
    rng = np.random.RandomState(0)
    X = RandomData.draw(rng, scale=5).X["full"]
    means_init = [[20, 30], [30, 25]]
    gmm = GaussianMixture(n_components=2, random_state=rng, means_init=means_init, tol=1e-6,
                          max_iter=0).fit(X)
    assert_allclose(gmm.means_, means_init)


def two_gaussians(dtype):
    """scikit-learn's data for its issue 16944: a shifted and a stretched Gaussian."""
    rng = np.random.RandomState(0)
    shifted = rng.randn(300, 2) + np.array([20, 20])
    stretched = rng.randn(300, 2) @ np.array([[0.0, -0.7], [3.5, 0.7]])
    return np.vstack([shifted, stretched]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_from_the_default_start_reproduces_the_fit(covariance_type, dtype):
    # scikit-learn's issue 16944: the precisions the default start computes, given back as
    # precisions_init, must reproduce the default fit iteration for iteration. (scikit-learn
    # builds them from its KMeans labels; daskgmm's k-means|| may number the clusters
    # differently, so they come from the default start itself, read with max_iter=0.)
    X = two_gaussians(dtype)
    params = dict(n_components=2, covariance_type=covariance_type, random_state=0)
    start = GaussianMixture(max_iter=0, **params).fit(X)
    with_init = GaussianMixture(precisions_init=start.precisions_, **params).fit(X)
    without_init = GaussianMixture(**params).fit(X)
    for gmm in (start, with_init, without_init):
        for name in ("means_", "covariances_", "precisions_cholesky_"):
            assert getattr(gmm, name).dtype == dtype
    assert with_init.n_iter_ == without_init.n_iter_
    rtol = 1e-7 if dtype == np.float64 else 1e-3
    assert_allclose(with_init.precisions_cholesky_, without_init.precisions_cholesky_, rtol=rtol)


def test_diag_precisions_init_from_sklearn_kmeans_labels():
    X = two_gaussians(np.float64)
    labels = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X).labels_
    resp = np.eye(2)[labels]
    counts = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = resp.T @ X / counts[:, None]
    variances = (resp.T @ X**2 - 2 * means * (resp.T @ X)) / counts[:, None] + means**2
    params = dict(n_components=2, covariance_type="diag", reg_covar=1e-6, random_state=0)
    with_init = GaussianMixture(precisions_init=1.0 / (variances + 1e-6), **params).fit(X)
    without_init = GaussianMixture(**params).fit(X)
    assert with_init.n_iter_ == without_init.n_iter_
    assert_allclose(with_init.precisions_cholesky_, without_init.precisions_cholesky_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kmeans_start_matches_kmeans_clusters(dtype):
    # The default start is the Gaussian fitted to each k-means cluster (up to numbering).
    X = two_gaussians(dtype)
    start = GaussianMixture(n_components=2, covariance_type="diag", max_iter=0,
                            random_state=0).fit(X)
    labels = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X).labels_
    clusters = [X[labels == k].astype(np.float64) for k in range(2)]
    order = np.argsort([cluster[:, 0].mean() for cluster in clusters])
    fitted = np.argsort(start.means_[:, 0])
    rtol = 1e-7 if dtype == np.float64 else 1e-4
    for k, j in zip(order, fitted):
        assert_allclose(start.means_[j], clusters[k].mean(axis=0), rtol=rtol)
        assert_allclose(start.covariances_[j], clusters[k].var(axis=0) + 1e-6, rtol=rtol)
        assert_allclose(start.weights_[j], len(clusters[k]) / len(X), rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_gives_matching_cholesky_factors(covariance_type, dtype):
    # scikit-learn's issue 26415, through the public API: with max_iter=0 the fitted precisions
    # are the given ones and their Cholesky factors are upper-triangular square roots.
    rng = np.random.RandomState(0)
    rand_data = RandomData.draw(rng, n_components=4, n_features=3, dtype=dtype)
    precisions = rand_data.precisions[covariance_type].astype(dtype)
    gmm = fixed_model(rand_data, covariance_type).fit(rng.rand(100, 3).astype(dtype))
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    assert gmm.precisions_cholesky_.dtype == dtype
    assert_allclose(gmm.precisions_, precisions, rtol=rtol)
    factors = gmm.precisions_cholesky_.astype(np.float64)
    if covariance_type in ("full", "tied"):
        assert_allclose(np.triu(factors), factors)
        product = factors @ np.swapaxes(factors, -1, -2)
        assert_allclose(product, precisions, rtol=rtol)
    else:
        assert_allclose(factors**2, precisions, rtol=rtol)


def test_single_component_fits_three_rows():
    # scikit-learn's issue 23032: one component fitted on three rows is their mean and
    # (regularised) covariance, and it can be sampled.
    X = np.random.RandomState(0).multivariate_normal(np.zeros(2), np.identity(2), size=3)
    gmm = GaussianMixture(n_components=1).fit(X)
    assert_allclose(gmm.weights_, [1.0], rtol=1e-12)
    assert_allclose(gmm.means_, X.mean(axis=0, keepdims=True), rtol=1e-12)
    assert_allclose(gmm.covariances_, [np.cov(X.T, bias=True) + 1e-6 * np.eye(2)], rtol=1e-10)
    reference = SklearnGaussianMixture(n_components=1).fit(X)
    assert_allclose(gmm.precisions_cholesky_, reference.precisions_cholesky_, rtol=1e-10)
    rows, labels = gmm.sample()
    assert rows.shape == (1, 2) and np.isfinite(rows).all()
    assert_array_equal(labels, [0])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_complete_initial_parameters_are_used_as_given(covariance_type):
    # scikit-learn's issue 26015: with weights, means and precisions all given, nothing is
    # estimated before the first EM step, so max_iter=0 returns them unchanged.
    rng = np.random.RandomState(42)
    rand_data = RandomData.draw(rng)
    gmm = fixed_model(rand_data, covariance_type).fit(rand_data.X[covariance_type])
    assert_allclose(gmm.weights_, rand_data.weights, rtol=1e-12)
    assert_allclose(gmm.means_, rand_data.means, rtol=1e-12)
    assert_allclose(gmm.precisions_, rand_data.precisions[covariance_type], rtol=1e-10)
    assert_allclose(gmm.covariances_, rand_data.covariances[covariance_type], rtol=1e-10)


# ---------------------------------------------------------------- test_mixture.py


@ignore_convergence
def test_n_iter_is_the_number_of_iterations_run():
    X = np.random.RandomState(0).rand(10, 5)
    gmm = GaussianMixture().set_params(max_iter=1).fit(X)
    assert gmm.n_iter_ == 1


def test_more_components_than_samples_is_an_error():
    X = np.random.RandomState(0).rand(10, 5)
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        GaussianMixture().set_params(n_components=12).fit(X)


@pytest.mark.parametrize("error", [NotFittedError, daskgmm.NotFittedError, ValueError,
                                   AttributeError])
def test_not_fitted_error_classes(error):
    with pytest.raises(error, match=re.escape(NOT_FITTED)):
        GaussianMixture().predict(np.zeros((3, 2)))


# ---------------------------------------------------------------- scikit-learn's estimator checks

# Checks daskgmm fails by design. Each is skipped, with the reason.
SKIPPED_CHECKS = {}

def _check_name(check):
    while isinstance(check, partial):
        check = check.func
    return check.__name__


@parametrize_with_checks([GaussianMixture()])
def test_scikit_learn_estimator_checks(estimator, check):
    name = _check_name(check)
    if name in SKIPPED_CHECKS:
        pytest.skip(SKIPPED_CHECKS[name])
    check(estimator)
