"""scikit-learn interoperability without depending on scikit-learn.

When scikit-learn is installed, daskgmm's estimator derives from its ``BaseEstimator`` and
``DensityMixin`` and daskgmm's warnings and errors subclass scikit-learn's, so code written
against scikit-learn (``clone``, ``except NotFittedError``, ``pytest.warns(ConvergenceWarning)``)
keeps working. Without scikit-learn, small stand-ins with the same behaviour are used.
"""

import inspect

try:
    from sklearn.base import BaseEstimator as _SklearnBaseEstimator
    from sklearn.base import DensityMixin as _SklearnDensityMixin
    from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

    HAVE_SKLEARN = True
except ImportError:  # scikit-learn is optional at run time
    HAVE_SKLEARN = False

    class _SklearnConvergenceWarning(UserWarning):
        """Stand-in for scikit-learn's ConvergenceWarning."""

    class _SklearnNotFittedError(ValueError, AttributeError):
        """Stand-in for scikit-learn's NotFittedError."""

    class _SklearnDensityMixin:
        """Stand-in for scikit-learn's DensityMixin."""

    class _SklearnBaseEstimator:
        """Stand-in for scikit-learn's BaseEstimator: ``get_params``/``set_params``."""

        @classmethod
        def _get_param_names(cls):
            signature = inspect.signature(cls.__init__)
            return sorted(
                name
                for name, parameter in signature.parameters.items()
                if name != "self" and parameter.kind != parameter.VAR_KEYWORD
            )

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(
                        f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                        f"Valid parameters are: {valid!r}."
                    )
                setattr(self, name, value)
            return self

        def __repr__(self):
            params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({params})"


class ConvergenceWarning(_SklearnConvergenceWarning):
    """EM stopped at ``max_iter`` before the lower bound settled within ``tol``."""


class NotFittedError(_SklearnNotFittedError):
    """A fitted attribute was needed before ``fit`` was called."""


class ComponentReseedWarning(UserWarning):
    """A component lost (almost) all its weight and was re-seeded at badly explained rows."""


BaseEstimator = _SklearnBaseEstimator
DensityMixin = _SklearnDensityMixin
