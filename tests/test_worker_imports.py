"""Workers run daskgmm's chunk kernels without importing the estimator or scikit-learn.

scikit-learn costs a worker about 130 MiB; on workers with a tight ``memory_limit`` that is
the difference between streaming and spilling. One worker process serves the module: what it
has imported after each fit is everything every fit so far made it import.
"""

import sys

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

from daskgmm import GaussianMixture

pytestmark = pytest.mark.slow

# A lambda, so that it is sent by value: a function of this module would make the worker import
# the module, and with it the estimator.
_loaded_modules = lambda: sorted(  # noqa: E731
    name for name in sys.modules if name.split(".")[0] in ("sklearn", "daskgmm"))


@pytest.fixture(scope="module")
def process_client():
    """A client of a local cluster of one single-threaded worker process."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_a_fit_and_its_predictions_import_no_estimator_on_workers(process_client,
                                                                  init_params):
    X = da.from_array(np.random.default_rng(0).normal(size=(3000, 3)), chunks=750)
    model = GaussianMixture(3, init_params=init_params, random_state=0).fit(X)
    da.compute(model.predict(X), model.predict_proba(X), model.score_samples(X))
    (modules,) = process_client.run(_loaded_modules).values()
    assert "daskgmm.kernels" in modules
    assert not [name for name in modules if name.startswith("sklearn")], modules
    assert "daskgmm.mixture" not in modules
