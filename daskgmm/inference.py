"""What a fitted mixture does: log-densities, scores, labels and probabilities (lazily for
Dask input, on the same row chunks), samples, and saving and loading."""

import dask.array as da
import numpy as np

from .engine import map_rows
from .evaluation import label_block, proba_block, score_block
from .sampling import draw_rows
from .sklearn_compat import NotFittedError
from .validation import check_X, row_data


class FittedMixture:
    """What a fitted estimator of :class:`daskgmm.base.BaseMixture` answers: its subclass has
    ``means_``, ``n_features_in_``, ``n_components``, ``block_rows`` and the template's
    ``_log_density_of`` and ``_get_parameters``."""

    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _map_fitted(self, X, row_fn, **kwargs):
        """Apply a per-row kernel of :mod:`daskgmm.evaluation` to X under the fitted model."""
        self._check_fitted()
        source = row_data(check_X(X, n_features=self.n_features_in_), None, self.block_rows)
        return map_rows(source, row_fn, self.log_density(source.dtype), **kwargs)

    def log_density(self, dtype=np.float64):
        """The fitted mixture as a :class:`~daskgmm.kernels.LogDensity` for rows of ``dtype``:
        what :func:`daskgmm.evaluation.evaluate_rows` evaluates, block by block."""
        self._check_fitted()
        return self._log_density_of(self._get_parameters(), dtype)

    def score_samples(self, X):
        """Return the log-likelihood of every row under the model.

        Returns
        -------
        log_prob : ndarray or dask.array.Array of shape (n_samples,)
            Lazy (same row chunks) for Dask input.
        """
        return self._map_fitted(X, score_block)

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
        return self._map_fitted(X, label_block, dtype=np.int64)

    def predict_proba(self, X):
        """Return every row's posterior probability of each component.

        Returns
        -------
        resp : ndarray or dask.array.Array of shape (n_samples, n_components)
        """
        return self._map_fitted(X, proba_block, n_columns=self.n_components)

    def sample(self, n_samples=1):
        """Draw random rows from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        self._check_fitted()
        return draw_rows(self, n_samples)

    def save(self, path, overwrite=False):
        """Write the fitted model to a Zarr group at ``path`` (atomically; see ``load``)."""
        from .model_format import save_model

        self._check_fitted()
        save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, storage_options=None):
        """Read a model written by :meth:`save`: of the estimator its format records.

        Parameters
        ----------
        path : str or Path
            A local folder or an fsspec URL (``s3://bucket/model.zarr``).
        storage_options : dict, optional
            The fsspec filesystem's options for a URL, as for ``zarr.open_group``.
        """
        from .model_format import load_model

        return load_model(path, cls, storage_options)
