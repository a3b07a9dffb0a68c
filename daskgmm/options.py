"""The values daskgmm's parameters and job keys take: one home for each, importing no daskgmm.

The estimator (its defaults), its validation (kinds, ranges, choices), the model selection and
the job schema all read these, so a choice or a default changed here changes everywhere at
once; and reading the job schema loads no Dask.
"""

from typing import NamedTuple

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
CRITERIA = ("bic", "aic")
PIPELINES = ("segment", "select", "anomaly", "fit", "predict")
INPUT_FORMATS = ("auto", "zarr", "ome-zarr", "xarray", "images", "csv", "parquet")
OUTPUT_FORMATS = ("auto", "zarr", "ome-zarr")
IDENTITIES = ("stat", "content")
GENERATORS = ("sample-scene", "sample-table", "sample-cells")


class Parameter(NamedTuple):
    """One estimator parameter: its default and the values it accepts.

    Attributes
    ----------
    kind : str
        How it is checked before any work: 'int', 'float' (finite), 'bool', 'verbose' (an int
        or a bool) or 'choice' (one of ``choices``). 'initial' (an initial weights, means or
        precisions array) and 'random_state' are checked by the fit, once the data are known.
    default : object
        The value the estimator takes when it is not given.
    low : int or float, optional
        The smallest value accepted; there is no largest.
    choices : tuple of str, optional
        The values a 'choice' accepts.
    nullable : bool, default=False
        Whether None is accepted too.
    """

    kind: str
    default: object = None
    low: float | None = None
    choices: tuple | None = None
    nullable: bool = False


# GaussianMixture's parameters, in the order they are checked (the first mistake is reported).
GAUSSIAN_MIXTURE_PARAMETERS = {
    "n_components": Parameter("int", 1, low=1),
    "tol": Parameter("float", 1e-3, low=0.0),
    "reg_covar": Parameter("float", 1e-6, low=0.0),
    "max_iter": Parameter("int", 100, low=0),
    "n_init": Parameter("int", 1, low=1),
    "init_params": Parameter("choice", "kmeans", choices=INIT_METHODS),
    "covariance_type": Parameter("choice", "full", choices=COVARIANCE_TYPES),
    "verbose": Parameter("verbose", 0),
    "verbose_interval": Parameter("int", 10, low=1),
    "warm_start": Parameter("bool", False),
    "persist": Parameter("bool", False),
    # The fan-in of the statistics' merge tree (the engine's default too).
    "split_every": Parameter("int", 8, low=2),
    "block_rows": Parameter("int", None, low=1, nullable=True),
    "weights_init": Parameter("initial"),
    "means_init": Parameter("initial"),
    "precisions_init": Parameter("initial"),
    "random_state": Parameter("random_state"),
    # Online EM: fit by mini-batches, and the steps' sizes, (t + offset) ** -decay (scikit-learn's
    # online LDA's names; smaller defaults than its 0.7 and 10, as a wave is a large batch).
    "learning_method": Parameter("choice", "batch", choices=("batch", "online")),
    "learning_decay": Parameter("float", 0.51, low=0.5),
    "learning_offset": Parameter("float", 1.0, low=0.0),
    "batch_size": Parameter("int", None, low=1, nullable=True),
    "max_passes": Parameter("int", 2, low=1),
    "shuffle": Parameter("bool", True),
}


# BayesianGaussianMixture's: the same, without initial values, with the priors (None: from the
# data, as scikit-learn's; the fit checks what depends on it, e.g. degrees of freedom > D - 1).
BAYESIAN_MIXTURE_PARAMETERS = {
    **{name: parameter for name, parameter in GAUSSIAN_MIXTURE_PARAMETERS.items()
       if name not in ("weights_init", "means_init", "precisions_init")},
    "weight_concentration_prior_type": Parameter(
        "choice", "dirichlet_process", choices=("dirichlet_process", "dirichlet_distribution")),
    "weight_concentration_prior": Parameter("float", None, low=0.0, nullable=True),
    "mean_precision_prior": Parameter("float", None, low=0.0, nullable=True),
    "mean_prior": Parameter("initial"),
    "degrees_of_freedom_prior": Parameter("float", None, low=0.0, nullable=True),
    "covariance_prior": Parameter("initial"),
}


def defaults(parameters):
    """Return ``{name: default}`` of a parameter table such as GAUSSIAN_MIXTURE_PARAMETERS."""
    return {name: parameter.default for name, parameter in parameters.items()}
