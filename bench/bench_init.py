"""Initialisation: how often each start reaches the best model, and what a start costs.

Quality (the default). For every data set and every seed ``s``, scikit-learn's
``GaussianMixture(K, random_state=s)`` is fitted on the NumPy array and daskgmm's on a Dask
array of the same rows in 8 row chunks (``da.from_array(X, chunks=(n // 8, d))``) on an
in-process ``LocalCluster(n_workers=2, threads_per_worker=1)``, defaults otherwise, once per
``init_params`` asked for. The best lower bound of a data set is the highest over all its fits;
a fit *reaches* it when its lower bound (nats per row) is within the tolerance. The table gives,
per data set, library and init: fits reaching the best within 1e-4 and within 1e-3 nats/row
(EM stops when an iteration gains less than ``tol=1e-3``, so fits of the same optimum may differ
by about that), the mean lower bound, the mean EM iterations, and for daskgmm the passes over
the data its initialisation made and their seconds (from its log line).

Pass costs (``--pass-costs``). Seconds of one pass of each kind the initialisation makes,
against one EM pass, on N=2e6 rows, D=3, K=8 (bench/common.py's mixture), held (persisted) on
a 2-process ``LocalCluster(n_workers=2, threads_per_worker=1)``, or with ``--zarr`` streamed
from a float32 Zarr store; median of ``--repeats`` passes, each with other arguments so no
result is reused.

Usage::

    python bench/bench_init.py                                  # 20 seeds, data sets a, b, c
    python bench/bench_init.py --seeds 3 --datasets a           # smoke run
    python bench/bench_init.py --pass-costs [--zarr PATH]
"""

import argparse
import logging
import re
import statistics
import sys
import time

import numpy as np

DATASETS = {
    "a": "50,000 x 4, K=5, overlapping components",
    "b": "200,000 x 3, K=8 (bench_em's W1 mixture)",
    "c": "100,000 x 10, K=6, anisotropic, unequal sizes",
}
INIT_LINE = re.compile(r"initialization (\S+): (\d+) passes over the data \(([\d.]+)s\)")


# ---------------------------------------------------------------------------- data sets

def _draw(rng, n_rows, weights, means, covariances):
    counts = rng.multinomial(n_rows, weights)
    parts = [rng.multivariate_normal(mean, cov, size=count)
             for count, mean, cov in zip(counts, means, covariances)]
    return rng.permutation(np.concatenate(parts))


def _random_covariances(rng, n_components, n_features, low, high):
    """Covariances with eigenvalues spread between ``low`` and ``high``, random axes."""
    covariances = []
    for _ in range(n_components):
        axes, _ = np.linalg.qr(rng.normal(size=(n_features, n_features)))
        covariances.append(axes @ np.diag(rng.uniform(low, high, n_features)) @ axes.T)
    return np.array(covariances)


def dataset(name):
    """Return ``(X, n_components)`` of data set ``name`` (fixed seeds)."""
    rng = np.random.default_rng([7, ord(name)])
    if name == "a":
        means = rng.normal(scale=1.6, size=(5, 4))
        covariances = _random_covariances(rng, 5, 4, 0.3, 1.5)
        return _draw(rng, 50_000, np.full(5, 0.2), means, covariances), 5
    if name == "b":
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        import common

        weights, means, covariances = common.generating_mixture(3, 8)
        return _draw(rng, 200_000, weights, means, covariances), 8
    weights = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    means = rng.normal(scale=2.5, size=(6, 10))
    covariances = _random_covariances(rng, 6, 10, 0.05, 3.0)
    return _draw(rng, 100_000, weights, means, covariances), 6


# ---------------------------------------------------------------------------- quality

class InitLog(logging.Handler):
    """Keeps the passes and seconds of daskgmm's last "initialization ..." log line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.passes = self.seconds = None

    def emit(self, record):
        match = INIT_LINE.match(record.getMessage())
        if match:
            self.passes, self.seconds = int(match[2]), float(match[3])


def fit_all(X, n_components, seeds, methods, log):
    """Every fit of one data set: a list of dicts (library, init, seed, lower bound, ...)."""
    import dask.array as da
    from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

    from daskgmm import GaussianMixture

    data = da.from_array(X, chunks=(len(X) // 8, X.shape[1]))
    fits = []
    for method in methods:
        for seed in seeds:
            for library in ("scikit-learn", "daskgmm"):
                started = time.perf_counter()
                if library == "daskgmm":
                    model = GaussianMixture(n_components, init_params=method,
                                            random_state=seed).fit(data)
                else:
                    model = SklearnGaussianMixture(n_components, init_params=method,
                                                   random_state=seed).fit(X)
                fits.append({"library": library, "init": method, "seed": seed,
                             "lower_bound": float(model.lower_bound_), "n_iter": model.n_iter_,
                             "seconds": time.perf_counter() - started,
                             "init_passes": log.passes if library == "daskgmm" else None,
                             "init_seconds": log.seconds if library == "daskgmm" else None})
                print(f"  {library} {method} seed {seed}: lower bound "
                      f"{model.lower_bound_:.6f}", file=sys.stderr, flush=True)
    return fits


def table_rows(name, fits):
    best = max(fit["lower_bound"] for fit in fits)
    rows = []
    for key in dict.fromkeys((fit["library"], fit["init"]) for fit in fits):
        group = [fit for fit in fits if (fit["library"], fit["init"]) == key]
        gaps = np.array([best - fit["lower_bound"] for fit in group])
        passes = [fit["init_passes"] for fit in group if fit["init_passes"] is not None]
        init_seconds = [fit["init_seconds"] for fit in group if fit["init_seconds"] is not None]
        rows.append([name, *key, f"{np.sum(gaps <= 1e-4)}/{len(group)}",
                     f"{np.sum(gaps <= 1e-3)}/{len(group)}",
                     f"{np.mean([fit['lower_bound'] for fit in group]):.5f}",
                     f"{np.mean([fit['n_iter'] for fit in group]):.1f}",
                     f"{min(passes)}-{max(passes)}" if passes else "",
                     f"{statistics.median(init_seconds):.3f}" if init_seconds else "",
                     f"{statistics.median(fit['seconds'] for fit in group):.2f}"])
    return best, rows


def quality(args):
    from distributed import Client, LocalCluster

    log = InitLog()
    logging.getLogger("daskgmm").addHandler(log)
    logging.getLogger("daskgmm").setLevel(logging.INFO)
    header = ["data", "library", "init", "best 1e-4", "best 1e-3", "mean LB", "mean iter",
              "init passes", "init s (median)", "fit s (median)"]
    rows, bests = [], {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        for name in args.datasets:
            X, n_components = dataset(name)
            print(f"data set {name}: {DATASETS[name]}", file=sys.stderr, flush=True)
            fits = fit_all(X, n_components, range(args.seeds), args.methods, log)
            bests[name], found = table_rows(name, fits)
            rows += found
    print(f"# python {' '.join(sys.argv)}")
    for name, best in bests.items():
        print(f"# data set {name}: {DATASETS[name]}; best lower bound {best:.6f}")
    print_table(header, rows)


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# ---------------------------------------------------------------------------- pass costs

def _median_seconds(run, repeats):
    run(0)
    times = []
    for i in range(1, repeats + 1):
        started = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def pass_costs(args):
    import dask.array as da
    from distributed import Client, LocalCluster

    import common
    from daskgmm import covariance
    from daskgmm.engine import dask_row_data, map_reduce
    from daskgmm.kernels import em_pass_block, make_log_density
    from daskgmm.kmeans import sample_rows, sample_size
    from daskgmm.responsibilities import (ChosenRowResponsibilities,
                                          NearestCenterResponsibilities,
                                          RandomResponsibilities, initial_stats_block)
    from daskgmm.seeding import trials_block

    n_rows, n_features, n_components = 2_000_000, 3, 8
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        if args.zarr:
            common.write_zarr(args.zarr, n_rows, n_features, n_components, 250_000)
            X, dtype = da.from_zarr(args.zarr), np.float32
        else:
            X = common.balanced_persist(client, lambda: common.lazy_mixture(
                n_rows, n_features, n_components, 250_000))
            dtype = np.float64
        source = dask_row_data(X, None)
        start = common.initial_parameters(n_features, n_components)
        centers = start["means_init"]
        cholesky = covariance.precisions_cholesky_from_precisions(start["precisions_init"],
                                                                  "full")
        reference = centers.mean(axis=0)
        size = sample_size(n_components, n_features)
        rows = np.arange(n_components) * 1000

        def moved(i):  # other arguments for every pass, so that no result is reused
            return centers + 1e-9 * i

        passes = {
            "EM pass (full)": lambda i: map_reduce(source, em_pass_block, make_log_density(
                start["weights_init"], moved(i), cholesky, "full", reference, dtype), "full"),
            f"k-means sample ({size + 1} rows)": lambda i: sample_rows(
                source, size + 1, np.random.default_rng(i)),
            "sample by D^2 to 8 centres (8 rows)": lambda i: sample_rows(
                source, n_components, np.random.default_rng(i), moved(i)),
            "k-means++ trials (7 centres, 4 trials, 4 draws each)": lambda i: map_reduce(
                source, trials_block, i, centers[:7], moved(i)[:4] + 0.5, 4, 1.0),
            "Lloyd = statistics, nearest centre (full)": lambda i: map_reduce(
                source, initial_stats_block, NearestCenterResponsibilities(moved(i)),
                reference, "full"),
            "statistics, random (full)": lambda i: map_reduce(
                source, initial_stats_block, RandomResponsibilities(i, n_components),
                reference, "full"),
            "statistics, chosen rows (full)": lambda i: map_reduce(
                source, initial_stats_block, ChosenRowResponsibilities(
                    rows + i, centers, np.ones(n_components)), reference, "full"),
        }
        seconds = {name: _median_seconds(run, args.repeats) for name, run in passes.items()}
    em = seconds["EM pass (full)"]
    print(f"# python {' '.join(sys.argv)}")
    print(f"# N={n_rows} D={n_features} K={n_components}, "
          f"{'float32 Zarr, streamed' if args.zarr else 'float64, persisted'}, "
          f"median of {args.repeats}")
    print_table(["pass", "seconds", "EM passes"],
                [[name, f"{value:.4f}", f"{value / em:.2f}"] for name, value in seconds.items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per data set (20)")
    parser.add_argument("--datasets", type=lambda s: s.split(","), default=list(DATASETS),
                        help="comma-separated, of: " + "; ".join(
                            f"{k}: {v}" for k, v in DATASETS.items()))
    parser.add_argument("--methods", type=lambda s: s.split(","),
                        default=["kmeans", "k-means++"],
                        help="init_params to compare (kmeans,k-means++)")
    parser.add_argument("--pass-costs", action="store_true",
                        help="time one pass of each kind against an EM pass instead")
    parser.add_argument("--zarr", help="with --pass-costs: write a float32 Zarr store here "
                        "and stream it (default: persisted float64)")
    parser.add_argument("--repeats", type=int, default=7, help="with --pass-costs (7)")
    args = parser.parse_args()
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {sorted(DATASETS)}")
    if args.pass_costs:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        pass_costs(args)
    else:
        quality(args)


if __name__ == "__main__":
    main()
