"""anomaly: flag rows whose log-likelihood under a mixture falls below a threshold.

The model is fitted on ``input`` (or loaded from ``model.load``). The threshold is
``anomaly.threshold``, a log-likelihood, or the ``anomaly.quantile`` of the scores of the rows
the model was fitted on (``training.sample`` of ``input``, in memory for the quantile). The rows
scored are ``anomaly.data`` (a table like ``input``), or ``input`` itself. Rows holding a NaN
or an infinity are no data: left out of fitting, scored NaN and never flagged.

Output folder: ``result.zarr`` with ``scores`` ``(rows,)`` float64 (log-likelihoods) and
``flags`` ``(rows,)`` bool (True = anomaly); ``model.zarr``.
"""

import logging

import numpy as np

from daskgmm.config import ConfigError

from .inputs import resolve_table
from .job_model import finite_rows, fit_or_load, training_rows
from .outputs import job_output
from .plan import Plan, describe_fit, prepare_job
from .predictions import where_valid
from .progress import compute

logger = logging.getLogger(__name__)


def _sources(config):
    train = resolve_table(config.input, "input")
    if config.anomaly.data is None:
        return {"input": train}
    scored = resolve_table(config.anomaly.data, "anomaly.data")
    if scored.shape[1] != train.shape[1]:
        raise ConfigError(f"has {scored.shape[1]} features, input has {train.shape[1]}",
                          "anomaly.data.path")
    return {"input": train, "anomaly.data": scored}


def prepare(config, resume=False):
    """Check an anomaly job and plan it (no work is done).

    Returns
    -------
    Prepared
    """
    sources = _sources(config)
    prepared = prepare_job(config, sources, sources["input"].shape[1], resume)
    settings = config.anomaly
    rule = (f"log-likelihood below {settings.threshold}" if settings.threshold is not None else
            f"log-likelihood below the {settings.quantile} quantile of the training scores")
    scored = "anomaly.data" if "anomaly.data" in sources else "input"
    steps = describe_fit(prepared) + [f"score every row of {scored}; flag {rule}"]
    outputs = ["result.zarr/scores (rows,) float64", "result.zarr/flags (rows,) bool",
               "model.zarr"]
    prepared.plan = Plan("anomaly", [s.describe() for s in sources.values()], steps, outputs)
    return prepared


def _scores(fitted, rows, valid):
    """Lazy log-likelihood of every row under the model: NaN for rows without data."""
    if valid is not None:
        rows = where_valid(rows, valid, 0)
    scores = fitted.model.score_samples(fitted.features(rows)).astype(np.float64)
    return scores if valid is None else where_valid(scores, valid, np.nan)


def _threshold(prepared, fitted, train_rows, train_valid):
    """The log-likelihood under which a row is flagged."""
    settings = prepared.config.anomaly
    if settings.threshold is not None:
        return settings.threshold
    fit_rows = fitted.rows
    if fit_rows is None:
        fit_rows = training_rows(prepared.config, train_rows, train_valid)
    (scores,) = compute(fitted.model.score_samples(fitted.features(fit_rows)),
                        label="scored the training rows")
    return float(np.quantile(scores, settings.quantile))


def run(prepared):
    """Fit (or load) the model, score the rows, flag those under the threshold, write them.

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    train_rows = prepared.sources["input"].open(prepared.guard)
    train_valid, n_non_finite = finite_rows(train_rows)
    fitted = fit_or_load(prepared, train_rows, train_valid)
    threshold = _threshold(prepared, fitted, train_rows, train_valid)
    scored = prepared.sources.get("anomaly.data")
    rows, valid = train_rows, train_valid
    if scored is not None:
        rows = scored.open(prepared.guard)
        valid, n_non_finite = finite_rows(rows)
    scores = _scores(fitted, rows, valid)
    flags = scores < threshold  # False for NaN: a row without data is never flagged
    with job_output(prepared) as output:
        (n_flagged,) = output.write_arrays({"scores": scores, "flags": flags}, also=[flags.sum()])
        output.write_coords((scored or prepared.sources["input"]).coords)
        output.write_model(fitted)
        output.summary.update({
            "threshold": threshold,
            "rows": int(rows.shape[0]),
            "non_finite_rows": n_non_finite,
            "flagged": int(n_flagged),
        })
    logger.info("flagged %d of %d rows (log-likelihood < %.6g)", n_flagged, rows.shape[0],
                threshold)
    return output.summary
