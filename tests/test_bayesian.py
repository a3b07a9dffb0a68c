"""BayesianGaussianMixture against scikit-learn's, on the same engine as GaussianMixture.

From the same ``random_state`` on NumPy input (scikit-learn's initialisation), or from the same
initial posterior on Dask input in ragged chunks merged two at a time, the posterior, the lower
bound and the responsibilities are scikit-learn's to rounding; the lower bound never decreases;
weights are repeated rows; and the prior switches off the components the data do not need.
"""

import pickle
import warnings

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.mixture import BayesianGaussianMixture as SklearnBayesian

from conftest import COVARIANCE_TYPES
from daskgmm import BayesianGaussianMixture, GaussianMixture

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
COMPARED = ("weights_", "means_", "covariances_", "degrees_of_freedom_", "mean_precision_")
# What a fitted posterior is: enough to start another fit from it (a warm start).
POSTERIOR = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_",
             "covariances_", "precisions_cholesky_", "converged_", "lower_bound_",
             "n_features_in_")
RAGGED_CHUNKS = (400, 300, 200, 250, 50)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning",
                                        "ignore::daskgmm.ConvergenceWarning")


def clusters(n_rows=1200, seed=0, centres=((0, 0, 0), (6, -4, 2), (-5, 5, 0), (8, 8, -6))):
    """Rows of well separated Gaussians, shuffled."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(centre, 1.0, size=(n_rows // len(centres), len(centre)))
             for centre in centres]
    rows = np.vstack(parts)
    rng.shuffle(rows)
    return rows


def assert_same_posterior(ours, reference, X):
    for name in COMPARED:
        assert_allclose(np.asarray(getattr(ours, name)), np.asarray(getattr(reference, name)),
                        rtol=1e-7, atol=0, err_msg=name)
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-7)
    assert_allclose(np.asarray(ours.predict_proba(X)), reference.predict_proba(X), atol=1e-8)
    assert ours.n_iter_ == reference.n_iter_


def params(covariance_type, prior_type, **more):
    return dict(n_components=6, covariance_type=covariance_type, random_state=0, tol=0.0,
                weight_concentration_prior_type=prior_type, **more)


@pytest.mark.parametrize("max_iter", [1, 20])
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_numpy_input_gives_sklearns_posterior_from_the_same_random_state(
        covariance_type, prior_type, max_iter):
    X = clusters()
    kwargs = params(covariance_type, prior_type, max_iter=max_iter)
    reference = SklearnBayesian(**kwargs).fit(X)
    assert_same_posterior(BayesianGaussianMixture(**kwargs).fit(X), reference, X)


@pytest.mark.parametrize("max_iter", [1, 20])
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_dask_input_in_ragged_chunks_gives_sklearns_posterior_from_the_same_start(
        covariance_type, prior_type, max_iter):
    X = clusters()
    kwargs = params(covariance_type, prior_type)
    start = SklearnBayesian(**kwargs, max_iter=0).fit(X)  # the initial posterior
    reference = SklearnBayesian(**kwargs, max_iter=max_iter, warm_start=True)
    ours = BayesianGaussianMixture(**kwargs, max_iter=max_iter, warm_start=True, split_every=2)
    for name in POSTERIOR:
        setattr(reference, name, getattr(start, name))
        setattr(ours, name, getattr(start, name))
    reference.fit(X)
    ours.fit(da.from_array(X, chunks=(RAGGED_CHUNKS, 3)))
    assert_same_posterior(ours, reference, X)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_lower_bound_never_decreases(covariance_type, prior_type):
    X = clusters(600, seed=1)
    model = BayesianGaussianMixture(**params(covariance_type, prior_type, max_iter=100))
    model.fit(X)
    bounds = np.asarray(model.lower_bounds_)
    assert len(bounds) == 100
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weight_is_rows_repeated(covariance_type):
    X = clusters(400, seed=2)
    counts = np.random.default_rng(3).integers(0, 4, size=len(X))
    repeated = np.repeat(X, counts, axis=0)
    kwargs = params(covariance_type, "dirichlet_process")
    start = SklearnBayesian(**kwargs, max_iter=0).fit(repeated)
    reference = SklearnBayesian(**kwargs, max_iter=10, warm_start=True)
    ours = BayesianGaussianMixture(**kwargs, max_iter=10, warm_start=True)
    for name in POSTERIOR:
        setattr(reference, name, getattr(start, name))
        setattr(ours, name, getattr(start, name))
    reference.fit(repeated)
    ours.fit(da.from_array(X, chunks=100), sample_weight=da.from_array(counts, chunks=100))
    for name in COMPARED:
        assert_allclose(np.asarray(getattr(ours, name)), np.asarray(getattr(reference, name)),
                        rtol=1e-7, err_msg=name)
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=1e-7)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_the_prior_keeps_only_the_components_the_data_need(kind):
    X = clusters(20_000, seed=4)
    data = X if kind == "numpy" else da.from_array(X, chunks=3000)
    # Emptying the components k-means split the clusters into takes many iterations (as in
    # scikit-learn: about 900 here); three initialisations, the best bound kept, as a user of
    # a variational fit runs it (one may stop at two components sharing a cluster).
    model = BayesianGaussianMixture(n_components=10, max_iter=3000, n_init=3,
                                    random_state=0).fit(data)
    assert model.converged_
    assert np.count_nonzero(model.weights_ > 0.01) == 4
    assert_allclose(np.sort(model.weights_)[-4:], 0.25, atol=1e-3)


def test_a_saved_model_loads_back_as_what_it_was(tmp_path):
    X = clusters(600)
    for prior_type in PRIOR_TYPES:
        model = BayesianGaussianMixture(3, weight_concentration_prior_type=prior_type,
                                        random_state=0).fit(X)
        path = tmp_path / f"{prior_type}.zarr"
        model.save(path)
        loaded = BayesianGaussianMixture.load(path)
        assert type(loaded) is BayesianGaussianMixture
        assert loaded.get_params() == model.get_params()
        for name in (*COMPARED, "weight_concentration_", "mean_prior_", "covariance_prior_"):
            assert_allclose(np.asarray(getattr(loaded, name), dtype=float),
                            np.asarray(getattr(model, name), dtype=float), rtol=0, err_msg=name)
        assert isinstance(loaded.weight_concentration_, tuple) == (prior_type ==
                                                                  "dirichlet_process")
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
        assert type(GaussianMixture.load(path)) is BayesianGaussianMixture  # as recorded


def test_pickle_clone_and_sample_behave_as_sklearns():
    X = clusters(600)
    model = BayesianGaussianMixture(4, random_state=0).fit(X)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert clone(model).get_params() == model.get_params()
    reference = SklearnBayesian(n_components=4, random_state=0).fit(X)
    ours_rows, ours_labels = model.sample(50)
    reference_rows, reference_labels = reference.sample(50)
    np.testing.assert_array_equal(ours_labels, reference_labels)
    assert_allclose(ours_rows, reference_rows, rtol=1e-6)


@pytest.mark.parametrize("name, value, words", [
    ("weight_concentration_prior", 0.0, "should be greater than 0"),
    ("degrees_of_freedom_prior", 1.5, "should be greater than 2"),
    ("mean_prior", [0.0, 1.0], "should have the shape"),
    ("covariance_prior", np.eye(2), "should have the shape"),
    ("weight_concentration_prior_type", "dirichlet", "weight_concentration_prior_type"),
])
def test_bad_priors_are_refused_with_sklearns_words(name, value, words):
    with warnings.catch_warnings(), pytest.raises(ValueError, match=words):
        BayesianGaussianMixture(2, **{name: value}).fit(clusters(300))


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_a_fit_resumed_from_its_checkpoint_ends_at_the_uninterrupted_posterior(
        tmp_path, covariance_type, prior_type):
    from daskgmm.checkpoint import read_fit_state, write_fit_state

    X = clusters(600)
    kwargs = params(covariance_type, prior_type, max_iter=8, n_init=2)
    whole = BayesianGaussianMixture(**kwargs).fit(X)

    class Crash(Exception):
        pass

    def crash_after_five(state):
        if state.current is not None and state.current.n_iter == 5 and state.init == 1:
            write_fit_state(tmp_path / "fit.checkpoint", state)
            raise Crash

    with pytest.raises(Crash):
        BayesianGaussianMixture(**kwargs).fit(X, callback=crash_after_five)
    state, _ = read_fit_state(tmp_path / "fit.checkpoint")
    resumed = BayesianGaussianMixture(**kwargs).fit(X, resume=state)
    for name in (*COMPARED, "precisions_cholesky_"):
        np.testing.assert_array_equal(np.asarray(getattr(resumed, name)),
                                      np.asarray(getattr(whole, name)), err_msg=name)
    assert resumed.lower_bounds_ == whole.lower_bounds_


# ------------------------------------------------------------------ in the jobs


def test_the_segment_auto_config_reports_the_components_the_prior_kept(tmp_path):
    from pathlib import Path

    from jobs_helpers import run_main

    config = Path(__file__).resolve().parents[1] / "configs" / "segment-auto.yaml"
    status, out, err = run_main(config, "--set", f"input.path={tmp_path / 'scene.zarr'}",
                                "--set", f"output.path={tmp_path / 'out'}",
                                "--set", "checkpoint.enabled=false")
    assert status == 0, err
    assert "kind bayesian, effective_components" in out
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    assert type(model) is BayesianGaussianMixture and model.n_components == 10
    kept = int(np.count_nonzero(model.weights_ >= 0.01))
    assert 2 <= kept < 10
    assert f"effective_components {kept}" in out
    assert f"the prior kept {kept} of 10 components" in err
    from PIL import Image

    preview = np.asarray(Image.open(tmp_path / "out" / "previews" / "image-0000.png"))
    assert 2 <= len(np.unique(preview.reshape(-1, 3), axis=0)) <= kept


def test_preview_colours_come_from_the_used_components_only():
    from daskgmm.pipelines.render import component_colours

    means = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [1000.0, 50.0, 50.0], [90.0, 1.0, 1.0]])
    used = np.array([True, True, False, False])
    colours = component_colours(means, np.float32, used=used)
    np.testing.assert_array_equal(colours[:2], component_colours(means[:2], np.float32))
    np.testing.assert_array_equal(colours[2], colours[1])  # each unused: its nearest used
    np.testing.assert_array_equal(colours[3], colours[1])


@pytest.mark.parametrize("model, key", [
    ({"n_components": 3, "weight_concentration_prior": 0.1}, "model.weight_concentration_prior"),
    ({"n_components": 3, "kind": "bayes"}, "model.kind"),
    ({"n_components": 3, "kind": "bayesian", "mean_precision_prior": 0.0},
     "model.mean_precision_prior"),
    ({"n_components": 3, "kind": "bayesian",
      "weight_concentration_prior_type": "dirichlet"}, "model.weight_concentration_prior_type"),
])
def test_priors_are_checked_with_the_rest_of_the_schema(model, key):
    from daskgmm.config import ConfigError, JobConfig

    spec = {"pipeline": "fit", "input": {"path": "rows.zarr"}, "output": {"path": "out"},
            "model": model}
    with pytest.raises(ConfigError) as refused:
        JobConfig.from_dict(spec)
    assert refused.value.key == key


def test_a_bayesian_model_section_gives_the_estimator_its_priors():
    from daskgmm.config import JobConfig

    spec = {"pipeline": "fit", "input": {"path": "rows.zarr"}, "output": {"path": "out"},
            "model": {"kind": "bayesian", "n_components": 4, "covariance_type": "diag",
                      "weight_concentration_prior_type": "dirichlet_distribution",
                      "weight_concentration_prior": 0.01, "mean_prior": [0.0, 1.0],
                      "covariance_prior": [1.0, 2.0]}}
    estimator = JobConfig.from_dict(spec).model.estimator()
    assert isinstance(estimator, BayesianGaussianMixture)
    assert estimator.get_params()["weight_concentration_prior"] == 0.01
    assert estimator.get_params()["covariance_prior"] == [1.0, 2.0]
    plain = JobConfig.from_dict({**spec, "model": {"n_components": 4}}).model.estimator()
    assert type(plain) is GaussianMixture


def test_the_select_job_puts_a_bayesian_fit_beside_its_grid(tmp_path):
    import csv

    from conftest import write_zarr
    from jobs_helpers import job, run_spec

    source = write_zarr(tmp_path / "rows.zarr", clusters(1200))
    spec = job("select", source, tmp_path / "out",
               select={"n_components": [2, 4, 6], "covariance_types": ["full", "diag"],
                       "bayesian": True},
               model={"max_iter": 1000, "kind": "bayesian",
                      "weight_concentration_prior_type": "dirichlet_distribution"})
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    with open(tmp_path / "out" / "scores.csv") as table:
        rows = list(csv.DictReader(table))
    bayesian = [row for row in rows if row["kind"] == "bayesian"]
    assert [row["covariance_type"] for row in bayesian] == ["full", "diag"]
    assert all(row["n_components"] == "4" and row["upper_bound"] == "6" and row["bic"] == ""
               for row in bayesian)
    assert sum(row["kind"] == "gaussian" for row in rows) == 6
    assert "bayesian: full 4, diag 4" in log
    assert (tmp_path / "out" / "criterion.png").stat().st_size > 0
