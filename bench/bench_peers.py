"""Against the peers: Spark MLlib's GaussianMixture, and this machine's own limits for one pass.

1. **Spark MLlib** (``pyspark``, ``local[2]``; skipped with a message where pyspark or Java is
   missing) against daskgmm on W1 (N=2e6, D=3, K=8, full: the only covariance Spark has), the
   same rows in the same run. Spark cannot start from given parameters, so each library starts
   from its own: Spark from its own initialisation (``seed`` fixed), daskgmm from explicit
   ``*_init``. Seconds per iteration = (best ``fit(maxIter=k)`` - best ``fit(maxIter=1)``) /
   (k - 1) for both, best of ``--repeats``, the two fits alternating after a warm-up fit, so
   set-up, initialisation and the final pass cancel. Spark reads the rows from a CSV file written with 17
   significant digits (the same float64 values) and caches them before timing; ``tol=0`` for both.
   Data and daskgmm's initial parameters are bench_em.py's (``make_data``, ``initial_parameters``).
   daskgmm runs on the NumPy array (its own thread pool) and on a Dask array persisted on an
   in-process ``LocalCluster(2 workers x 1 thread)``, like Spark's two task threads in one JVM.
2. **The machine's limit** for one EM pass of W1, W2 (N=5e5, D=32, K=16, full) and W3 (W2 with
   diag): measured here with one thread per core, each on its own arrays with one BLAS thread:
   read bandwidth (``a.sum()`` of 256 MiB float64), matrix-multiply rate (2000 x 2000 DGEMM) and
   ``exp`` rate (in place, 16 Mi float64). A pass must read the data (N D 8 bytes), run daskgmm's
   two GEMMs (E-step ``coefficients @ phi`` and statistics ``phi @ resp.T``: 4 K P N flops, P the
   design features 1 + D + quadratic terms) and take K N exponentials; the bound is the largest
   of bytes / bandwidth, flops / GEMM rate and exps / exp rate. Printed: daskgmm's seconds per
   iteration (NumPy input) / bound.

Usage::

    python bench/bench_peers.py                  # Spark on W1 and the limits of W1, W2, W3
    python bench/bench_peers.py --scale 0.1 --iters 3 --repeats 1     # smoke run
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import common
from bench_em import WORKLOADS, initial_parameters, make_data
from daskgmm import ConvergenceWarning

logger = logging.getLogger("bench_peers")


def design_features(workload):
    """Rows of daskgmm's design matrix: 1 + D + the quadratic terms of the covariance type."""
    d = workload.n_features
    return 1 + d + {"full": d * (d + 1) // 2, "diag": d}[workload.covariance_type]


def pass_work(workload, n_rows):
    """(bytes read, GEMM flops, exponentials) of one EM pass over ``n_rows`` rows."""
    k = workload.n_components
    return n_rows * workload.n_features * 8, 4 * k * design_features(workload) * n_rows, k * n_rows


# ---------------------------------------------------------------------------- daskgmm

def seconds_per_iteration(fit, n_iter, repeats):
    """(best fit(n_iter) - best fit(1)) / (n_iter - 1), after one warm-up fit, fits alternating."""
    fit(2)
    short, long = np.inf, np.inf
    for _ in range(repeats):
        short = min(short, common.best_time(lambda: fit(1), 1)[0])
        long = min(long, common.best_time(lambda: fit(n_iter), 1)[0])
    return (long - short) / (n_iter - 1)


def daskgmm_seconds(workload, X, init, n_iter, repeats):
    """daskgmm's seconds per iteration on ``X`` from the initial parameters ``init``."""
    from daskgmm import GaussianMixture

    def fit(max_iter):
        return GaussianMixture(workload.n_components, covariance_type=workload.covariance_type,
                               tol=0.0, max_iter=max_iter, **init).fit(X)

    return seconds_per_iteration(fit, n_iter, repeats)


def daskgmm_cluster_seconds(workload, X, init, n_iter, repeats):
    """daskgmm on a Dask array persisted on an in-process LocalCluster (2 workers x 1 thread)."""
    import dask.array as da
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        data = common.balanced_persist(
            client, lambda: da.from_array(X, chunks=(-(-len(X) // 8), -1)))
        return daskgmm_seconds(workload, data, init, n_iter, repeats)


# ---------------------------------------------------------------------------- Spark

def spark_available():
    """None if Spark can run here, else the reason it cannot."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install pyspark, Java 17+)"
    if shutil.which("java") is None:
        return "no java on PATH"
    return None


def spark_seconds(X, n_components, n_iter, repeats, directory):
    """Spark MLlib GaussianMixture's seconds per iteration on local[2], from a cached CSV."""
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    path = Path(directory) / "rows.csv"
    np.savetxt(path, X, delimiter=",", fmt="%.17g")
    spark = (SparkSession.builder.master("local[2]").appName("bench_peers")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        frame = spark.read.csv(str(path), inferSchema=True)
        rows = VectorAssembler(inputCols=frame.columns, outputCol="features").transform(frame)
        rows = rows.select("features").cache()
        assert rows.count() == len(X)

        def fit(max_iter):
            return GaussianMixture(k=n_components, maxIter=max_iter, tol=0.0, seed=1).fit(rows)

        seconds = seconds_per_iteration(fit, n_iter, repeats)
        summary = fit(n_iter).summary
        return seconds, summary.numIter, summary.logLikelihood / len(X), spark.version
    finally:
        spark.stop()


# ---------------------------------------------------------------------------- machine limits

def _on_every_core(work, n_cores):
    """Wall time of ``work(i)`` run at once in one thread per core (i = 0 .. n_cores - 1)."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_cores)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def machine_rates(n_cores, repeats=3):
    """Read bandwidth (bytes/s), DGEMM rate (flop/s) and exp rate (1/s), all cores together."""
    def best(work):
        return min(_on_every_core(work, n_cores) for _ in range(repeats))

    arrays = [np.random.default_rng(i).random(2**25) for i in range(n_cores)]
    bandwidth = n_cores * arrays[0].nbytes / best(lambda i: arrays[i].sum())
    size = 2000
    matrices = [np.random.default_rng(i).random((size, size)) for i in range(n_cores)]
    with threadpool_limits(limits=1, user_api="blas"):
        gemm = n_cores * 2 * size**3 / best(lambda i: matrices[i] @ matrices[i])
    arguments = [-10 * np.random.default_rng(i).random(2**24) for i in range(n_cores)]
    exps = n_cores * arguments[0].size / best(lambda i: np.exp(arguments[i], out=arguments[i]))
    return {"bandwidth": bandwidth, "gemm": gemm, "exp": exps}


def pass_bound(workload, n_rows, rates):
    """The three lower bounds of one pass's time, in seconds."""
    data_bytes, flops, exps = pass_work(workload, n_rows)
    return {"read": data_bytes / rates["bandwidth"], "gemm": flops / rates["gemm"],
            "exp": exps / rates["exp"]}


# ---------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N (1)")
    parser.add_argument("--iters", type=int, default=10, help="k of fit(maxIter=k) (10)")
    parser.add_argument("--repeats", type=int, default=3, help="best of (3)")
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args(argv)
    common.log_progress(logger)
    warnings.simplefilter("ignore", ConvergenceWarning)
    n_cores = os.cpu_count() or 1
    rates = machine_rates(n_cores)
    logger.info("rates %s", rates)
    limits, spark = [], None
    for workload in WORKLOADS.values():
        X, mixture = make_data(workload, args.scale)
        init = initial_parameters(workload, mixture)
        seconds = daskgmm_seconds(workload, X, init, args.iters, args.repeats)
        bounds = pass_bound(workload, len(X), rates)
        limits.append({"workload": workload, "rows": len(X), "seconds": seconds, **bounds})
        logger.info("%s daskgmm %.3f s/it, bounds %s", workload.name, seconds, bounds)
        if workload.name == "W1" and not args.skip_spark:
            spark = compare_spark(workload, X, init, args)
    print("\n".join(common.header()))
    print()
    report_spark(spark, args)
    report_limits(limits, rates, n_cores)
    return 0


def compare_spark(workload, X, init, args):
    reason = spark_available()
    if reason:
        return {"skipped": reason}
    directory = tempfile.mkdtemp(prefix="bench-peers-")
    try:
        spark, iterations, bound, version = spark_seconds(X, workload.n_components, args.iters,
                                                          args.repeats, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result = {"rows": len(X), "spark": spark, "spark_iterations": iterations,
              "spark_lower_bound": bound, "spark_version": version,
              "numpy": daskgmm_seconds(workload, X, init, args.iters, args.repeats),
              "dask": daskgmm_cluster_seconds(workload, X, init, args.iters, args.repeats)}
    logger.info("spark %s", result)
    return result


def report_spark(spark, args):
    print("## Spark MLlib GaussianMixture (local[2]) against daskgmm, W1 (K=8 full, D=3)")
    if spark is None:
        print("skipped (--skip-spark)\n")
        return
    if "skipped" in spark:
        print(f"skipped: {spark['skipped']}\n")
        return
    print(f"rows {spark['rows']:,}; Spark {spark['spark_version']} ran "
          f"{spark['spark_iterations']} iterations for maxIter={args.iters}, mean log-likelihood "
          f"{spark['spark_lower_bound']:.4f}")
    rows = [{"library": "Spark MLlib, local[2]", "seconds": spark["spark"], "ratio": 1.0}]
    for mode, label in (("numpy", "daskgmm, NumPy input"),
                        ("dask", "daskgmm, Dask on LocalCluster(2 x 1 thread, in-process)")):
        rows.append({"library": label, "seconds": spark[mode],
                     "ratio": spark["spark"] / spark[mode]})
    print(common.table(rows, [("library", "library", "s"), ("seconds", "s / iteration", ".4f"),
                              ("ratio", "Spark s / this s", ".1f")]))
    print()


def report_limits(limits, rates, n_cores):
    print(f"## daskgmm against this machine's limit for one pass ({n_cores} cores: read "
          f"{rates['bandwidth'] / 1e9:.1f} GB/s, DGEMM {rates['gemm'] / 1e9:.1f} GFLOP/s, "
          f"exp {rates['exp'] / 1e9:.2f} G/s)")
    rows = []
    for limit in limits:
        bound = max(limit["read"], limit["gemm"], limit["exp"])
        workload = limit["workload"]
        rows.append({"workload": f"{workload.name} (N={limit['rows']:,} D={workload.n_features} "
                                 f"K={workload.n_components} {workload.covariance_type})",
                     "read": 1e3 * limit["read"], "gemm": 1e3 * limit["gemm"],
                     "exp": 1e3 * limit["exp"], "bound": 1e3 * bound,
                     "seconds": 1e3 * limit["seconds"], "ratio": limit["seconds"] / bound})
    print(common.table(rows, [("workload", "workload", "s"), ("read", "read ms", ".1f"),
                              ("gemm", "GEMM ms", ".1f"), ("exp", "exp ms", ".1f"),
                              ("bound", "bound ms", ".1f"), ("seconds", "daskgmm ms / it", ".1f"),
                              ("ratio", "daskgmm / bound", ".1f")]))


if __name__ == "__main__":
    sys.exit(main())
