"""Shared fixtures: a real in-process LocalCluster and reproducible mixture data."""

import dask
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Small matrices: BLAS threads only contend with the Dask threads on a small machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def threads():
    """Run Dask work on the threaded scheduler, even while the module's cluster is up."""
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def client():
    """A real distributed scheduler with two in-process workers, one per module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as dask_client:
        yield dask_client


def make_blobs(n_samples=2003, n_features=3, n_components=3, seed=0, scale=6.0):
    """Rows drawn from ``n_components`` well separated anisotropic Gaussians (float64)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(n_components, n_features))
    sizes = np.full(n_components, n_samples // n_components)
    sizes[: n_samples % n_components] += 1
    parts = [
        rng.normal(size=(size, n_features)) @ rng.normal(size=(n_features, n_features)) * 0.5
        + centre
        for size, centre in zip(sizes, centres)
    ]
    return np.concatenate(parts)


def initial_parameters(X, covariance_type, n_components=3):
    """Parameters after a short scikit-learn fit: a fixed common starting point for EM."""
    from sklearn.mixture import GaussianMixture

    start = GaussianMixture(n_components, covariance_type=covariance_type, max_iter=3,
                            random_state=0).fit(X)
    return {
        "weights_init": start.weights_,
        "means_init": start.means_,
        "precisions_init": start.precisions_,
    }
