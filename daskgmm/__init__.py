"""daskgmm: scikit-learn-exact Gaussian mixture models on out-of-core Dask arrays."""

from ._compat import ComponentReseedWarning, ConvergenceWarning, NotFittedError
from .mixture import GaussianMixture
from .selection import ModelSelection, select_model

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "select_model",
    "ModelSelection",
    "ConvergenceWarning",
    "NotFittedError",
    "ComponentReseedWarning",
    "__version__",
]
