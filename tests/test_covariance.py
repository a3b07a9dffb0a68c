"""daskgmm.covariance, per covariance type: the M-step from sufficient statistics, the Cholesky
factors of precisions, log-determinants and parameter counts.

Each function is checked against a naive NumPy reference written row by row (or matrix by
matrix) from the definitions (scikit-learn's formulas), in float64 and float32. scikit-learn
itself is the oracle of the estimator's tests (test_parity, test_sklearn_suite), through its
public API only.
"""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from conftest import COVARIANCE_TYPES, make_blobs
from daskgmm import covariance
from daskgmm.statistics import SufficientStats

N_COMPONENTS = 3
N_FEATURES = 3
REG_COVAR = 1e-6
DTYPES = (np.float64, np.float32)
# Against the naive float64 reference, which daskgmm's float64 statistics match to rounding. With
# float32's count padding (10 eps = 1.2e-6 per component), 'tied' differs from the estimate
# about the origin by K * padding * (c c^T) / sum N_k for a reference point c: 1e-9 here.
REFERENCE_RTOL = {np.float64: 1e-12, np.float32: 1e-8}
# Against scikit-learn computing in the data's dtype: its float32 sums over ~6000 rows are off
# by up to 7e-7 (relative to the entries' scale) here.


# ---------------------------------------------------------------- data and statistics


@pytest.fixture(scope="module")
def rows():
    """Rows of three blobs (as float32 values, so both dtypes hold the same numbers), integer
    weights (a weight is that many repeats of the row) and a reference point off their mean."""
    X = make_blobs(n_samples=2001, n_features=N_FEATURES, n_components=N_COMPONENTS)
    X = X.astype(np.float32).astype(np.float64)
    weights = np.random.default_rng(1).integers(0, 4, size=len(X)).astype(np.float64)
    reference = X.mean(axis=0) + 0.75
    return X, weights, reference


def responsibilities(X, kind, seed=2):
    """Soft responsibilities (rows summing to one), or one-hot at ``N_COMPONENTS`` chosen rows
    and zero elsewhere (how random_from_data and k-means++ start)."""
    rng = np.random.default_rng(seed)
    if kind == "soft":
        return rng.dirichlet(np.ones(N_COMPONENTS), size=len(X))
    resp = np.zeros((len(X), N_COMPONENTS))
    chosen = rng.choice(len(X), size=N_COMPONENTS, replace=False)
    resp[chosen, np.arange(N_COMPONENTS)] = 1.0
    return resp


def naive_stats(X, resp, weights, reference, covariance_type):
    """The sufficient statistics of ``daskgmm.statistics.SufficientStats``, summed row by row."""
    n_features = X.shape[1]
    second_shape = {"full": (N_COMPONENTS, n_features, n_features),
                    "tied": (n_features, n_features), "diag": (N_COMPONENTS, n_features),
                    "spherical": (N_COMPONENTS,)}[covariance_type]
    counts, first = np.zeros(N_COMPONENTS), np.zeros((N_COMPONENTS, n_features))
    second, pooled_first, pooled_count = np.zeros(second_shape), np.zeros(n_features), 0.0
    for x, r, w in zip(X, resp, weights):
        d = x - reference
        counts += w * r
        first += w * r[:, None] * d
        pooled_first += w * d
        pooled_count += w
        if covariance_type == "full":
            second += w * r[:, None, None] * np.outer(d, d)
        elif covariance_type == "tied":
            second += w * np.outer(d, d)
        elif covariance_type == "diag":
            second += w * r[:, None] * d**2
        else:
            second += w * r * (d @ d)
    tied = covariance_type == "tied"
    return SufficientStats(reference=reference, counts=counts, first=first, second=second,
                           pooled_first=pooled_first if tied else 0.0,
                           pooled_count=pooled_count if tied else 0.0)


def naive_parameters(X, resp, weights, covariance_type, padding):
    """Means and covariances from their definitions, row by row (scikit-learn's estimator).

    ``N_k = sum w r_k + padding``; ``mu_k = sum w r_k x / N_k``; the scatter of component k is
    ``sum w r_k (x - mu_k)(x - mu_k)^T / N_k``. 'tied' is scikit-learn's
    ``(sum w x x^T - sum_k N_k mu_k mu_k^T) / sum_k N_k`` (over all rows, whatever the
    responsibilities); 'diag' the diagonals; 'spherical' their mean over features.
    """
    n_features = X.shape[1]
    counts = np.zeros(N_COMPONENTS)
    sums = np.zeros((N_COMPONENTS, n_features))
    for x, r, w in zip(X, resp, weights):
        counts += w * r
        sums += w * r[:, None] * x
    counts += padding
    means = sums / counts[:, None]
    if covariance_type == "tied":
        outer = sum(w * np.outer(x, x) for x, w in zip(X, weights))
        between = sum(n * np.outer(mu, mu) for n, mu in zip(counts, means))
        tied = (outer - between) / counts.sum() + REG_COVAR * np.eye(n_features)
        return counts, means, tied
    scatter = np.zeros((N_COMPONENTS, n_features, n_features))
    for x, r, w in zip(X, resp, weights):
        for k in range(N_COMPONENTS):
            scatter[k] += w * r[k] * np.outer(x - means[k], x - means[k])
    full = scatter / counts[:, None, None] + REG_COVAR * np.eye(n_features)
    diag = np.diagonal(full, axis1=1, axis2=2)
    return counts, means, {"full": full, "diag": diag,
                           "spherical": diag.mean(axis=1)}[covariance_type]


def assert_parameters_close(ours, expected, rtol, scale):
    """Counts, means and covariances, each to ``rtol`` relative to the entries' scale."""
    for name, value, wanted, size in zip(("counts", "means", "covariances"), ours, expected,
                                         (1.0, scale, scale**2)):
        assert_allclose(value, wanted, rtol=rtol, atol=rtol * size, err_msg=name)


# ---------------------------------------------------------------- the M-step


@pytest.mark.parametrize("kind", ["soft", "chosen-rows"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_from_statistics_is_the_naive_estimate(rows, covariance_type, dtype, kind):
    X, weights, reference = rows
    resp = responsibilities(X, kind)
    padding = covariance.count_padding(dtype)
    assert padding == 10 * np.finfo(dtype).eps

    stats = naive_stats(X, resp, weights, reference, covariance_type)
    ours = covariance.estimate_gaussian_parameters(stats, REG_COVAR, covariance_type, padding)

    expected = naive_parameters(X, resp, weights, covariance_type, padding)
    assert ours[2].shape == covariance.precisions_shape(covariance_type, N_COMPONENTS,
                                                        N_FEATURES)
    assert_parameters_close(ours, expected, REFERENCE_RTOL[dtype], np.abs(X).max())


def test_m_step_about_a_far_reference_keeps_float64_precision(rows):
    # Moments about a point near the data, for data 1e6 from the origin: the covariances are
    # those of the data shifted back (the raw E[xx^T] - mu mu^T would lose them).
    X, weights, _ = rows
    resp = responsibilities(X, "soft")
    offset = 1e6
    shifted = naive_stats(X + offset, resp, weights, X.mean(axis=0) + offset, "full")
    centred = naive_stats(X, resp, weights, X.mean(axis=0), "full")
    padding = covariance.count_padding(np.float64)

    _, far_means, far = covariance.estimate_gaussian_parameters(shifted, REG_COVAR, "full",
                                                                padding)
    _, means, near = covariance.estimate_gaussian_parameters(centred, REG_COVAR, "full", padding)

    assert_allclose(far_means - offset, means, atol=1e-8)
    assert_allclose(far, near, rtol=1e-8)


# ---------------------------------------------------------------- Cholesky factors of precisions


def covariances_of(covariance_type, dtype):
    """Positive-definite covariances of every type, from the naive M-step on blobs."""
    X = make_blobs(n_samples=600, n_features=N_FEATURES, n_components=N_COMPONENTS)
    resp = responsibilities(X, "soft")
    _, _, covariances = naive_parameters(X, resp, np.ones(len(X)), covariance_type, 0.0)
    return covariances.astype(dtype)


def as_matrices(values, covariance_type):
    """Every component's matrix (covariance, precision or factor), shape (K, D, D)."""
    if covariance_type == "full":
        return values
    if covariance_type == "tied":
        return values[None]
    if covariance_type == "diag":
        return np.stack([np.diag(row) for row in values])
    return np.stack([value * np.eye(N_FEATURES) for value in values])


CHOLESKY_RTOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precision_cholesky_is_the_upper_factor_of_the_inverse(covariance_type, dtype):
    covariances = covariances_of(covariance_type, dtype)

    factors = covariance.precisions_cholesky_from_covariances(covariances, covariance_type)

    assert factors.dtype == dtype and factors.shape == covariances.shape
    rtol = CHOLESKY_RTOL[dtype]
    for factor, matrix in zip(as_matrices(factors.astype(np.float64), covariance_type),
                              as_matrices(covariances.astype(np.float64), covariance_type)):
        assert_array_equal(np.triu(factor), factor)
        assert np.all(np.diag(factor) > 0)
        assert_allclose(factor @ factor.T, np.linalg.inv(matrix), rtol=100 * rtol,
                        atol=100 * rtol * np.abs(np.linalg.inv(matrix)).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precision_cholesky_from_precisions_and_back(covariance_type, dtype):
    covariances = covariances_of(covariance_type, dtype)
    if covariance_type in ("full", "tied"):
        precisions = np.linalg.inv(covariances)
    else:
        precisions = 1.0 / covariances

    factors = covariance.precisions_cholesky_from_precisions(precisions, covariance_type)

    rtol = CHOLESKY_RTOL[dtype]
    # The upper factor with a positive diagonal is unique: the one found from the covariances.
    expected = covariance.precisions_cholesky_from_covariances(covariances, covariance_type)
    assert factors.dtype == dtype
    assert_allclose(factors, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    assert_allclose(covariance.precisions_from_cholesky(factors, covariance_type), precisions,
                    rtol=10 * rtol, atol=10 * rtol * np.abs(precisions).max())
    assert_allclose(covariance.covariances_from_cholesky(factors, covariance_type),
                    covariances, rtol=100 * rtol, atol=100 * rtol * np.abs(covariances).max())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_covariance_that_is_not_positive_definite_asks_for_regularisation(covariance_type):
    covariances = covariances_of(covariance_type, np.float64).copy()
    if covariance_type in ("full", "tied"):
        matrices = covariances.reshape(-1, N_FEATURES, N_FEATURES)
        matrices[-1] = -np.eye(N_FEATURES)
    else:
        covariances.flat[-1] = 0.0
    message = re.escape(covariance.ILL_DEFINED_COVARIANCE)
    assert "increase reg_covar" in covariance.ILL_DEFINED_COVARIANCE
    with pytest.raises(ValueError, match=message):
        covariance.precisions_cholesky_from_covariances(covariances, covariance_type)


# ---------------------------------------------------------------- log-determinants


def naive_log_det(covariances, covariance_type):
    """``log det U = -0.5 log det Sigma`` per component, from the covariance matrices."""
    halves = [-0.5 * np.linalg.slogdet(matrix)[1]
              for matrix in as_matrices(covariances.astype(np.float64), covariance_type)]
    return halves[0] if covariance_type == "tied" else np.array(halves)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_det_cholesky(covariance_type, dtype):
    covariances = covariances_of(covariance_type, dtype)
    factors = covariance.precisions_cholesky_from_covariances(covariances, covariance_type)

    log_det = covariance.log_det_cholesky(factors, covariance_type, N_FEATURES)

    assert np.shape(log_det) == ((N_COMPONENTS,) if covariance_type != "tied" else ())
    # The log of a float32 factor's diagonal: float32 rounding of values near 1 in size.
    atol = {np.float64: 1e-10, np.float32: 1e-5}[dtype]
    assert_allclose(log_det, naive_log_det(covariances, covariance_type), rtol=0, atol=atol)


# ---------------------------------------------------------------- parameter counts


def naive_parameter_count(covariance_type, n_components, n_features):
    """Free numbers of a mixture, counted entry by entry: the weights less one (they sum to
    one), every mean, and every entry on or above the diagonal of a covariance."""
    shape = covariance.precisions_shape(covariance_type, n_components, n_features)
    covariances = np.zeros(shape)
    if covariance_type in ("full", "tied"):
        matrices = covariances.reshape(-1, n_features, n_features)
        free = sum(1 for matrix in matrices for i in range(n_features)
                   for j in range(n_features) if j >= i)
    else:
        free = covariances.size
    return (n_components - 1) + n_components * n_features + free


@pytest.mark.parametrize("n_components, n_features", [(1, 1), (3, 3), (4, 7)])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parameter_counts(covariance_type, n_components, n_features):
    count = covariance.n_parameters(covariance_type, n_components, n_features)

    assert isinstance(count, int)
    assert count == naive_parameter_count(covariance_type, n_components, n_features)
    reference = SklearnGaussianMixture(n_components, covariance_type=covariance_type)
    reference.means_ = np.zeros((n_components, n_features))
    assert count == reference._n_parameters()
