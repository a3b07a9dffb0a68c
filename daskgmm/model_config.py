"""A job's ``model`` section: the mixture it fits (Gaussian or Bayesian), or a saved one to apply.

The keys other than ``load`` and ``kind`` are the estimator's parameters of the same names, with
its defaults, ranges and choices (:data:`daskgmm.options.GAUSSIAN_MIXTURE_PARAMETERS` and
:data:`~daskgmm.options.BAYESIAN_MIXTURE_PARAMETERS`), but for two: ``n_components`` has no
default (a job names it, or loads a model) and ``random_state`` is 0, so that a job gives the same
model on every run. The priors apply to ``kind: bayesian`` only.
"""

from dataclasses import dataclass

import numpy as np

from .options import BAYESIAN_MIXTURE_PARAMETERS, GAUSSIAN_MIXTURE_PARAMETERS
from .schema import ConfigError, Section, option

MODEL_KINDS = ("gaussian", "bayesian")
PRIORS = ("weight_concentration_prior_type", "weight_concentration_prior",
          "mean_precision_prior", "mean_prior", "degrees_of_freedom_prior", "covariance_prior")
# A Bayesian mixture's component counts as one the data use when its expected weight is at
# least this: 1% of the rows (the prior leaves the others near zero, far below it).
EFFECTIVE_WEIGHT = 0.01


def estimator_option(name, **changes):
    """Declare a ``model`` key as the estimator's parameter ``name``: its default and range.

    ``changes`` replace what the parameter table says (``default=``, ``low=``, ...).
    """
    parameter = {**BAYESIAN_MIXTURE_PARAMETERS, **GAUSSIAN_MIXTURE_PARAMETERS}[name]
    declared = {"default": parameter.default, "choices": parameter.choices, "low": parameter.low}
    declared.update(changes)
    return option(declared.pop("default"), **declared)


@dataclass
class ModelConfig(Section):
    """The mixture to fit (``kind``: ``gaussian``, by EM, or ``bayesian``, variational, whose
    prior chooses how many of ``n_components`` the data use), or ``load``: a saved model to
    apply instead of fitting. In a batch segment job, ``update: online`` makes every run
    continue the store's current model with its new inputs (one online EM step)."""

    load: str | None = None
    kind: str = option("gaussian", choices=MODEL_KINDS)
    update: str = option("none", choices=("none", "online"))
    n_components: int | None = estimator_option("n_components", default=None)
    covariance_type: str = estimator_option("covariance_type")
    tol: float = estimator_option("tol")
    reg_covar: float = estimator_option("reg_covar")
    max_iter: int = estimator_option("max_iter")
    n_init: int = estimator_option("n_init")
    init_params: str = estimator_option("init_params")
    random_state: int = option(0, low=0, high=2**32 - 1)
    persist: bool = estimator_option("persist")
    split_every: int = estimator_option("split_every")
    learning_decay: float = estimator_option("learning_decay", low_open=True, high=1.0)
    learning_offset: float = estimator_option("learning_offset")
    weight_concentration_prior_type: str = estimator_option("weight_concentration_prior_type")
    weight_concentration_prior: float | None = estimator_option(
        "weight_concentration_prior", low_open=True)
    mean_precision_prior: float | None = estimator_option("mean_precision_prior",
                                                          low_open=True)
    mean_prior: list[float] | None = option(None)
    degrees_of_freedom_prior: float | None = estimator_option("degrees_of_freedom_prior",
                                                              low_open=True)
    covariance_prior: float | list[float] | list[list[float]] | None = option(None)

    def check(self, key):
        if self.kind == "gaussian":
            given = [name for name in PRIORS if getattr(self, name) != _PRIOR_DEFAULTS[name]]
            if given:
                raise ConfigError("a prior applies only to kind: bayesian; set model.kind: "
                                  "bayesian or remove it", f"{key}.{given[0]}")

    def estimator_params(self):
        """The keyword arguments of the estimator this section describes.

        ``load``, ``kind``, ``update`` and ``persist`` are the job's: the job persists the
        rows once, before fitting, and the model does not record it among its parameters.
        """
        dropped = {"load", "kind", "update", "persist",
                   *(PRIORS if self.kind == "gaussian" else ())}
        return {name: value for name, value in self.to_dict().items() if name not in dropped}

    def estimator(self, **overrides):
        """An unfitted estimator with this section's parameters (and ``overrides``)."""
        if self.kind == "bayesian":
            from .bayesian import BayesianGaussianMixture as estimator
        else:
            from .mixture import GaussianMixture as estimator
        return estimator(**{**self.estimator_params(), **overrides})


_PRIOR_DEFAULTS = {name: BAYESIAN_MIXTURE_PARAMETERS[name].default for name in PRIORS}


def effective_mask(model):
    """Which components a fitted model uses: all of a GaussianMixture's, those of a
    BayesianGaussianMixture whose weight is at least :data:`EFFECTIVE_WEIGHT`."""
    if not hasattr(model, "weight_concentration_"):
        return np.ones(model.n_components, dtype=bool)
    return np.asarray(model.weights_) >= EFFECTIVE_WEIGHT


def effective_components(model):
    """How many components a fitted model uses (see :func:`effective_mask`)."""
    return int(effective_mask(model).sum())
