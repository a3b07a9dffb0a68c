"""select: fit a grid of ``n_components`` x ``covariance_type`` and choose by BIC or AIC.

Each grid cell is one :func:`daskgmm.select_model` call on the same (persisted) training rows;
the table and the best model so far are checkpointed after every cell, so ``--resume`` skips the
cells already fitted.

Output folder: ``scores.csv`` and ``scores.json`` (one row per model: n_components,
covariance_type, bic, aic, lower_bound, converged, n_iter), ``criterion.png`` (the criterion
against K, one line per covariance type, the best ringed), ``model.zarr`` (the best model) and
``result.zarr`` whose attributes record the job, the table and the choice.

With ``select.bayesian``, a BayesianGaussianMixture of the grid's largest ``n_components`` is
fitted per covariance type on the same rows: each is a row of the table (``kind: bayesian``,
``n_components`` its effective components, no criterion) and a marker on the plot at that K,
so that the two choices of K can be compared.
"""

import csv
import io
import json
import logging

from daskgmm import BayesianGaussianMixture, ModelSelection, select_model
from daskgmm.config import SelectConfig
from daskgmm.model_config import effective_components
from daskgmm.options import BAYESIAN_MIXTURE_PARAMETERS, GAUSSIAN_MIXTURE_PARAMETERS

from .inputs import resolve_table
from .job_model import Fitted, finite_rows, training_features
from .outputs import job_output
from .plan import Plan, describe_checkpoint, prepare_job
from .render import line_plot

logger = logging.getLogger(__name__)

COLUMNS = ("n_components", "covariance_type", "bic", "aic", "lower_bound", "converged", "n_iter")
# The columns that tell a Bayesian fit's rows from the grid's, with ``select.bayesian``.
BAYESIAN_COLUMNS = ("kind", "upper_bound")


def prepare(config, resume=False):
    """Check a select job and plan it (no work is done).

    Returns
    -------
    Prepared
    """
    source = resolve_table(config.input, "input")
    grid = config.select or SelectConfig()
    prepared = prepare_job(config, {"input": source}, source.shape[1], resume, (grid,))
    prepared.extra["grid"] = grid
    sample = config.training.sample
    rows = "all rows" if sample is None else f"about {sample} random rows"
    steps = [f"fit n_components in {grid.n_components} x covariance_type in "
             f"{grid.covariance_types} on {rows}, choose the lowest {grid.criterion.upper()}",
             describe_checkpoint(prepared, "after every model")]
    if grid.bayesian:
        steps.insert(1, f"fit BayesianGaussianMixture(n_components={max(grid.n_components)}) "
                        f"per covariance type: the components its prior keeps, beside the grid")
    outputs = ["scores.csv", "scores.json", "criterion.png", "model.zarr (the best model)",
               "result.zarr (attributes only)"]
    prepared.plan = Plan("select", [source.describe()], steps, outputs)
    return prepared


def _grid_params(model_config):
    """The model section's GaussianMixture parameters other than those the grid varies (the
    grid is of Gaussian mixtures whatever ``model.kind``; the priors serve ``bayesian``)."""
    return {name: value for name, value in model_config.estimator_params().items()
            if name in GAUSSIAN_MIXTURE_PARAMETERS and name not in (
                "n_components", "covariance_type", "warm_start", "verbose", "verbose_interval",
                "block_rows", "persist")}


def _fit_grid(prepared, X):
    """Fit every grid cell not in the checkpoint; return the table and the best model."""
    grid, config = prepared.extra["grid"], prepared.config
    models, state = prepared.resumed or ({}, {"rows": []})
    selection = ModelSelection(list(state["rows"]), models.get("best"), grid.criterion)
    cells = [(k, c) for c in grid.covariance_types for k in grid.n_components]
    for k, covariance_type in cells[len(selection.table):]:
        logger.info("fitting n_components=%d covariance_type=%s", k, covariance_type)
        cell = select_model(X, n_components=[k], covariance_types=[covariance_type],
                            criterion=grid.criterion, **_grid_params(config.model),
                            **config.training.estimator_params())
        selection.add(*cell.table, cell.best_model)
        prepared.checkpoint.save({"best": selection.best_model}, {"rows": selection.table})
    return tuple(selection)


def _fit_bayesian(grid, model_config, X):
    """One BayesianGaussianMixture per covariance type, of the grid's largest n_components;
    return their table rows."""
    upper = max(grid.n_components)
    params = {name: value for name, value in model_config.estimator_params().items()
              if name in BAYESIAN_MIXTURE_PARAMETERS}
    rows = []
    for covariance_type in grid.covariance_types:
        logger.info("fitting BayesianGaussianMixture n_components<=%d covariance_type=%s",
                    upper, covariance_type)
        model = BayesianGaussianMixture(**{**params, "n_components": upper,
                                           "covariance_type": covariance_type}).fit(X)
        rows.append({"n_components": effective_components(model),
                     "covariance_type": covariance_type, "bic": None, "aic": None,
                     "lower_bound": float(model.lower_bound_),
                     "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
                     "kind": "bayesian", "upper_bound": upper})
    return rows


def table_csv(table):
    """The score table as CSV text."""
    text = io.StringIO()
    fields = COLUMNS + (BAYESIAN_COLUMNS if any("kind" in row for row in table) else ())
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return text.getvalue()


def criterion_plot(table, criterion, best_row):
    """An RGB plot of the criterion against n_components, one line per covariance type."""
    series, grid = {}, {}
    for row in table:
        if row.get("kind") == "bayesian":
            continue
        xs, ys = series.setdefault(row["covariance_type"], ([], []))
        xs.append(row["n_components"])
        ys.append(row[criterion])
        grid[row["n_components"], row["covariance_type"]] = row[criterion]
    for row in table:  # a Bayesian fit's K, marked on its covariance type's line
        key = (row["n_components"], row["covariance_type"])
        if row.get("kind") == "bayesian" and key in grid:
            series[f"bayesian {key[1]}"] = ([key[0]], [grid[key]])
    return line_plot(series, "n_components", criterion.upper(),
                     f"{criterion.upper()} by number of components (lower is better)",
                     highlight=(best_row["n_components"], best_row[criterion]))


def run(prepared):
    """Fit the grid, write the table, the plot and the best model.

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    config, criterion = prepared.config, prepared.extra["grid"].criterion
    rows = prepared.sources["input"].open(prepared.guard)
    _, scaler, X = training_features(config, rows, finite_rows(rows)[0])
    grid = prepared.extra["grid"]
    X = X.persist()
    table, best = _fit_grid(prepared, X)
    best_row = min(table, key=lambda row: row[criterion])
    if grid.bayesian:
        for row in table:
            row.update(kind="gaussian", upper_bound=None)
        table = table + _fit_bayesian(grid, config.model, X)
    with job_output(prepared) as output:
        output.write_text("scores.csv", table_csv(table))
        output.write_text("scores.json", json.dumps(table, indent=2) + "\n")
        output.write_png("criterion.png", criterion_plot(table, criterion, best_row))
        output.write_model(Fitted(best, scaler))
        output.summary.update({
            "criterion": criterion,
            "best": {"n_components": best_row["n_components"],
                     "covariance_type": best_row["covariance_type"],
                     criterion: best_row[criterion]},
            "table": table,
        })
        if grid.bayesian:
            output.summary["bayesian"] = {row["covariance_type"]: row["n_components"]
                                          for row in table if row["kind"] == "bayesian"}
    return output.summary
