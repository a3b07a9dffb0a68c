"""daskgmm.kernels.em_block against a naive per-row E-step and weighted sums.

For every row the reference computes ``log w_k + log N(x | mu_k, Sigma_k)`` from the
covariances (a solve and a log-determinant, no design features, no Cholesky factors), the
log-sum-exp over the components and the responsibilities; the statistics are then the weighted
sums of their definitions (``daskgmm.statistics.SufficientStats``). Blocks hold an odd number of
rows, enough for two full slices of the kernel and a ragged third, with a few far outliers (the
worst-explained rows, kept for re-seeding). Every covariance type, with and without row
weights, float64 and float32 (the same numbers in both: the rows are float32 values).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import COVARIANCE_TYPES, make_blobs
from daskgmm.design import n_design_features
from daskgmm.evaluation import evaluate_rows
from daskgmm.kernels import em_block, make_log_density
from daskgmm.slices import slice_length

N_COMPONENTS = 3
N_FEATURES = 3
N_OUTLIERS = 5
DTYPES = (np.float64, np.float32)
# Relative to an array's largest entry. float64: rounding of sums over ~35,000 rows (seen: up
# to 1e-13). float32: the kernel's per-row work runs in float32, its sums in float64 (seen: up
# to 3e-7).
RTOL = {np.float64: 1e-12, np.float32: 3e-6}


def block_rows(covariance_type):
    """An odd number of rows spanning two whole slices of the kernel and part of a third."""
    step = slice_length(n_design_features(covariance_type, N_FEATURES), 10**9)
    return 2 * step + 2 * (step // 7) + 1


@pytest.fixture(scope="module")
def mixture():
    """A mixture of every covariance type fitted (a few iterations) by scikit-learn, and the
    point the statistics are taken about: off the mixture's mean, as after an M-step."""
    X = make_blobs(n_samples=3000, n_features=N_FEATURES, n_components=N_COMPONENTS, seed=1)
    fitted = {}
    for covariance_type in COVARIANCE_TYPES:
        model = SklearnGaussianMixture(N_COMPONENTS, covariance_type=covariance_type,
                                       max_iter=5, random_state=0).fit(X)
        fitted[covariance_type] = model
    return fitted


def block_of(covariance_type):
    """Rows of the blocks (float32 values, as float64), with outliers, and row weights.

    Weights are multiples of 1/8 from 0 to 2 (exact in float32), some zero.
    """
    n_rows = block_rows(covariance_type)
    X = make_blobs(n_samples=n_rows, n_features=N_FEATURES, n_components=N_COMPONENTS, seed=1)
    rng = np.random.default_rng(2)
    X = X[rng.permutation(n_rows)]
    outliers = rng.choice(n_rows, size=N_OUTLIERS, replace=False)
    X[outliers] = 40.0 + 10.0 * np.arange(N_OUTLIERS)[:, None] + rng.normal(size=(N_OUTLIERS,
                                                                                  N_FEATURES))
    weights = rng.integers(0, 17, size=n_rows) / 8.0
    return X.astype(np.float32).astype(np.float64), weights


def full_covariances(model):
    """Every component's covariance matrix, shape (K, D, D)."""
    covariances, covariance_type = model.covariances_, model.covariance_type
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.stack([covariances] * N_COMPONENTS)
    if covariance_type == "diag":
        return np.stack([np.diag(row) for row in covariances])
    return np.stack([value * np.eye(N_FEATURES) for value in covariances])


def naive_e_step(X, model):
    """Weighted log-probabilities, ``log p(x)`` and responsibilities of every row.

    Each row's log-density comes from its Mahalanobis distance to each component, solved with
    the covariance matrix itself, and the covariance's log-determinant; the log-sum-exp and the
    responsibilities are taken row by row.
    """
    covariances = full_covariances(model)
    constant = N_FEATURES * np.log(2 * np.pi)
    log_prob = np.empty((len(X), N_COMPONENTS))
    for k, (mean, matrix) in enumerate(zip(model.means_, covariances)):
        d = X - mean
        mahalanobis = np.einsum("nd,dn->n", d, np.linalg.solve(matrix, d.T))
        log_det = np.linalg.slogdet(matrix)[1]
        log_prob[:, k] = np.log(model.weights_[k]) - 0.5 * (constant + log_det + mahalanobis)
    log_norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - log_norm[:, None])
    return log_prob, log_norm, resp


@pytest.fixture(scope="module")
def reference(mixture):
    """For each covariance type: the block, its weights and the naive per-row E-step."""
    cases = {}
    for covariance_type in COVARIANCE_TYPES:
        X, weights = block_of(covariance_type)
        cases[covariance_type] = (X, weights, naive_e_step(X, mixture[covariance_type]))
    return cases


def naive_statistics(X, weights, log_norm, resp, reference_point, covariance_type):
    """The weighted sums ``SufficientStats`` holds, from their definitions."""
    w = np.ones(len(X)) if weights is None else weights
    d = X - reference_point
    weighted = w[:, None] * resp
    second = {
        "full": np.einsum("nk,nd,ne->kde", weighted, d, d),
        "tied": np.einsum("n,nd,ne->de", w, d, d),
        "diag": np.einsum("nk,nd->kd", weighted, d**2),
        "spherical": np.einsum("nk,n->k", weighted, np.einsum("nd,nd->n", d, d)),
    }[covariance_type]
    worst = np.argsort(log_norm, kind="stable")[:N_COMPONENTS]
    return {
        "counts": weighted.sum(axis=0),
        "first": weighted.T @ d,
        "second": second,
        "log_likelihood": float(w @ log_norm),
        "total_weight": float(w.sum()),
        "pooled_first": w @ d if covariance_type == "tied" else 0.0,
        "pooled_count": float(w.sum()) if covariance_type == "tied" else 0.0,
        "worst_scores": log_norm[worst],
        "worst_points": X[worst],
    }


def density_of(model, reference_point, dtype):
    return make_log_density(model.weights_, model.means_, model.precisions_cholesky_,
                            model.covariance_type, reference_point, dtype)


def reference_point_of(model):
    return model.weights_ @ model.means_ + 0.5


def test_blocks_span_several_slices():
    for covariance_type in COVARIANCE_TYPES:
        n_rows = block_rows(covariance_type)
        step = slice_length(n_design_features(covariance_type, N_FEATURES), n_rows)
        assert n_rows % 2 == 1
        assert n_rows > 2 * step and n_rows % step != 0


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_naive_e_step_is_scikit_learns(mixture, reference, covariance_type):
    # The reference itself against the oracle (on a sample of its rows).
    X, _, (log_prob, log_norm, resp) = reference[covariance_type]
    model = mixture[covariance_type]
    rows = slice(0, None, 97)
    assert_allclose(logsumexp(log_prob[rows], axis=1), log_norm[rows], rtol=1e-14)
    assert_allclose(model.predict(X[rows]), log_prob[rows].argmax(axis=1))
    assert_allclose(log_norm[rows], model.score_samples(X[rows]), rtol=1e-12)
    assert_allclose(resp[rows], model.predict_proba(X[rows]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_block_gives_the_naive_statistics(mixture, reference, covariance_type, dtype,
                                             weighted):
    X, weights, (_, log_norm, resp) = reference[covariance_type]
    weights = weights if weighted else None
    model = mixture[covariance_type]
    point = reference_point_of(model)
    density = density_of(model, point, dtype)

    stats = em_block(X.astype(dtype), weights, density, covariance_type)

    expected = naive_statistics(X, weights, log_norm, resp, density.reference.astype(np.float64),
                                covariance_type)
    rtol = RTOL[dtype]
    assert_allclose(stats.reference, point.astype(dtype), rtol=0)
    for name in ("counts", "first", "second", "pooled_first"):
        value, wanted = getattr(stats, name), expected[name]
        assert np.shape(value) == np.shape(wanted), name
        assert np.asarray(value).dtype == np.float64, name  # summed in float64
        scale = max(np.abs(wanted).max(), 1.0)
        assert_allclose(value, wanted, rtol=rtol, atol=rtol * scale, err_msg=name)
    assert_allclose(stats.log_likelihood, expected["log_likelihood"], rtol=rtol)
    assert stats.total_weight == expected["total_weight"]
    assert stats.pooled_count == expected["pooled_count"]
    assert stats.n_nonfinite == 0
    assert_allclose(stats.worst_scores, expected["worst_scores"], rtol=rtol)
    assert_array_equal(stats.worst_points, expected["worst_points"])
    assert stats.worst_points.dtype == np.float64


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_block_counts_rows_that_are_not_finite(mixture, reference, covariance_type):
    X, _, _ = reference[covariance_type]
    X = X[:1001].copy()
    X[[3, 500, 1000], [0, 1, 2]] = [np.nan, np.inf, -np.inf]
    model = mixture[covariance_type]
    density = density_of(model, reference_point_of(model), np.float64)

    with np.errstate(invalid="ignore", over="ignore"):
        stats = em_block(X, None, density, covariance_type)

    assert stats.n_nonfinite == 3


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("output_dtype", DTYPES)
def test_evaluate_rows_gives_the_naive_labels_scores_and_probabilities(
        mixture, reference, covariance_type, output_dtype):
    # float32 outputs take the log-sum-exp in float32: its error stays below their rounding.
    X, _, (log_prob, log_norm, resp) = reference[covariance_type]
    model = mixture[covariance_type]
    density = density_of(model, reference_point_of(model), np.float64)
    labels = np.empty(len(X), dtype=np.uint8)
    scores = np.empty(len(X), dtype=output_dtype)
    probabilities = np.empty((len(X), N_COMPONENTS), dtype=output_dtype)
    evaluate_rows(X, density, labels=labels, log_likelihood=scores, probabilities=probabilities)
    assert_array_equal(labels, log_prob.argmax(axis=1))
    rtol = {np.float64: 1e-12, np.float32: 1e-6}[output_dtype]
    assert_allclose(scores, log_norm, rtol=rtol, atol=rtol * np.abs(log_norm).max())
    assert_allclose(probabilities, resp, rtol=rtol, atol=1e-7)
