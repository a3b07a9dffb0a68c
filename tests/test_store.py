"""Fitted models survive saving to Zarr, pickling and cloning; bad targets are refused cleanly."""

import hashlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from conftest import COVARIANCE_TYPES, FITTED_ARRAYS, make_blobs
from daskgmm import GaussianMixture, store
from daskgmm.atomic import (DRAFT_PREFIX, STAGING_PREFIX, atomic_directory, new_staging,
                            remove_dead_staging)
from daskgmm.ownership import MARKER, read_marker

N_COMPONENTS = 3
FITTED_SCALARS = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_",
                  "n_reseeded_")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_samples=300)


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def model(request, X):
    return GaussianMixture(N_COMPONENTS, covariance_type=request.param, random_state=0,
                           tol=1e-4).fit(X)


def assert_identical_models(loaded, original, X):
    assert type(loaded) is type(original)
    assert loaded.get_params() == original.get_params()
    for name in FITTED_ARRAYS:
        assert getattr(loaded, name).dtype == getattr(original, name).dtype
        assert_array_equal(getattr(loaded, name), getattr(original, name))
    for name in FITTED_SCALARS:
        assert getattr(loaded, name) == getattr(original, name)
    assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    assert_array_equal(loaded.score_samples(X), original.score_samples(X))


def stray_entries(directory, name):
    """Entries next to ``name`` other than ``name`` itself: leftovers of an interrupted save."""
    return sorted(path.name for path in directory.iterdir() if name in path.name
                  and path.name != name)


# ---------------------------------------------------------------- save and load


def test_save_load_round_trip(model, X, tmp_path):
    path = tmp_path / "model.zarr"
    model.save(path)
    assert_identical_models(GaussianMixture.load(path), model, X)
    assert stray_entries(tmp_path, "model.zarr") == []


def test_round_trip_keeps_float32(X, tmp_path):
    model = GaussianMixture(2, random_state=0).fit(X.astype(np.float32))
    model.save(str(tmp_path / "model.zarr"))
    loaded = GaussianMixture.load(str(tmp_path / "model.zarr"))
    assert loaded.means_.dtype == np.float32
    assert_identical_models(loaded, model, X.astype(np.float32))


def test_saved_model_is_a_versioned_zarr_group(model, tmp_path):
    path = tmp_path / "model.zarr"
    model.save(path)
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["format"] == "daskgmm.GaussianMixture"
    assert isinstance(group.attrs["format_version"], int)
    assert group.attrs["format_version"] >= 1
    assert_array_equal(group["means_"][...], model.means_)


def test_loaded_model_keeps_fitting_with_warm_start(X, tmp_path):
    params = dict(n_components=N_COMPONENTS, random_state=0, max_iter=2, warm_start=True)
    original = GaussianMixture(**params).fit(X)
    original.save(tmp_path / "model.zarr")
    loaded = GaussianMixture.load(tmp_path / "model.zarr")
    assert_array_equal(loaded.fit(X).means_, original.fit(X).means_)


def test_save_refuses_to_overwrite(model, X, tmp_path):
    path = tmp_path / "model.zarr"
    model.save(path)
    other = GaussianMixture(1, random_state=0).fit(X)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        other.save(path)
    assert GaussianMixture.load(path).n_components == N_COMPONENTS

    other.save(path, overwrite=True)
    assert GaussianMixture.load(path).n_components == 1
    assert stray_entries(tmp_path, "model.zarr") == []


def test_save_refuses_to_overwrite_any_existing_path(model, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("not a model")
    with pytest.raises(FileExistsError):
        model.save(path)
    assert path.read_text() == "not a model"


def _unsavable(X):
    """A fitted model whose last-written attribute cannot be stored: the save fails midway."""
    model = GaussianMixture(2, random_state=0).fit(X)
    model.lower_bounds_ = ["not a number"]
    return model


def test_failed_save_leaves_nothing_behind(X, tmp_path):
    with pytest.raises(ValueError):
        _unsavable(X).save(tmp_path / "model.zarr")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_model(model, X, tmp_path):
    path = tmp_path / "model.zarr"
    model.save(path)
    with pytest.raises(ValueError):
        _unsavable(X).save(path, overwrite=True)
    assert_identical_models(GaussianMixture.load(path), model, X)
    assert stray_entries(tmp_path, "model.zarr") == []


def test_save_needs_a_fitted_model(tmp_path):
    with pytest.raises(NotFittedError):
        GaussianMixture().save(tmp_path / "model.zarr")
    assert list(tmp_path.iterdir()) == []


def test_load_of_a_group_without_a_model(tmp_path):
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").attrs["format"] = "something else"
    with pytest.raises(ValueError, match="no daskgmm model"):
        GaussianMixture.load(tmp_path / "group.zarr")


def test_load_of_an_empty_group(tmp_path):
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(ValueError, match="no daskgmm model"):
        GaussianMixture.load(tmp_path / "group.zarr")


def test_load_of_a_newer_format(model, tmp_path):
    path = tmp_path / "model.zarr"
    model.save(path)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["format_version"] = group.attrs["format_version"] + 1
    with pytest.raises(ValueError, match="upgrade daskgmm"):
        GaussianMixture.load(path)


def test_load_of_a_missing_path(tmp_path):
    path = tmp_path / "nowhere.zarr"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        GaussianMixture.load(path)


# ---------------------------------------------------------------- pickle, clone and parameters


def test_pickle_fitted_model(model, X):
    restored = pickle.loads(pickle.dumps(model))
    assert_identical_models(restored, model, X)


def test_pickle_unfitted_model():
    original = GaussianMixture(4, covariance_type="diag", tol=1e-5, means_init=np.zeros((4, 2)))
    restored = pickle.loads(pickle.dumps(original))
    params = restored.get_params()
    assert_array_equal(params.pop("means_init"), np.zeros((4, 2)))
    expected = original.get_params()
    expected.pop("means_init")
    assert params == expected
    with pytest.raises(NotFittedError):
        restored.predict(np.zeros((3, 2)))


def test_clone_is_unfitted_with_equal_parameters(model, X):
    copy = clone(model)
    assert copy is not model
    assert copy.get_params() == model.get_params()
    for name in FITTED_ARRAYS + FITTED_SCALARS:
        assert not hasattr(copy, name)
    with pytest.raises(NotFittedError):
        copy.predict(X)
    assert_array_equal(copy.fit(X).means_, model.means_)


def test_get_params_set_params_round_trip():
    params = dict(n_components=4, covariance_type="tied", tol=1e-5, reg_covar=1e-4, max_iter=7,
                  n_init=2, init_params="random", random_state=3, warm_start=True, verbose=0,
                  verbose_interval=5, persist=True, split_every=4, block_rows=100)
    model = GaussianMixture().set_params(**params)
    assert {name: model.get_params()[name] for name in params} == params
    assert GaussianMixture(**model.get_params()).get_params() == model.get_params()


def test_set_params_rejects_unknown_names():
    with pytest.raises(ValueError, match="n_component"):
        GaussianMixture().set_params(n_component=3)


def test_overwrite_swaps_old_for_new_and_leaves_no_sibling(tmp_path):
    path = tmp_path / "out"
    for version in ("old", "new"):
        with atomic_directory(path, "output") as staging:
            (staging / "version").write_text(version)
    assert (path / "version").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert read_marker(path)["entries"] == ["version"]


def test_what_a_job_killed_while_making_or_removing_a_staging_folder_leaves_goes_at_once(
        tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    staging = new_staging(tmp_path, "output", "out")
    tag = staging.name.removeprefix(STAGING_PREFIX)
    assert read_marker(staging)["kind"] == "output"  # born marked
    assert not any(p.name.startswith(DRAFT_PREFIX) for p in tmp_path.iterdir())
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # drafts' host tag
    dead_draft = tmp_path / f"{DRAFT_PREFIX}{host}-{int(finished.stdout)}-{'1' * 32}"
    dead_draft.mkdir()
    (dead_draft / f"{MARKER}.{int(finished.stdout)}").write_text('{"format": "daskg')  # cut
    live_draft = tmp_path / f"{DRAFT_PREFIX}{host}-{os.getpid()}-{'2' * 32}"
    live_draft.mkdir()
    kept = tmp_path / f"{DRAFT_PREFIX}{host}-{int(finished.stdout)}-{'3' * 32}"
    kept.mkdir()
    (kept / "notes.txt").write_text("a user's")  # not a draft's: never removed
    unborn = tmp_path / f"{STAGING_PREFIX}{'4' * 32}"  # a removal cut after the marker went
    unborn.mkdir()
    assert remove_dead_staging(tmp_path, "output", "out") == 2
    assert not dead_draft.exists() and not unborn.exists()
    assert live_draft.is_dir() and (kept / "notes.txt").is_file() and staging.is_dir()
    assert re.fullmatch("[0-9a-f]{32}", tag)


def test_stale_staging_of_a_dead_job_is_removed_but_a_running_jobs_is_kept(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead, alive = new_staging(tmp_path, "output", "out"), new_staging(tmp_path, "output", "out")
    marker = json.loads((dead / MARKER).read_text())
    (dead / MARKER).write_text(json.dumps({**marker, "pid": int(finished.stdout)}))
    other = new_staging(tmp_path, "output", "elsewhere")
    (other / MARKER).write_text(json.dumps({**marker, "target": "elsewhere",
                                            "pid": int(finished.stdout)}))
    assert remove_dead_staging(tmp_path, "output", "out") == 1
    assert not dead.exists()
    assert alive.exists() and other.exists()
