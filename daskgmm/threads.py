"""Threads in this process: blocks run on a pool of threads, BLAS on one thread meanwhile."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_blas_controller = None
_blas_limit = None
_blas_limit_depth = 0
_blas_limit_lock = threading.Lock()


@contextmanager
def single_threaded_blas():
    """Run BLAS single-threaded in this process while blocks run in parallel.

    Parallelism comes from blocks (threads here, or Dask workers); BLAS threads competing with
    them on the same cores make a pass several times slower, and the M-step's many tiny LAPACK
    calls slower still (bench/README.md, "Measurements behind the comments"). Dask's worker
    processes already start with one BLAS thread; this covers in-process threads (NumPy input,
    Dask's threaded scheduler, in-process clusters) and the client. Re-entrant: nested uses
    cost nothing.
    """
    global _blas_controller, _blas_limit, _blas_limit_depth
    with _blas_limit_lock:
        if _blas_limit_depth == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limit = _blas_controller.limit(limits=1, user_api="blas")
        _blas_limit_depth += 1
    try:
        yield
    finally:
        with _blas_limit_lock:
            _blas_limit_depth -= 1
            # The last thread out restores: the first one out would lift the limit from under
            # the threads still in their blocks (3x slower passes, bench/README.md).
            if _blas_limit_depth == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def map_in_threads(function, items):
    """Return ``[function(item) for item in items]``, run on a pool of this machine's cores."""
    items = list(items)
    if len(items) == 1:
        return [function(items[0])]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(function, items))
