"""The GaussianMixture estimator: its parameters, and the Gaussian pieces of the EM template.

The loop (restarts, convergence, resume, inference) is :class:`daskgmm.base.BaseMixture`'s;
this module says what a Gaussian mixture's parameters are, how they become the E-step kernel's
coefficients, and how the sufficient statistics become the next parameters (the M-step, with
re-seeding of components that lost their weight).
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from . import covariance as cov
from .base import BaseMixture, EMRun, FitState
from .online import OnlineMixin
from .kernels import make_log_density
from .options import GAUSSIAN_MIXTURE_PARAMETERS, defaults
from .sklearn_compat import ComponentReseedWarning
from .validation import (
    check_means_init,
    check_precisions_init,
    check_weights_init,
)

# EMRun and FitState are the loop's, and public here too, where a GaussianMixture's fit is.
__all__ = ["EMRun", "FitState", "GaussianMixture", "MixtureParams"]

logger = logging.getLogger("daskgmm")

# A component whose weighted count falls below this many average rows is re-seeded.
_STARVED_ROWS = 1e-3
_DEFAULT = defaults(GAUSSIAN_MIXTURE_PARAMETERS)


@dataclass
class MixtureParams:
    """One mixture's parameters, kept in float64 during fitting."""

    weights: np.ndarray
    means: np.ndarray
    covariances: object
    precisions_cholesky: np.ndarray

    def reference(self):
        """The mixture mean: the point all per-row work is centred on."""
        return (self.weights @ self.means) / self.weights.sum()


class GaussianMixture(OnlineMixin, BaseMixture):
    """Gaussian mixture fitted by EM, on NumPy, Dask or Zarr arrays of any size.

    A drop-in for :class:`sklearn.mixture.GaussianMixture`: from the same initial parameters it
    reaches the same model. Each EM iteration is one pass over the data that computes the
    E-step and the sufficient statistics of every block together; only small statistics are
    merged (in a fixed tree) and the M-step runs in NumPy on the client.

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        'full': each component has its own covariance matrix; 'tied': all share one;
        'diag': each has a diagonal covariance; 'spherical': each has a single variance.
    tol : float, default=1e-3
        EM stops when the lower bound (mean log-likelihood) gains less than this.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance, to keep them positive-definite.
    max_iter : int, default=100
        The number of EM iterations to perform.
    n_init : int, default=1
        The number of initialisations; the one with the largest lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        How initial responsibilities are chosen: k-means labels (k-means|| seeding and Lloyd
        passes), k-means++ rows, random responsibilities, or random rows.
    weights_init : array-like of shape (n_components,), default=None
        Initial weights; computed by ``init_params`` when None.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means; computed by ``init_params`` when None.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped by ``covariance_type`` as
        ``covariances_`` is.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation and :meth:`sample`.
    warm_start : bool, default=False
        If True, each ``fit`` starts from the previous solution and ``n_init`` is ignored.
    verbose : int, default=0
        1 prints each initialisation and iteration, 2 adds timings and changes.
    verbose_interval : int, default=10
        Iterations between two verbose messages.
    persist : bool, default=False
        Keep a Dask input persisted on the cluster during ``fit`` instead of streaming it from
        its source every iteration. An input that is already persisted is always reused.
    split_every : int, default=8
        Fan-in of the tree that merges the statistics of the chunks.
    block_rows : int, default=None
        Rows per block for in-memory NumPy input (about 8 MB of float64 when None).
    learning_method : {'batch', 'online'}, default='batch'
        'online': ``fit`` is online EM over mini-batches (see :meth:`partial_fit`), the data
        visited in a seeded shuffled order of chunks, ``max_passes`` times at most.
    learning_decay : float, default=0.51
        In (0.5, 1]: how fast online steps shrink, ``(t + learning_offset) ** -decay``.
    learning_offset : float, default=1.0
        The ``offset`` of that schedule: larger values make the first steps smaller.
    batch_size : int, default=None
        Rows of an online mini-batch; None: a wave of one chunk per worker thread.
    max_passes : int, default=2
        Online: passes over the data at most (fewer once a pass changes the bound < ``tol``).
    shuffle : bool, default=True
        Online: visit the chunks in an order drawn from ``random_state`` (False: in order).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        (n_components, n_features, n_features) if 'full', (n_features, n_features) if 'tied',
        (n_components, n_features) if 'diag', (n_components,) if 'spherical'.
    precisions_ : ndarray
        Inverses of the covariances, shaped like ``covariances_``.
    precisions_cholesky_ : ndarray
        Upper Cholesky factors of the precisions, shaped like ``covariances_``.
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        EM iterations of the best initialisation.
    lower_bound_ : float
        Mean log-likelihood (sample-weighted) of the best initialisation's last E-step.
    lower_bounds_ : list of float
        The lower bound after every iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen during ``fit``.
    n_reseeded_ : int
        Components re-seeded during the best initialisation because their weight vanished.
    online_steps_ : int
        Online EM steps taken (:meth:`partial_fit`, or ``fit`` online); 0 after batch EM.
    online_statistics_ : SufficientStats
        Online EM's running statistics, per unit weight, which the next step blends into.

    See Also
    --------
    select_model : Fit a grid of models and choose by BIC or AIC.
    sklearn.mixture.GaussianMixture : The in-memory reference implementation.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgmm import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(gm.means_[:, 0].round(1).tolist())
    [1.0, 10.0]
    """

    _parameter_table = GAUSSIAN_MIXTURE_PARAMETERS

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
        weights_init=_DEFAULT["weights_init"],
        means_init=_DEFAULT["means_init"],
        precisions_init=_DEFAULT["precisions_init"],
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
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
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
        n_features = source.n_features
        if self.weights_init is not None:
            self.weights_init = check_weights_init(self.weights_init, self.n_components)
        if self.means_init is not None:
            self.means_init = check_means_init(self.means_init, self.n_components, n_features)
        if self.precisions_init is not None:
            self.precisions_init = check_precisions_init(
                self.precisions_init, self.covariance_type, self.n_components, n_features
            )

    def _initial_parameters(self, source, random_state):
        """Initial parameters from ``*_init`` arguments, or from one statistics pass."""
        weights, means, precisions = self.weights_init, self.means_init, self.precisions_init
        covariances = None
        if weights is None or means is None or precisions is None:
            stats = self._initial_stats(source, random_state)
            padded_counts, fitted_means, covariances = cov.estimate_gaussian_parameters(
                stats, self.reg_covar, self.covariance_type, cov.count_padding(source.dtype)
            )
            weights = padded_counts / stats.total_weight if weights is None else weights
            means = fitted_means if means is None else means
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        if precisions is None:
            precisions_cholesky = cov.precisions_cholesky_from_covariances(
                covariances, self.covariance_type
            )
        else:
            precisions_cholesky = cov.precisions_cholesky_from_precisions(
                np.asarray(precisions, dtype=np.float64), self.covariance_type
            )
            covariances = cov.covariances_from_cholesky(precisions_cholesky, self.covariance_type)
        return MixtureParams(weights, means, covariances, precisions_cholesky)

    def _log_density_of(self, params, dtype):
        return make_log_density(params.weights, params.means, params.precisions_cholesky,
                                self.covariance_type, params.reference(), dtype)

    def _m_step(self, stats, source):
        padded_counts, means, covariances = cov.estimate_gaussian_parameters(
            stats, self.reg_covar, self.covariance_type, cov.count_padding(source.dtype)
        )
        weights = padded_counts / padded_counts.sum()
        starved = stats.counts < _STARVED_ROWS * stats.total_weight / source.n_rows
        if starved.any():
            weights, means, covariances = self._reseed(stats, starved, weights, means, covariances)
        precisions_cholesky = cov.precisions_cholesky_from_covariances(
            covariances, self.covariance_type
        )
        return MixtureParams(weights, means, covariances, precisions_cholesky), int(starved.sum())

    def _reseed(self, stats, starved, weights, means, covariances):
        """Move components that lost their weight onto the worst-explained rows."""
        indices = np.flatnonzero(starved)[: len(stats.worst_points)]
        alive = ~starved
        warnings.warn(
            f"{len(indices)} component(s) of GaussianMixture lost all their weight and were "
            "re-seeded at the worst-explained rows; consider fewer components.",
            ComponentReseedWarning,
        )
        means = means.copy()
        means[indices] = stats.worst_points[: len(indices)]
        if self.covariance_type != "tied" and alive.any():
            covariances = covariances.copy()
            covariances[indices] = covariances[alive].mean(axis=0)
        weights = weights.copy()
        weights[indices] = np.maximum(weights[indices], 1.0 / len(weights) ** 2)
        return weights / weights.sum(), means, covariances

    def _compute_lower_bound(self, stats, previous, params):
        """The mean (sample-weighted) log-likelihood of the E-step that gave ``stats``."""
        return stats.log_likelihood / stats.total_weight

    def _statistics_of(self, params, log_likelihood):
        """Per unit weight, the statistics whose M-step gives ``params`` (and the mean
        ``log_likelihood`` they come with): online EM's start from a model."""
        stats = cov.implied_statistics(params.weights, params.means, params.covariances,
                                       self.reg_covar, self.covariance_type)
        stats.log_likelihood = float(log_likelihood)
        return stats

    def _get_parameters(self):
        return MixtureParams(
            self.weights_.astype(np.float64),
            self.means_.astype(np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            self.precisions_cholesky_.astype(np.float64),
        )

    def _set_parameters(self, params, dtype):
        self.weights_ = params.weights.astype(dtype)
        self.means_ = params.means.astype(dtype)
        self.covariances_ = np.asarray(params.covariances).astype(dtype)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(dtype)
        self.precisions_ = cov.precisions_from_cholesky(
            params.precisions_cholesky, self.covariance_type
        ).astype(dtype)

    # ------------------------------------------------------------------ criteria

    def bic(self, X):
        """Bayesian information criterion of the model on X (lower is better)."""
        mean, n_samples = self._mean_log_likelihood(X)
        return -2 * mean * n_samples + self._n_parameters() * np.log(n_samples)

    def aic(self, X):
        """Akaike information criterion of the model on X (lower is better)."""
        mean, n_samples = self._mean_log_likelihood(X)
        return -2 * mean * n_samples + 2 * self._n_parameters()

    def _n_parameters(self):
        return cov.n_parameters(self.covariance_type, self.n_components, self.means_.shape[1])
