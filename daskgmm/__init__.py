"""daskgmm: scikit-learn-exact Gaussian mixture models on out-of-core Dask arrays.

The public names are imported on first use, so a Dask worker that only runs daskgmm's chunk
kernels (``daskgmm.kernels``, ``daskgmm.engine``) never imports the estimator, nor
scikit-learn with it (a large share of a worker's memory; see bench/README.md).
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "GaussianMixture": "mixture",
    "BayesianGaussianMixture": "bayesian",
    "FitState": "base",
    "EMRun": "base",
    "select_model": "selection",
    "ModelSelection": "selection",
    "ConvergenceWarning": "sklearn_compat",
    "NotFittedError": "sklearn_compat",
    "ComponentReseedWarning": "sklearn_compat",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'daskgmm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
