"""select_model: a grid of fits over one dataset, chosen by BIC or AIC."""

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import make_blobs
from daskgmm import GaussianMixture, ModelSelection, select_model

N_COMPONENTS = (1, 2, 3, 4)
COVARIANCE_TYPES = ("full", "diag")
CHUNK_ROWS = 200

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::daskgmm.ComponentReseedWarning"),
]


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_samples=600, n_features=3, n_components=3)


@pytest.fixture(scope="module")
def selection(X):
    return select_model(X, n_components=list(N_COMPONENTS),
                        covariance_types=list(COVARIANCE_TYPES), criterion="bic", random_state=0)


def best_row(selection):
    best = selection.best_model
    (row,) = [row for row in selection.table if row["n_components"] == best.n_components
              and row["covariance_type"] == best.covariance_type]
    return row


def test_bic_finds_the_three_blobs(selection):
    assert isinstance(selection, ModelSelection)
    assert isinstance(selection.best_model, GaussianMixture)
    assert selection.criterion == "bic"
    assert selection.best_model.n_components == 3


def test_one_row_per_grid_point(selection):
    grid = {(k, c) for k in N_COMPONENTS for c in COVARIANCE_TYPES}
    seen = [(row["n_components"], row["covariance_type"]) for row in selection.table]
    assert len(seen) == len(grid)
    assert set(seen) == grid
    for row in selection.table:
        assert set(row) >= {"n_components", "covariance_type", "bic", "aic", "lower_bound",
                            "converged", "n_iter"}


def test_best_row_holds_the_best_models_criteria(selection, X):
    row = best_row(selection)
    best = selection.best_model
    assert_allclose(row["bic"], best.bic(X), rtol=1e-12)
    assert_allclose(row["aic"], best.aic(X), rtol=1e-12)
    assert row["lower_bound"] == best.lower_bound_
    assert row["n_iter"] == best.n_iter_
    assert row["converged"] == best.converged_
    assert row["bic"] == min(r["bic"] for r in selection.table)


def test_table_rows_are_the_models_a_plain_fit_gives(selection, X):
    for row in selection.table:
        model = GaussianMixture(row["n_components"], covariance_type=row["covariance_type"],
                                random_state=0).fit(X)
        assert_allclose(row["bic"], model.bic(X), rtol=1e-10)
        assert_allclose(row["aic"], model.aic(X), rtol=1e-10)


def test_result_unpacks_as_table_and_best_model(selection):
    table, best = selection
    assert table is selection.table
    assert best is selection.best_model


def test_aic_criterion(X):
    selection = select_model(X, n_components=list(N_COMPONENTS),
                             covariance_types=list(COVARIANCE_TYPES), criterion="aic",
                             random_state=0)
    assert selection.criterion == "aic"
    row = best_row(selection)
    assert row["aic"] == min(r["aic"] for r in selection.table)
    assert_allclose(row["aic"], selection.best_model.aic(X), rtol=1e-12)
    assert selection.best_model.n_components >= 3


def test_dask_input(client, X, selection):
    dask_X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    result = select_model(dask_X, n_components=list(N_COMPONENTS),
                          covariance_types=list(COVARIANCE_TYPES), criterion="bic",
                          random_state=0)
    assert result.best_model.n_components == 3
    assert len(result.table) == len(selection.table)
    row = best_row(result)
    assert_allclose(row["bic"], result.best_model.bic(dask_X), rtol=1e-12)
    assert_allclose(row["bic"], result.best_model.bic(X), rtol=1e-10)
    # NumPy input starts from scikit-learn's initialisation, Dask input from the scalable one;
    # on well separated blobs both reach the same best model.
    numpy_best = select_model(X, n_components=list(N_COMPONENTS),
                              covariance_types=list(COVARIANCE_TYPES), random_state=0).best_model
    assert numpy_best.n_components == result.best_model.n_components
    assert_allclose(numpy_best.bic(X), result.best_model.bic(X), rtol=1e-4)


def test_sample_weight_and_estimator_parameters_are_passed_on(X):
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=len(X))
    selection = select_model(X, n_components=[2, 3], sample_weight=weights, random_state=0,
                             max_iter=5, tol=0.0)
    for row in selection.table:
        assert row["n_iter"] == 5
    assert selection.best_model.n_components == 3
    reference = GaussianMixture(3, random_state=0, max_iter=5, tol=0.0).fit(
        X, sample_weight=weights)
    assert_array_equal(selection.best_model.means_, reference.means_)


@pytest.mark.parametrize("criterion", ["BIC", "likelihood", None])
def test_bad_criterion(X, criterion):
    with pytest.raises(ValueError, match="criterion must be one of") as error:
        select_model(X, n_components=[1, 2], criterion=criterion)
    assert repr(criterion) in str(error.value)


def test_empty_grid(X):
    with pytest.raises(ValueError, match="at least one n_components"):
        select_model(X, n_components=[])
    with pytest.raises(ValueError, match="at least one n_components"):
        select_model(X, covariance_types=[])


def test_bad_grid_values_are_refused(X):
    with pytest.raises(ValueError, match="'covariance_type' parameter"):
        select_model(X, n_components=[1], covariance_types=["round"])
    with pytest.raises(ValueError, match="'n_components' parameter"):
        select_model(X, n_components=[0])
