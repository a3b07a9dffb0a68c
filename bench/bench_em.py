"""Seconds per EM iteration and peak memory: daskgmm against scikit-learn, in one run.

Both libraries fit the same data from the same initial parameters (``weights_init``,
``means_init``, ``precisions_init``; ``tol=0``), so both run exactly the requested number of
iterations and do the same work. Every measurement runs in a fresh child process (this script
re-run with ``--child``) that builds the data from the same seed, so peak memory is measured
per library and the data generation is excluded from both time and memory.

Seconds per iteration = (best time of ``fit(max_iter=n)`` - best time of ``fit(max_iter=1)``)
/ (n - 1). The two fits cost the same besides EM iterations (input validation, and for
scikit-learn its final E-step after the loop), so the difference is exactly ``n - 1`` iterations
for both libraries. (A ``max_iter=0`` fit cannot serve as the baseline: scikit-learn 1.9 raises
AttributeError for it when all three ``*_init`` are given.)

Peak memory is read from the kernel: the child resets its peak RSS (``VmHWM``, by writing 5 to
``/proc/<pid>/clear_refs``) after the data exist and reads it back after the fits; "extra" is
that peak minus the RSS just before fitting. Where the reset is unavailable, a psutil thread
samples RSS every 5 ms instead.

Usage::

    python bench/bench_em.py                      # W1, W2, W3 at full size, every mode
    python bench/bench_em.py --scale 0.05         # a quick smoke run
    python bench/bench_em.py --estimator bayesian  # BayesianGaussianMixture in both libraries
    python bench/bench_em.py --workloads W2 --modes numpy --skip-sklearn --profile w2.prof.txt
"""

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("bench_em")

SEED = 20240607
MB = 2.0**20
BLAS_ENVIRONMENT = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "NVPL_BLAS_DEBUG_CPU_TYPE",
)


@dataclass(frozen=True)
class Workload:
    """One benchmark problem: the data's shape and the mixture fitted to it."""

    name: str
    n_samples: int
    n_features: int
    n_components: int
    covariance_type: str
    default_iters: int


# daskgmm's Dask inputs: persisted as users do it, or dealt evenly to the workers by hand.
DASK_MODES = ("dask", "dask-placed")

WORKLOADS = {
    "W1": Workload("W1", 2_000_000, 3, 8, "full", 10),
    "W2": Workload("W2", 500_000, 32, 16, "full", 5),
    "W3": Workload("W3", 500_000, 32, 16, "diag", 10),
}


# ---------------------------------------------------------------------------- data

def generating_mixture(workload, rng):
    """Return the weights, means and covariances (K, D, D) the data are drawn from."""
    k, d = workload.n_components, workload.n_features
    weights = 1.0 + rng.random(k)
    weights /= weights.sum()
    means = rng.normal(scale=3.0, size=(k, d))
    factors = 0.6 * np.eye(d) + rng.normal(scale=0.3 / math.sqrt(d), size=(k, d, d))
    covariances = factors @ factors.transpose(0, 2, 1)
    return weights, means, covariances


def make_data(workload, scale, seed=SEED):
    """Return float64 rows drawn from a mixture of K Gaussians, and that mixture.

    Deterministic in (workload, scale, seed); rows of all components are interleaved.
    """
    rng = np.random.default_rng(seed)
    weights, means, covariances = generating_mixture(workload, rng)
    n_samples = max(int(round(workload.n_samples * scale)), 10 * workload.n_components)
    labels = rng.choice(workload.n_components, size=n_samples, p=weights)
    X = rng.standard_normal((n_samples, workload.n_features))
    for k in range(workload.n_components):
        rows = labels == k
        X[rows] = X[rows] @ np.linalg.cholesky(covariances[k]).T + means[k]
    return X, (weights, means, covariances)


def initial_parameters(workload, mixture, seed=SEED):
    """Initial weights, means and precisions: a perturbed, broadened version of the truth.

    Uniform weights, the generating means moved by noise, and the precisions of covariances
    twice as wide as the generating ones, shaped for ``workload.covariance_type``.
    """
    _, means, covariances = mixture
    rng = np.random.default_rng(seed + 1)
    k = workload.n_components
    means_init = means + rng.normal(scale=0.5, size=means.shape)
    if workload.covariance_type == "full":
        precisions = np.linalg.inv(2.0 * covariances)
        precisions = 0.5 * (precisions + precisions.transpose(0, 2, 1))
    elif workload.covariance_type == "diag":
        precisions = 1.0 / (2.0 * np.diagonal(covariances, axis1=1, axis2=2))
    else:
        raise ValueError(f"unsupported covariance_type {workload.covariance_type!r}")
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means_init,
            "precisions_init": precisions}


# ---------------------------------------------------------------------------- memory

def _vm_status(pid, field):
    """Return a ``/proc/<pid>/status`` field (e.g. VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss(pid):
    """Reset the kernel's peak-RSS mark of ``pid``; return False where that is unsupported."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _vm_status(pid, "VmHWM") <= _vm_status(pid, "VmRSS") + 4 * 2**20
    except OSError:
        return False


class PeakMemory:
    """Measure the peak RSS of a set of processes over a ``with`` block.

    ``pids`` are summed: for several processes the result is the sum of their own peaks, an
    upper bound of their simultaneous peak. The kernel's peak mark is used where it can be
    reset (exact); otherwise a thread samples RSS every ``interval`` seconds.
    """

    def __init__(self, pids, interval=0.005):
        import psutil

        self._processes = [psutil.Process(pid) for pid in pids]
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.peak = 0
        self.method = ""

    def _rss(self):
        return sum(process.memory_info().rss for process in self._processes)

    def _sample(self):
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.baseline = self.peak = self._rss()
        exact = all([_reset_peak_rss(process.pid) for process in self._processes])
        self.method = "VmHWM" if exact else f"psutil sampling every {self._interval * 1e3:g} ms"
        self._sampler = None if exact else threading.Thread(target=self._sample, daemon=True)
        if self._sampler:
            self._sampler.start()
        return self

    def __exit__(self, *exc):
        if self._sampler:
            self._stop.set()
            self._sampler.join()
        else:
            self.peak = sum(_vm_status(process.pid, "VmHWM") for process in self._processes)
        self.peak = max(self.peak, self._rss())
        return False

    def report(self):
        """Return the peak, the baseline and their difference in MiB."""
        return {"baseline_mb": self.baseline / MB, "peak_mb": self.peak / MB,
                "extra_mb": (self.peak - self.baseline) / MB, "memory_method": self.method}


# ---------------------------------------------------------------------------- timing

def make_estimator(library, workload, init, max_iter, estimator="gaussian"):
    """Return an unfitted mixture of ``library`` running exactly ``max_iter`` iterations.

    A GaussianMixture starts from ``init``; a BayesianGaussianMixture (which takes no initial
    parameters) from rows drawn with the same seed, the same rows in both libraries for NumPy
    input (its iterations cost the same whatever they start from).
    """
    common = {"n_components": workload.n_components, "covariance_type": workload.covariance_type,
              "tol": 0.0, "max_iter": max_iter}
    module = importlib.import_module("sklearn.mixture" if library == "sklearn" else "daskgmm")
    if estimator == "bayesian":
        return module.BayesianGaussianMixture(**common, init_params="random_from_data",
                                              random_state=SEED)
    return module.GaussianMixture(**common, **init)


def timed_fit(estimator, X):
    """Fit ``estimator`` to ``X``; return the wall-clock seconds it took."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        start = time.perf_counter()
        estimator.fit(X)
        return time.perf_counter() - start


def time_iterations(library, workload, init, X, n_iters, repeats, estimator="gaussian"):
    """Best-of-``repeats`` seconds per EM iteration, from fits of 1 and ``n_iters`` iterations.

    The short and the long fits alternate, so that both see the same background load.
    """
    setup_times, fit_times = [], []
    for repeat in range(repeats):
        setup_times.append(timed_fit(make_estimator(library, workload, init, 1, estimator), X))
        fitted = make_estimator(library, workload, init, n_iters, estimator)
        fit_times.append(timed_fit(fitted, X))
        logger.info("%s %s: fits of 1 and %d iterations %.3fs, %.3fs (repeat %d)", workload.name,
                    library, n_iters, setup_times[-1], fit_times[-1], repeat + 1)
    if fitted.n_iter_ != n_iters:
        raise RuntimeError(f"{library} ran {fitted.n_iter_} iterations, not {n_iters}")
    seconds_per_iter = (min(fit_times) - min(setup_times)) / (n_iters - 1)
    if seconds_per_iter <= 0:
        logger.warning("%s %s: %.4f s/iteration is timing noise at this size; use more --iters "
                       "or a larger --scale", workload.name, library, seconds_per_iter)
    return {
        "setup_s": min(setup_times), "fit_s": min(fit_times),
        "seconds_per_iter": seconds_per_iter,
        "setup_times": setup_times, "fit_times": fit_times,
        "lower_bound": float(fitted.lower_bound_),
        "means": np.asarray(fitted.means_, dtype=np.float64).tolist(),
    }


# ---------------------------------------------------------------------------- one measurement

def chunk_rows(n_samples, n_features, n_workers, chunk_mb):
    """Rows per Dask chunk: at most ``chunk_mb`` MiB, and at least 4 chunks per worker."""
    by_size = max(1, int(chunk_mb * MB // (8 * n_features)))
    return min(by_size, math.ceil(n_samples / (4 * n_workers)))


def persisted_dask_data(client, workload, scale, mode, chunk_mb):
    """Build the data and persist it on the cluster as a Dask array of row chunks.

    Mode ``dask``: ``da.from_array(X, chunks=...).persist()``, as users write it, wherever the
    scheduler puts the chunks. Mode ``dask-placed``: the chunks dealt evenly to the workers by
    hand (:func:`common.balanced_persist`, a worker annotation users never write). Persisting
    copies the chunks into the workers' memory and the local array is dropped on return, so the
    data are held once, as for the in-memory libraries.
    """
    import dask.array as da
    from distributed import wait

    import common  # dask and zarr: only in the Dask-mode children

    X, _ = make_data(workload, scale)
    n_workers = len(client.scheduler_info()["workers"])
    rows = chunk_rows(len(X), X.shape[1], n_workers, chunk_mb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sending large graph": the data, sent once
        if mode == "dask-placed":
            data = common.balanced_persist(
                client, lambda: da.from_array(X, chunks=(rows, X.shape[1])))
        else:
            data = da.from_array(X, chunks=(rows, X.shape[1])).persist()
            wait(data)
    client.run(importlib.import_module, "daskgmm")  # imports are not the fit's memory
    return data


def measure(spec):
    """Run one (workload, library, mode) measurement in this process; return its results."""
    import psutil

    workload = WORKLOADS[spec["workload"]]
    init = initial_parameters(workload, generating_mixture(workload, np.random.default_rng(SEED)))
    library = "sklearn" if spec["library"] == "sklearn" else "daskgmm"
    if spec["mode"] not in DASK_MODES:
        X, _ = make_data(workload, spec["scale"])
        return _measure_pids(spec, workload, library, init, X, [os.getpid()])
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    processes = spec["dask_processes"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        data = persisted_dask_data(client, workload, spec["scale"], spec["mode"],
                                   spec["chunk_mb"])
        placement = chunks_by_worker(client, data)
        logger.info("%s (%s): %d chunks of %d rows persisted on %d workers (processes=%s), "
                    "%s per worker", workload.name, spec["mode"], data.numblocks[0],
                    data.chunks[0][0], len(placement), processes, placement)
        pids = [os.getpid()] + [child.pid for child in psutil.Process().children(recursive=True)]
        result = _measure_pids(spec, workload, library, init, data, pids)
        result["n_chunks"] = data.numblocks[0]
        result["chunks_per_worker"] = placement
        return result


def chunks_by_worker(client, data):
    """How many chunks of ``data`` each worker of the cluster holds, in worker order."""
    import common

    counts = common.chunks_per_worker(client, data)
    return [counts.get(worker, 0) for worker in sorted(client.scheduler_info()["workers"])]


def blas_threads(limit):
    """Limit BLAS to ``limit`` threads inside the block; leave it alone when ``limit`` is None."""
    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="blas")


def _measure_pids(spec, workload, library, init, X, pids):
    """Time the fits of ``X`` while measuring the peak memory of the processes ``pids``."""
    logger.info("%s %s (%s): %s rows, %d features, %d components, %s", workload.name, library,
                spec["mode"], f"{X.shape[0]:,}", workload.n_features, workload.n_components,
                workload.covariance_type)
    estimator = spec.get("estimator", "gaussian")
    make_estimator(library, workload, init, 1, estimator)  # imports are not the fit's memory
    with PeakMemory(pids) as memory, blas_threads(spec.get("blas_threads")):
        timing = time_iterations(library, workload, init, X, spec["iters"], spec["repeats"],
                                 estimator)
    result = {**spec, **timing, **memory.report(), "n_samples": int(X.shape[0]),
              "n_processes": len(pids)}
    logger.info("%s %s (%s): %.4f s/iteration, peak %.0f MiB (+%.0f MiB)", workload.name,
                library, spec["mode"], result["seconds_per_iter"], result["peak_mb"],
                result["extra_mb"])
    return result


def run_child(spec, verbose=False):
    """Run :func:`measure` for ``spec`` in a fresh Python process and return its results."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec),
                   "--child-result", path]
        if verbose:
            command.append("--verbose")
        subprocess.run(command, check=True, stdout=sys.stderr)
        with open(path) as result:
            return json.load(result)


def profile_iteration(workload, scale, path):
    """Write a cProfile of one daskgmm EM iteration on ``workload`` to ``path``.

    The data are passed as one block, so the pass runs in this thread (cProfile sees only the
    thread it runs in) with daskgmm's single-threaded BLAS: the profile of one core's work.
    """
    import cProfile
    import pstats

    X, mixture = make_data(workload, scale)
    estimator = make_estimator("daskgmm", workload, initial_parameters(workload, mixture), 1)
    estimator.set_params(block_rows=len(X))
    timed_fit(estimator, X)  # warm-up
    profiler = cProfile.Profile()
    seconds = profiler.runcall(timed_fit, estimator, X)
    with open(path, "w") as output:
        output.write(f"# one daskgmm EM iteration, {workload.name}: {len(X):,} rows, "
                     f"{workload.n_features} features, {workload.n_components} components, "
                     f"{workload.covariance_type}; one block, {seconds:.3f}s\n")
        pstats.Stats(profiler, stream=output).sort_stats("tottime").print_stats(25)
    logger.info("%s: profile of one daskgmm iteration (%.3fs) written to %s", workload.name,
                seconds, path)


# ---------------------------------------------------------------------------- report

def blas_description():
    """Describe the BLAS libraries NumPy and SciPy use (threadpoolctl, else numpy's config)."""
    try:
        from threadpoolctl import threadpool_info

        return [f"{info.get('internal_api')} {info.get('version')} "
                f"({info.get('architecture', '-')}, {info.get('num_threads')} threads, "
                f"{os.path.basename(info.get('filepath', ''))})"
                for info in threadpool_info()]
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"{blas.get('name')} {blas.get('version')}"]


def cpu_model():
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def daskgmm_revision():
    """The git commit daskgmm was measured at, marked dirty if its package has local changes."""
    import daskgmm

    folder = os.path.dirname(os.path.abspath(daskgmm.__file__))
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", folder, "status", "--porcelain", "."],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if changes else "")


def machine_info():
    """The machine, library versions, BLAS and BLAS-related environment of this run."""
    import dask
    import distributed
    import psutil
    import sklearn

    import daskgmm

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": affinity,
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "load_average": os.getloadavg(), "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__,
                     "dask": dask.__version__, "distributed": distributed.__version__,
                     "daskgmm": f"{daskgmm.__version__} at {daskgmm_revision()}"},
        "blas": blas_description(),
        "environment": {name: os.environ.get(name, "(unset)") for name in BLAS_ENVIRONMENT},
    }


def header_lines(info):
    """Format :func:`machine_info` as the lines printed above the table."""
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    environment = " ".join(f"{name}={value}" for name, value in info["environment"].items())
    return [
        f"command: {info['command']}",
        f"machine: {info['cpu']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
        f"{info['memory_gb']:.0f} GiB, load average at start "
        + "/".join(f"{load:.2f}" for load in info["load_average"]),
        f"python {info['python']} on {info['platform']}",
        f"versions: {versions}",
        *[f"blas: {line}" for line in info["blas"]],
        f"environment: {environment}",
    ]


def comparison_rows(results):
    """Pair every daskgmm result with scikit-learn's on the same workload."""
    sklearn = {r["workload"]: r for r in results if r["library"] == "sklearn"}
    rows = []
    for result in (r for r in results if r["library"] == "daskgmm"):
        reference = sklearn.get(result["workload"])
        row = {"workload": result["workload"], "mode": result["mode"], "iters": result["iters"],
               "n_samples": result["n_samples"], "daskgmm": result, "sklearn": reference}
        if reference:
            row["speedup"] = reference["seconds_per_iter"] / result["seconds_per_iter"]
            row["lower_bound_difference"] = abs(reference["lower_bound"] - result["lower_bound"])
            row["means_difference"] = float(np.max(np.abs(
                np.subtract(reference["means"], result["means"]))))
        rows.append(row)
    return rows


TABLE_COLUMNS = (
    ("workload", 8), ("mode", 11), ("rows", 10), ("iters", 5), ("sklearn s/it", 12),
    ("daskgmm s/it", 12), ("ratio", 6), ("sk extra MB", 11), ("dg extra MB", 11),
    ("sk peak MB", 10), ("dg peak MB", 10), ("|d lower bound|", 15),
)


def _table_cells(row):
    """The text of one table row; '-' where scikit-learn was skipped."""
    sk, dg = row["sklearn"], row["daskgmm"]
    missing = "-"
    return [
        row["workload"], row["mode"], f"{row['n_samples']:,}", str(row["iters"]),
        f"{sk['seconds_per_iter']:.4f}" if sk else missing, f"{dg['seconds_per_iter']:.4f}",
        f"{row['speedup']:.2f}" if sk else missing,
        f"{sk['extra_mb']:.0f}" if sk else missing, f"{dg['extra_mb']:.0f}",
        f"{sk['peak_mb']:.0f}" if sk else missing, f"{dg['peak_mb']:.0f}",
        f"{row['lower_bound_difference']:.1e}" if sk else missing,
    ]


def format_table(rows):
    """Format the comparison as a fixed-width text table."""
    lines = ["  ".join(name.rjust(width) for name, width in TABLE_COLUMNS)]
    for row in rows:
        lines.append("  ".join(cell.rjust(width)
                               for cell, (_, width) in zip(_table_cells(row), TABLE_COLUMNS)))
    return lines


def footnotes(results, rows):
    """Explain the columns, how memory was measured and where the Dask cluster ran."""
    methods = sorted({r["memory_method"] for r in results})
    dask_results = [r for r in results if r["mode"] in DASK_MODES]
    lines = [
        "s/it: (best fit with max_iter=iters - best fit with max_iter=1) / (iters - 1), best of "
        f"{results[0]['repeats']}; ratio = sklearn s/it / daskgmm s/it (>1: daskgmm faster).",
        "extra MB: peak RSS during the fits minus RSS before them; peak MB: absolute peak RSS "
        f"(memory measured by {', '.join(methods)}), in MiB.",
        "|d lower bound|: difference of the final lower bounds of the two libraries.",
    ]
    limits = {r["blas_threads"] for r in results if r.get("blas_threads") is not None}
    if limits:
        lines.append(f"scikit-learn ran with BLAS limited to {limits.pop()} thread(s).")
    if dask_results:
        processes = dask_results[0]["dask_processes"]
        where = ("the sum over the client, nanny and worker processes (each one's own peak)"
                 if processes else "the one process (in-process cluster)")
        lines.append(f"dask modes: LocalCluster(n_workers=2, threads_per_worker=1, "
                     f"processes={processes}), X persisted in {dask_results[0]['n_chunks']} "
                     f"chunks before timing (dask: plain persist; dask-placed: dealt evenly by "
                     f"hand); its memory is {where}.")
        lines.extend(f"  {r['workload']} {r['mode']}: chunks per worker as persisted "
                     f"{r['chunks_per_worker']}" for r in dask_results)
    return lines


# ---------------------------------------------------------------------------- main

def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="W1,W2,W3",
                        help="comma-separated subset of " + ",".join(WORKLOADS))
    parser.add_argument("--iters", type=int, default=None,
                        help="EM iterations per timed fit (default: 10 for W1 and W3, 5 for W2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed fits per library; the best is kept (default: 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N by this")
    parser.add_argument("--modes", default="numpy,dask,dask-placed",
                        help="daskgmm inputs: numpy (in memory), dask (plain persist, as users "
                        "write it), dask-placed (persisted evenly by hand); default: all three")
    parser.add_argument("--skip-sklearn", action="store_true", help="time daskgmm only")
    parser.add_argument("--dask-processes", choices=("yes", "no"), default="yes",
                        help="LocalCluster worker processes (default: yes, as LocalCluster "
                        "starts them; no: threads in this process)")
    parser.add_argument("--sklearn-blas-threads", type=int, default=None,
                        help="limit scikit-learn's BLAS threads (default: untouched)")
    parser.add_argument("--chunk-mb", type=float, default=64.0,
                        help="largest Dask chunk in MiB (at least 4 chunks per worker)")
    parser.add_argument("--estimator", choices=("gaussian", "bayesian"), default="gaussian",
                        help="GaussianMixture, or BayesianGaussianMixture in both libraries")
    parser.add_argument("--json", help="also write all results to this JSON file")
    parser.add_argument("--profile", metavar="PATH",
                        help="also write a cProfile of one single-threaded daskgmm iteration "
                        "on the first workload to PATH")
    parser.add_argument("--verbose", action="store_true", help="log daskgmm's iterations too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"--workloads: unknown {sorted(unknown)}; choose from {list(WORKLOADS)}")
    unknown = set(args.modes.split(",")) - {"numpy", *DASK_MODES}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from numpy, "
                     + ", ".join(DASK_MODES))
    if args.iters is not None and args.iters < 2:
        parser.error(f"--iters must be at least 2, got {args.iters}")
    return args


def measurement_specs(args):
    """The child measurements to run, in order: per workload, sklearn then each daskgmm mode."""
    specs = []
    for name in args.workloads.split(","):
        common = {"workload": name, "scale": args.scale, "repeats": args.repeats,
                  "estimator": args.estimator,
                  "iters": args.iters or WORKLOADS[name].default_iters,
                  "dask_processes": args.dask_processes == "yes", "chunk_mb": args.chunk_mb}
        if not args.skip_sklearn:
            specs.append({**common, "library": "sklearn", "mode": "numpy",
                          "blas_threads": args.sklearn_blas_threads})
        specs.extend({**common, "library": "daskgmm", "mode": mode}
                     for mode in args.modes.split(","))
    return specs


def configure_logging(verbose):
    """Progress to stderr; daskgmm's per-iteration log only with ``--verbose``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")
    logging.getLogger("daskgmm").setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv=None):
    """Run every measurement in its own process, then print and save the comparison."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    if args.child:
        result = measure(json.loads(args.child))
        with open(args.child_result, "w") as output:
            json.dump(result, output)
        return
    info = machine_info()
    results = [run_child(spec, args.verbose) for spec in measurement_specs(args)]
    rows = comparison_rows(results)
    print("\n".join(header_lines(info) + [""] + format_table(rows) + [""]
                    + footnotes(results, rows)))
    if args.profile:
        profile_iteration(WORKLOADS[args.workloads.split(",")[0]], args.scale, args.profile)
    if args.json:
        with open(args.json, "w") as output:
            json.dump({"machine": info, "results": results,
                       "comparison": [{k: v for k, v in row.items()
                                       if k not in ("sklearn", "daskgmm")} for row in rows]},
                      output, indent=1)


if __name__ == "__main__":
    main()
