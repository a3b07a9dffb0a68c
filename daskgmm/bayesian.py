"""The BayesianGaussianMixture estimator: variational inference on the one-pass engine.

The loop (restarts, convergence, resume, inference) is :class:`daskgmm.base.BaseMixture`'s, as
for :class:`~daskgmm.GaussianMixture`; the per-chunk kernel is the same fused E-step, given the
posterior's expected log-densities. The priors, the posterior's updates and the lower bound are
:mod:`daskgmm.variational`'s.
"""

import logging

import numpy as np

from . import covariance as cov
from . import variational
from .base import BaseMixture
from .engine import map_reduce
from .kernels import em_pass_block, make_log_density, raise_if_nonfinite
from .online import OnlineMixin, initial_rows
from .options import BAYESIAN_MIXTURE_PARAMETERS, defaults
from .variational import VariationalParams

__all__ = ["BayesianGaussianMixture"]

logger = logging.getLogger("daskgmm")

_DEFAULT = defaults(BAYESIAN_MIXTURE_PARAMETERS)


class BayesianGaussianMixture(OnlineMixin, BaseMixture):
    """Variational Bayesian Gaussian mixture, on NumPy, Dask or Zarr arrays of any size.

    A drop-in for :class:`sklearn.mixture.BayesianGaussianMixture`: from the same initial
    responsibilities it reaches the same posterior. Given an upper bound ``n_components``, the
    prior on the weights switches off the components the data do not need (their weights fall
    towards zero), so the data choose the number of components. Each iteration is one pass over
    the data, as for :class:`~daskgmm.GaussianMixture`.

    Parameters
    ----------
    n_components : int, default=1
        The upper bound on the number of components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Iterations stop when the lower bound gains less than this.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance estimate.
    max_iter : int, default=100
    n_init : int, default=1
        Initialisations; the one with the largest lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How the initial responsibilities are chosen (as for GaussianMixture).
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}, \
default='dirichlet_process'
        A Dirichlet process (stick-breaking) or a finite Dirichlet distribution on the weights.
    weight_concentration_prior : float, default=None
        The prior's concentration (``gamma``); ``1 / n_components`` when None. Lower values put
        the mass on fewer components.
    mean_precision_prior : float, default=None
        The precision prior of the means (``beta``); 1 when None.
    mean_prior : array-like of shape (n_features,), default=None
        The prior on the means; the data's mean when None.
    degrees_of_freedom_prior : float, default=None
        The Wishart prior's degrees of freedom (``nu``, above ``n_features - 1``);
        ``n_features`` when None.
    covariance_prior : float or array-like, default=None
        The Wishart prior's covariance, shaped by ``covariance_type`` (a (D, D) matrix for
        'full' and 'tied', (D,) for 'diag', a float for 'spherical'); the data's
        (``numpy.cov``) when None.
    random_state : int, RandomState, Generator or None, default=None
    warm_start : bool, default=False
    verbose : int, default=0
    verbose_interval : int, default=10
    persist : bool, default=False
        Keep a Dask input persisted during ``fit``.
    split_every : int, default=8
        Fan-in of the tree that merges the statistics of the chunks.
    block_rows : int, default=None
        Rows per block for in-memory NumPy input.
    learning_method, learning_decay, learning_offset, batch_size, max_passes, shuffle
        As for GaussianMixture: ``learning_method='online'`` (and :meth:`partial_fit`) is
        stochastic variational inference (Hoffman et al. 2013), the running statistics scaled
        to the data's total weight (``partial_fit``: the weight its steps have seen) for the
        posterior.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        As for GaussianMixture: the posterior's expected weights, its means, and the Wishart's
        scale over its degrees of freedom (and their inverses and Cholesky factors).
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        The variational lower bound (sum over the rows, not a mean) of the best initialisation.
    lower_bounds_ : list of float
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, degrees_of_freedom_prior_,
    covariance_prior_ : float or ndarray
        The priors the fit used.
    weight_concentration_ : ndarray or tuple of two ndarrays
        The posterior's Dirichlet concentrations (a pair, of the Beta distributions of the
        sticks, for a Dirichlet process).
    mean_precision_ : ndarray of shape (n_components,)
    degrees_of_freedom_ : ndarray of shape (n_components,) (a float for 'tied')
    n_features_in_ : int

    See Also
    --------
    GaussianMixture : Maximum likelihood by EM, with a fixed number of components.
    sklearn.mixture.BayesianGaussianMixture : The in-memory reference implementation.
    """

    _parameter_table = BAYESIAN_MIXTURE_PARAMETERS
    # What save() writes beside GaussianMixture's fitted values.
    saved_attributes = (
        ("weight_concentration_", "mean_precision_", "degrees_of_freedom_", "mean_prior_",
         "covariance_prior_"),
        ("weight_concentration_prior_", "mean_precision_prior_", "degrees_of_freedom_prior_"),
    )

    def __init__(
        self,
        n_components=_DEFAULT["n_components"],
        *,
        covariance_type=_DEFAULT["covariance_type"],
        tol=_DEFAULT["tol"],
        reg_covar=_DEFAULT["reg_covar"],
        max_iter=_DEFAULT["max_iter"],
        n_init=_DEFAULT["n_init"],
        init_params=_DEFAULT["init_params"],
        weight_concentration_prior_type=_DEFAULT["weight_concentration_prior_type"],
        weight_concentration_prior=_DEFAULT["weight_concentration_prior"],
        mean_precision_prior=_DEFAULT["mean_precision_prior"],
        mean_prior=_DEFAULT["mean_prior"],
        degrees_of_freedom_prior=_DEFAULT["degrees_of_freedom_prior"],
        covariance_prior=_DEFAULT["covariance_prior"],
        random_state=_DEFAULT["random_state"],
        warm_start=_DEFAULT["warm_start"],
        verbose=_DEFAULT["verbose"],
        verbose_interval=_DEFAULT["verbose_interval"],
        persist=_DEFAULT["persist"],
        split_every=_DEFAULT["split_every"],
        block_rows=_DEFAULT["block_rows"],
        learning_method=_DEFAULT["learning_method"],
        learning_decay=_DEFAULT["learning_decay"],
        learning_offset=_DEFAULT["learning_offset"],
        batch_size=_DEFAULT["batch_size"],
        max_passes=_DEFAULT["max_passes"],
        shuffle=_DEFAULT["shuffle"],
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.persist = persist
        self.split_every = split_every
        self.block_rows = block_rows
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.batch_size = batch_size
        self.max_passes = max_passes
        self.shuffle = shuffle

    # ------------------------------------------------------------------ the EM template's pieces

    def _check_initial_parameters(self, source):
        """Resolve the priors (the data's moments for those left None: one or two passes; in
        an online fit, over the rows of its first waves only)."""
        n_features = source.n_features
        self._check_prior_values(n_features)
        needs_moments = self.mean_prior is None or self.covariance_prior is None
        if self._streams():  # online: the moments of the first waves, a bounded sample
            source = initial_rows(source, self.batch_size, self.n_components)
        moments = _data_moments(source, self.split_every) if needs_moments else (None, None)
        priors = variational.data_priors(
            self.weight_concentration_prior, self.mean_precision_prior, self.mean_prior,
            self.degrees_of_freedom_prior, self.covariance_prior, moments, self.n_components,
            self.covariance_type)
        self._priors = priors
        self.weight_concentration_prior_ = priors.weight_concentration
        self.mean_precision_prior_ = priors.mean_precision
        self.mean_prior_ = priors.mean
        self.degrees_of_freedom_prior_ = priors.degrees_of_freedom
        self.covariance_prior_ = priors.covariance

    def _check_prior_values(self, n_features):
        """scikit-learn's checks of the priors that depend on the data's width."""
        for name in ("weight_concentration_prior", "mean_precision_prior"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"The parameter '{name}' should be greater than 0., but got "
                                 f"{value:.3f}.")
        if self.mean_prior is not None:
            mean = np.asarray(self.mean_prior, dtype=np.float64).reshape(-1)
            if mean.shape != (n_features,):
                raise ValueError(f"The parameter 'means' should have the shape of "
                                 f"({n_features},), but got {np.shape(self.mean_prior)}")
        dof = self.degrees_of_freedom_prior
        if dof is not None and not dof > n_features - 1.0:
            raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater than "
                             f"{n_features - 1}, but got {dof:.3f}.")
        if self.covariance_prior is not None:
            _check_covariance_prior(self.covariance_prior, self.covariance_type, n_features)

    def _initial_parameters(self, source, random_state):
        """The posterior under the initial responsibilities (scikit-learn's ``_initialize``)."""
        return self._posterior(self._initial_stats(source, random_state), source)

    def _posterior(self, stats, source):
        return variational.posterior(stats, self._fitted_priors(), self.reg_covar,
                                     self.covariance_type,
                                     self.weight_concentration_prior_type,
                                     cov.count_padding(source.dtype))

    def _log_density_of(self, params, dtype):
        offsets = variational.log_density_offsets(params, params.means.shape[1])
        return make_log_density(None, params.means, params.precisions_cholesky,
                                self.covariance_type, params.reference(), dtype,
                                log_weights=offsets)

    def _m_step(self, stats, source):
        return self._posterior(stats, source), 0

    def _statistics_of(self, params, log_likelihood):
        """Per unit weight, the statistics whose posterior is ``params``: online steps' start
        from a model (``log_likelihood`` unused: a Bayesian fit's bound is not a row mean)."""
        stats = variational.implied_statistics(params, self._fitted_priors(), self.reg_covar,
                                               self.covariance_type)
        stats.log_likelihood = np.nan  # the lower bound is the evidence's, not a mean row's
        return stats

    def _fitted_priors(self):
        """The priors of this fit, or of a loaded model (from its ``*_prior_`` attributes)."""
        if not hasattr(self, "_priors"):
            self._priors = variational.Priors(
                self.weight_concentration_prior_, self.mean_precision_prior_,
                np.asarray(self.mean_prior_), self.degrees_of_freedom_prior_,
                np.asarray(self.covariance_prior_))
        return self._priors

    def _online_scale(self):
        """The weight the running statistics stand for in the posterior: the data's (or, in
        ``partial_fit``, the weight seen so far)."""
        return self.online_weight_

    def _fitted_weight(self):
        return float(np.sum(self.mean_precision_ - self._fitted_priors().mean_precision))

    def _compute_lower_bound(self, stats, previous, params):
        return variational.lower_bound(stats, previous, params, self.covariance_type)

    def _get_parameters(self):
        concentration = self.weight_concentration_
        if isinstance(concentration, tuple):
            concentration = tuple(np.asarray(part, dtype=np.float64) for part in concentration)
        else:
            concentration = np.asarray(concentration, dtype=np.float64)
        return VariationalParams(
            concentration,
            np.asarray(self.mean_precision_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.degrees_of_freedom_, dtype=np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            np.asarray(self.precisions_cholesky_, dtype=np.float64),
        )

    def _set_parameters(self, params, dtype):
        self.weight_concentration_ = params.weight_concentration
        self.mean_precision_ = params.mean_precision
        self.degrees_of_freedom_ = params.degrees_of_freedom
        self.weights_ = params.weights().astype(dtype)
        self.means_ = params.means.astype(dtype)
        self.covariances_ = np.asarray(params.covariances).astype(dtype)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(dtype)
        self.precisions_ = cov.precisions_from_cholesky(
            params.precisions_cholesky, self.covariance_type).astype(dtype)

    # ------------------------------------------------------------------ sampling, persistence


def _data_moments(source, split_every):
    """The (weighted) mean of the rows and their covariance with ``ddof=1``, as ``numpy.cov``
    of the rows repeated by their weights: two passes, the second about the mean."""
    mean = np.zeros(source.n_features)
    for covariance_type in ("spherical", "full"):
        density = make_log_density(np.ones(1), mean[None], np.ones(1) if covariance_type ==
                                   "spherical" else np.eye(source.n_features)[None],
                                   covariance_type, mean, source.dtype)
        stats = map_reduce(source, em_pass_block, density, covariance_type,
                           split_every=split_every)
        raise_if_nonfinite(stats.n_nonfinite)
        offset = stats.first[0] / stats.total_weight
        mean = stats.reference + offset
    scatter = stats.second[0] - stats.total_weight * np.outer(offset, offset)
    return mean, scatter / (stats.total_weight - 1.0)


def _check_covariance_prior(prior, covariance_type, n_features):
    shapes = {"full": (n_features, n_features), "tied": (n_features, n_features),
              "diag": (n_features,), "spherical": ()}
    value = np.asarray(prior, dtype=np.float64)
    if value.shape != shapes[covariance_type]:
        raise ValueError(f"The parameter 'covariance_prior' should have the shape of "
                         f"{shapes[covariance_type]}, but got {value.shape}")
    if covariance_type in ("full", "tied"):
        if not np.allclose(value, value.T) or np.any(np.linalg.eigvalsh(value) <= 0.0):
            raise ValueError(f"'{covariance_type} covariance_prior' should be symmetric, "
                             "positive-definite")
    elif np.any(value <= 0.0):
        raise ValueError(f"'{covariance_type} covariance_prior' should be positive")
