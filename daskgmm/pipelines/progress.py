"""Computing a job's Dask collections on its client, with a progress bar and a timed log line."""

import logging
import sys
import time

import dask

from daskgmm.threads import single_threaded_blas

logger = logging.getLogger(__name__)


def compute(*collections, label=None):
    """Compute Dask collections on the job's client (a progress bar on a terminal).

    Parameters
    ----------
    *collections : dask collections
    label : str, optional
        What the computation does: logged with its duration once done.

    Returns
    -------
    tuple
        One result per collection.
    """
    try:
        from distributed import get_client, progress

        client = get_client()
    except (ImportError, ValueError):
        return dask.compute(*collections)
    started = time.perf_counter()
    # Held here, in the thread that waits: in-process workers' own limits do not take
    # (OpenBLAS 0.3.31 ignores a worker thread's limit once this thread has set one).
    with single_threaded_blas():
        futures = client.compute(list(collections))
        if label and sys.stdout.isatty():
            progress(futures)
        results = tuple(client.gather(futures))
    if label:
        logger.info("%s (%.1fs)", label, time.perf_counter() - started)
    return results
