"""fit: fit a mixture to a table of rows (or apply ``model.load``) and label every row.

Input: a 2-D Zarr array ``(rows, features)``, or chosen numeric columns (``input.columns``) of
CSV or Parquet files, read with ``dask.dataframe`` (the ``tabular`` extra).

Rows holding a NaN or an infinity are no data: left out of fitting, labelled with the label
dtype's largest value, NaN in ``probabilities`` and ``log_likelihood``, counted in the summary.

Output folder: ``result.zarr`` with ``labels`` ``(rows,)`` (smallest unsigned dtype) and, when
asked, ``probabilities`` ``(rows, K)`` and ``log_likelihood`` ``(rows,)`` in float32;
``model.zarr``, loadable with ``GaussianMixture.load``.
"""

from .inputs import resolve_table
from .job_model import finite_rows, fit_or_load
from .outputs import job_output
from .plan import Plan, describe_fit, prepare_job
from .predictions import component_counts, describe_predictions, prediction_arrays


def prepare(config, resume=False):
    """Check a fit (or predict) job and plan it (no work is done).

    Returns
    -------
    Prepared
    """
    source = resolve_table(config.input, "input")
    prepared = prepare_job(config, {"input": source}, source.shape[1], resume)
    steps = describe_fit(prepared) + ["predict every row"]
    outputs = describe_predictions(config.output, ("rows",), prepared.n_components)
    prepared.plan = Plan(config.pipeline, [source.describe()], steps, outputs)
    return prepared


def run(prepared):
    """Fit (or load) the model, label every row and write the output folder.

    Returns
    -------
    dict
        The summary recorded in the output and reported by the runner.
    """
    config = prepared.config
    rows = prepared.sources["input"].open(prepared.guard)
    valid, n_non_finite = finite_rows(rows)
    fitted = fit_or_load(prepared, rows, valid)
    arrays, fills = prediction_arrays(fitted, rows, config.output, valid)
    counts = component_counts(arrays["labels"], fitted.model.n_components)
    with job_output(prepared) as output:
        (row_counts,) = output.write_arrays(arrays, fills, also=[counts])
        output.write_coords(prepared.sources["input"].coords)
        output.write_model(fitted)
        output.summary.update({
            "rows": int(rows.shape[0]),
            "non_finite_rows": n_non_finite,
            "rows_per_component": [int(c) for c in row_counts],
        })
    return output.summary
