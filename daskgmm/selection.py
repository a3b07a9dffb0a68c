"""Model selection: fit a grid of mixtures over one dataset and choose by BIC or AIC."""

from dataclasses import dataclass, field

import dask.array as da

from .mixture import GaussianMixture
from .options import CRITERIA
from .validation import check_X


@dataclass
class ModelSelection:
    """The result of :func:`select_model`.

    Attributes
    ----------
    table : list of dict
        One row per fitted model: ``n_components``, ``covariance_type``, ``bic``, ``aic``,
        ``lower_bound``, ``converged``, ``n_iter``.
    best_model : GaussianMixture
        The fitted model with the lowest criterion.
    criterion : str
        'bic' or 'aic'.
    """

    table: list = field(default_factory=list)
    best_model: GaussianMixture = None
    criterion: str = "bic"

    def __iter__(self):
        return iter((self.table, self.best_model))

    def add(self, row, model):
        """Add a fitted model's row; it becomes the best if its criterion is strictly lowest."""
        if self.best_model is None or row[self.criterion] < min(
                previous[self.criterion] for previous in self.table):
            self.best_model = model
        self.table.append(row)


def select_model(X, n_components=(1, 2, 3, 4, 5), covariance_types=("full",), criterion="bic",
                 sample_weight=None, **params):
    """Fit a GaussianMixture for every ``n_components`` x ``covariance_type`` and pick the best.

    A Dask input is persisted once and shared by all fits.

    Parameters
    ----------
    X : array-like, dask.array.Array, zarr.Array or str of shape (n_samples, n_features)
    n_components : iterable of int
    covariance_types : iterable of {'full', 'tied', 'diag', 'spherical'}
    criterion : {'bic', 'aic'}
    sample_weight : array-like of shape (n_samples,), optional
    **params
        Other GaussianMixture parameters (``random_state``, ``max_iter``, ...).

    Returns
    -------
    ModelSelection
        Iterable as ``table, best_model``.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgmm import select_model
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> table, best = select_model(X, n_components=[1, 2], random_state=0)
    >>> best.n_components
    1
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}; got {criterion!r}.")
    grid = [(k, c) for c in covariance_types for k in n_components]
    if not grid:
        raise ValueError("select_model needs at least one n_components and one covariance type.")
    X = check_X(X)
    if isinstance(X, da.Array):
        X = X.persist()
    result = ModelSelection(criterion=criterion)
    for k, covariance_type in grid:
        model = GaussianMixture(n_components=k, covariance_type=covariance_type, **params)
        model.fit(X, sample_weight=sample_weight)
        row = {
            "n_components": k,
            "covariance_type": covariance_type,
            "bic": float(model.bic(X)),
            "aic": float(model.aic(X)),
            "lower_bound": model.lower_bound_,
            "converged": bool(model.converged_),
            "n_iter": int(model.n_iter_),
        }
        result.add(row, model)
    return result
