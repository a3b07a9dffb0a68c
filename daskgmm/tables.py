"""Tables in: CSV and Parquet files read lazily as numeric rows (``dask.dataframe``)."""

from .storage import url_options

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _dataframe():
    try:
        import dask.dataframe as dd
    except ImportError:
        raise ImportError("Reading CSV or Parquet needs dask.dataframe: "
                          "pip install 'daskgmm[tabular]'") from None
    return dd


def _numeric_columns(frame, columns):
    """The chosen columns (all when ``columns`` is None) that hold numbers, checked."""
    names = list(frame.columns)
    chosen = names if columns is None else list(columns)
    missing = [name for name in chosen if name not in names]
    if missing:
        raise ValueError(f"no column(s) {', '.join(map(repr, missing))}; the files have "
                         f"{', '.join(map(repr, names))}")
    numeric = [name for name in chosen if frame[name].dtype.kind in "biuf"]
    if columns is not None and len(numeric) < len(chosen):
        bad = [name for name in chosen if name not in numeric]
        raise ValueError(f"column(s) {', '.join(map(repr, bad))} are not numeric")
    if not numeric:
        raise ValueError("the files have no numeric column")
    return numeric


def open_table(paths, file_format, columns=None):
    """Open CSV or Parquet files lazily as a ``dask.dataframe`` of numeric columns.

    Parameters
    ----------
    paths : list of str
    file_format : {'csv', 'parquet'}
    columns : list of str, optional
        The columns to read, each numeric; every numeric column when None.

    Returns
    -------
    dask.dataframe.DataFrame

    Raises
    ------
    ImportError
        If ``dask[dataframe]`` (the ``tabular`` extra) is not installed.
    ValueError
        If a named column is missing or not numeric.
    """
    dd = _dataframe()
    reader = dd.read_csv if file_format == "csv" else dd.read_parquet
    frame = reader(paths, **url_options(paths[0]))  # a URL's storage_options
    return frame[_numeric_columns(frame, columns)]


def table_rows(frame):
    """Return a dataframe's values as a 2-D Dask array with known row chunks (one pass).

    Parameters
    ----------
    frame : dask.dataframe.DataFrame

    Returns
    -------
    dask.array.Array of shape (n_rows, n_columns)
    """
    return frame.to_dask_array(lengths=True)
