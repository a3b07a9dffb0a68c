"""One BLAS thread while blocks run in parallel: checked in fresh interpreters, since the suite
itself runs under a module-wide BLAS limit (conftest.one_blas_thread)."""

import os
import subprocess
import sys
import textwrap

BLAS_THREADS = """
import threading
import numpy as np
from threadpoolctl import threadpool_info

def blas_threads():
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
"""
# Two BLAS threads to begin with, whatever the machine's environment says.
ENVIRONMENT = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
               "MKL_NUM_THREADS": "2"}


def run_python(code):
    """Run ``code`` after BLAS_THREADS in a fresh interpreter; return its stdout."""
    result = subprocess.run([sys.executable, "-c", BLAS_THREADS + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=120, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_limit_holds_until_the_last_thread_leaves():
    output = run_python("""
        from daskgmm.threads import single_threaded_blas
        entered, first_left, seen = threading.Barrier(2), threading.Event(), []

        def first():
            with single_threaded_blas():
                entered.wait()
            first_left.set()

        def second():
            with single_threaded_blas():
                entered.wait()
                first_left.wait()
                seen.append(blas_threads())

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        [thread.start() for thread in threads]
        [thread.join() for thread in threads]
        print(seen[0])
    """)
    assert output == "{1}"


def test_in_process_workers_run_a_jobs_computation_on_one_blas_thread():
    # Once the client's thread has set and lifted a limit (as every fit does), a limit set from
    # a worker thread no longer takes with OpenBLAS; the job's compute must hold it.
    output = run_python("""
        import dask
        from distributed import Client, LocalCluster
        from daskgmm.pipelines.progress import compute
        from daskgmm.threads import single_threaded_blas

        with single_threaded_blas():  # as a fit does, in this thread
            pass
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                          dashboard_address=":0") as cluster, Client(cluster):
            seen = compute(*[dask.delayed(blas_threads, pure=False)() for _ in range(4)])
        print(sorted(set().union(*seen)), blas_threads())
    """)
    assert output == "[1] {2}"
