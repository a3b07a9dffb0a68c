"""The GaussianMixture estimator: scikit-learn's contract, EM as one fused pass per iteration."""

import logging
import time
import warnings
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from . import covariance as cov
from .sklearn_compat import (
    BaseEstimator,
    ComponentReseedWarning,
    ConvergenceWarning,
    DensityMixin,
    NotFittedError,
)
from .engine import DEFAULT_SPLIT_EVERY, map_reduce, map_rows, single_threaded_blas
from .init import initial_stats
from .kernels import (
    em_block,
    label_block,
    make_log_density,
    proba_block,
    raise_if_nonfinite,
    score_block,
)
from .validation import (
    check_estimator_params,
    check_means_init,
    check_precisions_init,
    check_sample_weight,
    check_weights_init,
    check_X,
    row_data,
)

logger = logging.getLogger("daskgmm")

# A component whose weighted count falls below this many average rows is re-seeded.
_STARVED_ROWS = 1e-3


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


def as_random_state(random_state):
    """Return the ``numpy.random.RandomState`` scikit-learn would draw from for ``random_state``.

    None is NumPy's global RandomState, an int seeds a new one, a RandomState is used as is and
    a Generator seeds a new RandomState from its stream.
    """
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.RandomState(random_state.integers(0, 2**32 - 1, size=4))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.RandomState(random_state)
    raise ValueError(
        "random_state must be None, an int, a numpy RandomState or Generator; "
        f"got {random_state!r}."
    )


class GaussianMixture(DensityMixin, BaseEstimator):
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

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        persist=False,
        split_every=DEFAULT_SPLIT_EVERY,
        block_rows=None,
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

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None, sample_weight=None, *, callback=None, resume=None):
        """Estimate the model parameters with the EM algorithm.

        Parameters
        ----------
        X : array-like, dask.array.Array, zarr.Array or str of shape (n_samples, n_features)
            Training data; a string is a Zarr store path or URL. Dask and Zarr data are
            streamed chunk by chunk and never gathered.
        y : Ignored
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None
            Non-negative weights of the rows: a weight of 2 counts a row twice. Weights all
            below the smallest normal number of X's float dtype are first multiplied by a
            power of two (exactly, keeping their ratios), so that they can be computed with.

        callback : callable, optional
            Called as ``callback(state)`` with a :class:`FitState` after every EM iteration and
            at the end of every initialisation: a place to watch a fit, or save its state. An
            exception raised there stops the fit.
        resume : FitState, optional
            A state a callback was given: the fit continues from it and ends at the model the
            uninterrupted fit reaches, to the last bit (same X, weights and parameters).

        Returns
        -------
        self : GaussianMixture
        """
        check_estimator_params(self)
        # A warm start continues from the fitted parameters, so X must have their features.
        n_features = self.n_features_in_ if self._warm_starts() else None
        X = check_X(X, n_components=self.n_components, n_features=n_features)
        weights = check_sample_weight(sample_weight, X)
        if self.persist and isinstance(X, da.Array):
            X, weights = _persisted(X, weights)
        source = row_data(X, weights, self.block_rows)
        self._fit_source(source, callback or _ignore, resume)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit the model to X and return the most probable component of every row.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        self.fit(X, sample_weight=sample_weight)
        return self.predict(X)

    def _warm_starts(self):
        """Whether the next ``fit`` starts from the fitted parameters."""
        return self.warm_start and hasattr(self, "converged_")

    def _fit_source(self, source, callback, resume=None):
        """The EM loop: ``n_init`` initialisations, each iterated to convergence, the best kept."""
        self._check_initial_parameters(source.n_features)
        do_init = not self._warm_starts()
        n_init = self.n_init if do_init else 1
        random_state = as_random_state(self.random_state)
        self._dtype = source.dtype
        state = resume or FitState(init=0)
        if state.random_state is not None:  # resumed: later draws continue from there
            random_state.set_state(state.random_state)
        # One BLAS thread for the client's small M-step algebra too (see single_threaded_blas).
        with single_threaded_blas():
            for init in range(state.init, n_init):
                state.init = init
                if state.current is None:
                    self._print_verbose_init_start(init)
                    state.current = self._initial_run(source, random_state, do_init)
                    state.random_state = random_state.get_state()
                self._run_em(source, state, callback)
                # As in scikit-learn: without iterations the last initialisation is kept.
                run = state.current
                if state.best is None or self.max_iter == 0 or \
                        run.lower_bound > state.best.lower_bound:
                    state.best = run
                state.init, state.current = init + 1, None
                callback(state)
        self._set_fitted(state.best, source.n_features)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
            )

    def _initial_run(self, source, random_state, do_init):
        """A run at its start: drawn parameters, or the fitted ones for a warm start."""
        if do_init:
            return EMRun(self._initial_parameters(source, random_state))
        return EMRun(self._params(), start_bound=self.lower_bound_)

    def _run_em(self, source, state, callback):
        """Iterate ``state.current`` until it converges or reaches ``max_iter``."""
        run = state.current
        started = time.perf_counter()
        while run.n_iter < self.max_iter and not run.converged:
            iteration_start = time.perf_counter()
            previous = run.lower_bounds[-1] if run.lower_bounds else run.start_bound
            stats = self._em_pass(source, run.params)
            run.params, reseeded = self._m_step(stats, source)
            run.n_reseeded += reseeded
            run.lower_bounds.append(stats.log_likelihood / stats.total_weight)
            change = run.lower_bound - previous
            run.converged = abs(change) < self.tol
            callback(state)
            self._log_iteration(run.n_iter, run.lower_bound, change,
                                time.perf_counter() - iteration_start)
        self._print_verbose_init_end(run.lower_bound, run.converged,
                                     time.perf_counter() - started)

    def _em_pass(self, source, params):
        density = make_log_density(params.weights, params.means, params.precisions_cholesky,
                                   self.covariance_type, params.reference(), source.dtype)
        stats = map_reduce(source, em_block, density, self.covariance_type,
                           split_every=self.split_every)
        raise_if_nonfinite(stats.n_nonfinite)
        return stats

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

    def _initial_parameters(self, source, random_state):
        """Initial parameters from ``*_init`` arguments, or from one statistics pass."""
        weights, means, precisions = self.weights_init, self.means_init, self.precisions_init
        covariances = None
        if weights is None or means is None or precisions is None:
            stats = initial_stats(source, self.n_components, self.init_params,
                                  self.covariance_type, random_state, self.split_every)
            raise_if_nonfinite(stats.n_nonfinite)
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

    def _check_initial_parameters(self, n_features):
        if self.weights_init is not None:
            self.weights_init = check_weights_init(self.weights_init, self.n_components)
        if self.means_init is not None:
            self.means_init = check_means_init(self.means_init, self.n_components, n_features)
        if self.precisions_init is not None:
            self.precisions_init = check_precisions_init(
                self.precisions_init, self.covariance_type, self.n_components, n_features
            )

    def _set_fitted(self, run, n_features):
        dtype = self._dtype
        params = run.params
        self.weights_ = params.weights.astype(dtype)
        self.means_ = params.means.astype(dtype)
        self.covariances_ = np.asarray(params.covariances).astype(dtype)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(dtype)
        self.precisions_ = cov.precisions_from_cholesky(
            params.precisions_cholesky, self.covariance_type
        ).astype(dtype)
        self.converged_ = run.converged
        self.n_iter_ = run.n_iter
        self.lower_bound_ = float(run.lower_bound)
        self.lower_bounds_ = [float(bound) for bound in run.lower_bounds]
        self.n_features_in_ = n_features
        self.n_reseeded_ = run.n_reseeded

    def _params(self):
        return MixtureParams(
            self.weights_.astype(np.float64),
            self.means_.astype(np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            self.precisions_cholesky_.astype(np.float64),
        )

    # ------------------------------------------------------------------ inference

    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _inference_source(self, X):
        self._check_fitted()
        X = check_X(X, n_features=self.n_features_in_)
        return row_data(X, None, self.block_rows)

    def _log_density(self, source):
        params = self._params()
        return make_log_density(params.weights, params.means, params.precisions_cholesky,
                                self.covariance_type, params.reference(), source.dtype)

    def score_samples(self, X):
        """Return the log-likelihood of every row under the model.

        Returns
        -------
        log_prob : ndarray or dask.array.Array of shape (n_samples,)
            Lazy (same row chunks) for Dask input.
        """
        source = self._inference_source(X)
        return map_rows(source, score_block, self._log_density(source))

    def score(self, X, y=None):
        """Return the mean log-likelihood of the rows of X (computed, also for Dask input)."""
        return self._mean_log_likelihood(X)[0]

    def _mean_log_likelihood(self, X):
        """Return the mean log-likelihood of X's rows and their number."""
        log_prob = self.score_samples(X)
        mean = log_prob.mean()
        return float(mean.compute() if isinstance(mean, da.Array) else mean), log_prob.shape[0]

    def predict(self, X):
        """Return the most probable component of every row.

        Returns
        -------
        labels : ndarray or dask.array.Array of shape (n_samples,)
        """
        source = self._inference_source(X)
        return map_rows(source, label_block, self._log_density(source), dtype=np.int64)

    def predict_proba(self, X):
        """Return every row's posterior probability of each component.

        Returns
        -------
        resp : ndarray or dask.array.Array of shape (n_samples, n_components)
        """
        source = self._inference_source(X)
        return map_rows(source, proba_block, self._log_density(source),
                        n_columns=self.n_components)

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

    def sample(self, n_samples=1):
        """Draw random rows from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        self._check_fitted()
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least "
                "one sample."
            )
        # The same draws as scikit-learn's sample, so equal models and seeds give equal rows.
        rng = as_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        covariances = np.asarray(self.covariances_, dtype=np.float64)
        parts = [
            self._sample_component(rng, k, int(count), covariances) for k, count in enumerate(counts)
        ]
        labels = np.repeat(np.arange(self.n_components), counts)
        return np.vstack(parts).astype(np.float64), labels

    def _sample_component(self, rng, k, count, covariances):
        mean = np.asarray(self.means_[k], dtype=np.float64)
        if self.covariance_type == "full":
            return rng.multivariate_normal(mean, covariances[k], count)
        if self.covariance_type == "tied":
            return rng.multivariate_normal(mean, covariances, count)
        return mean + rng.standard_normal(size=(count, len(mean))) * np.sqrt(covariances[k])

    # ------------------------------------------------------------------ persistence

    def save(self, path, overwrite=False):
        """Write the fitted model to a Zarr group at ``path`` (atomically; see ``load``)."""
        from .store import save_model

        self._check_fitted()
        save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`."""
        from .store import load_model

        return load_model(path, cls)

    # ------------------------------------------------------------------ reporting

    def _log_iteration(self, n_iter, lower_bound, change, seconds):
        logger.info("iteration %d lower bound %.10g change %.3g (%.3fs)",
                    n_iter, lower_bound, change, seconds)
        if self.verbose and n_iter % self.verbose_interval == 0:
            if self.verbose == 1:
                print(f"  Iteration {n_iter}")
            else:
                print(f"  Iteration {n_iter}\t time lapse {seconds:.5f}s\t ll change {change:.5f}")

    def _print_verbose_init_start(self, init):
        if self.verbose:
            print(f"Initialization {init}")

    def _print_verbose_init_end(self, lower_bound, converged, seconds):
        message = "converged" if converged else "did not converge"
        logger.info("initialization %s, lower bound %.10g (%.3fs)", message, lower_bound, seconds)
        if self.verbose == 1:
            print(f"Initialization {message}.")
        elif self.verbose >= 2:
            print(f"Initialization {message}. time lapse {seconds:.5f}s\t lower bound "
                  f"{lower_bound:.5f}.")


@dataclass
class EMRun:
    """One initialisation's EM iterations: its parameters now and its lower bounds so far.

    Attributes
    ----------
    params : MixtureParams
    lower_bounds : list of float
        One per iteration run.
    converged : bool
    n_reseeded : int
        Components re-seeded so far.
    start_bound : float
        The lower bound the first iteration's change is measured from (-inf, or a warm
        start's).
    """

    params: MixtureParams
    lower_bounds: list = field(default_factory=list)
    converged: bool = False
    n_reseeded: int = 0
    start_bound: float = -np.inf

    @property
    def n_iter(self):
        """Iterations run so far."""
        return len(self.lower_bounds)

    @property
    def lower_bound(self):
        """The last iteration's lower bound (-inf before the first)."""
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf


@dataclass
class FitState:
    """Where a fit stands: enough to watch it, save it and resume it to the same model.

    Given to ``fit``'s callback after every EM iteration and at the end of every
    initialisation; ``fit(X, resume=state)`` continues from it.

    Attributes
    ----------
    init : int
        The initialisation running (from 0); ``n_init`` once all have finished.
    current : EMRun or None
        The running initialisation; None between two.
    best : EMRun or None
        The best finished initialisation so far.
    random_state : tuple or None
        ``RandomState.get_state()`` after the running initialisation was drawn, so that the
        later ones draw what they would have drawn.
    """

    init: int
    current: EMRun = None
    best: EMRun = None
    random_state: tuple = None


def _ignore(state):
    """The callback of a fit nobody watches."""


def _persisted(X, weights):
    if weights is None:
        return X.persist(), None
    return X.persist(), weights.persist()
