"""The model a job applies: loaded from ``model.load``, or fitted on the valid rows of its input.

Rows with a NaN or an infinity are no data and take no part in fitting; the rows fitted on are
sampled as ``training.sample`` says and scaled when ``training.standardize`` is set.
"""

import logging
from dataclasses import dataclass

import dask.array as da

from daskgmm import GaussianMixture, store
from daskgmm.config import ConfigError
from daskgmm.model_config import EFFECTIVE_WEIGHT, effective_components
from daskgmm.storage import check_url

from .progress import compute
from .training import Standardizer, fit_mixture, sample_rows, transform

logger = logging.getLogger(__name__)


@dataclass
class Fitted:
    """The job's model, the scaling of its features, and the rows it was fitted on (or None)."""

    model: GaussianMixture
    scaler: Standardizer
    rows: object = None

    def features(self, rows):
        """Rows as the model sees them (scaled when the model was fitted on scaled rows)."""
        return transform(self.scaler, rows)


def load_saved_model(config, n_features):
    """Return the model (and its scaling) saved at ``model.load``, checked against the input.

    Parameters
    ----------
    config : ModelConfig
    n_features : int or None
        Features (channels) of the input; None when not known before reading.

    Returns
    -------
    model : GaussianMixture
    scaler : Standardizer or None

    Raises
    ------
    ConfigError
        If there is no saved model at the path, or it expects other features.
    """
    path = config.load
    check_url(path, "model.load")
    try:
        model = GaussianMixture.load(path)
    except FileNotFoundError:
        raise ConfigError(f"no saved model at {path!r}", "model.load") from None
    except PermissionError as error:
        raise ConfigError(str(error), "model.load") from None
    except Exception as error:
        raise ConfigError(f"{path!r} is not a saved daskgmm model ({error})", "model.load") \
            from None
    if n_features is not None and model.n_features_in_ != n_features:
        raise ConfigError(f"the model at {path!r} expects {model.n_features_in_} features, the "
                          f"input has {n_features}", "model.load")
    return model, Standardizer.from_attrs(store.read_attrs(path).get("preprocessing"))


def finite_rows(rows):
    """Return which rows hold only finite values, or None when all do, and how many do not.

    Rows with a NaN or an infinity are no data: they take no part in fitting, and get the
    no-data label and a NaN score. Only a float table can hold them; counting them takes one
    pass over it.

    Parameters
    ----------
    rows : dask.array.Array of shape (n_rows, n_features)

    Returns
    -------
    valid : dask.array.Array of shape (n_rows,) of bool, or None
    n_non_finite : int
    """
    if rows.dtype.kind not in "fc":
        return None, 0
    valid = da.isfinite(rows).all(axis=1)
    (n_non_finite,) = compute((~valid).sum(), label="counted rows with NaN or infinite values")
    if not n_non_finite:
        return None, 0
    logger.warning("%d of %d rows hold NaN or infinite values: they are left out of fitting and "
                   "get the no-data label and a NaN score", n_non_finite, rows.shape[0])
    return valid, int(n_non_finite)


def training_rows(config, rows, valid=None):
    """Return the rows (of the valid ones) to fit on, drawn as ``training.sample`` says.

    Parameters
    ----------
    config : JobConfig
    rows : dask.array.Array of shape (n_rows, n_features)
    valid : dask.array.Array of shape (n_rows,) of bool, optional
        Rows to leave out of fitting are False.
    """
    return sample_rows(rows, valid, config.training.sample, config.model.random_state)


def training_features(config, rows, valid=None):
    """Return the rows to fit on, their scaling (or None) and the scaled rows.

    Parameters are those of :func:`training_rows`.
    """
    fit_rows = training_rows(config, rows, valid)
    return (fit_rows,) + scaled_features(config, fit_rows)


def scaled_features(config, fit_rows):
    """Return the scaling of the rows to fit on (or None) and the rows scaled (persisted on the
    cluster when ``model.persist`` says so)."""
    scaler = Standardizer.fit(fit_rows, compute) if config.training.standardize else None
    X = transform(scaler, fit_rows)
    return scaler, (X.persist() if config.model.persist and isinstance(X, da.Array) else X)


def fit_or_load(prepared, rows, valid=None):
    """Return the loaded model, or fit one (checkpointed, resumed if asked) on ``rows``.

    Parameters
    ----------
    prepared : Prepared
    rows, valid
        As for :func:`training_rows`.

    Returns
    -------
    Fitted
    """
    return fit_or_load_drawn(prepared, lambda: training_rows(prepared.config, rows, valid))


def fit_or_load_drawn(prepared, draw):
    """Return the loaded model, or fit one on the rows ``draw()`` returns (drawn only then).

    Parameters
    ----------
    prepared : Prepared
    draw : callable
        Returns the rows to fit on: a NumPy or Dask array of shape (n_rows, n_features).

    Returns
    -------
    Fitted
    """
    if prepared.loaded is not None:
        return Fitted(prepared.loaded, prepared.scaler)
    fit_rows = draw()
    scaler, X = scaled_features(prepared.config, fit_rows)
    model = fit_mixture(X, prepared.config.model, prepared.checkpoint, prepared.resumed,
                        prepared.config.training)
    if prepared.config.model.kind == "bayesian":
        logger.info("the prior kept %d of %d components (expected weight >= %g)",
                    effective_components(model), model.n_components, EFFECTIVE_WEIGHT)
    return Fitted(model, scaler, fit_rows)


def model_summary(model):
    """JSON-ready facts about a fitted model, for the runner's report and the output attrs."""
    summary = {"n_components": int(model.n_components), "covariance_type": model.covariance_type,
               "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
               "lower_bound": float(model.lower_bound_)}
    if getattr(model, "learning_method", "batch") == "online":
        summary.update(learning_method="online", passes=int(model.n_iter_),
                       online_steps=int(model.online_steps_))
    if hasattr(model, "weight_concentration_"):  # a Bayesian mixture: how many the data use
        summary["kind"] = "bayesian"
        summary["effective_components"] = effective_components(model)
    return summary
