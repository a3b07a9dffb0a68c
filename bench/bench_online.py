"""Online EM against batch EM on a Zarr store streamed from disk: quality, time, worker memory.

One run per workload, on a fresh ``LocalCluster(n_workers=2, threads_per_worker=1)`` (worker
processes), the store written with zarr's own API and defaults (float32, ``--chunks`` row
chunks) and opened as the README says, ``da.from_zarr(path)``, read from disk on every pass:

1. **Same start.** Initial parameters ``P0``: k-means on a bounded sample (the store's first
   ``2 * chunk`` rows). Batch EM from ``P0`` to convergence (``tol=1e-3``, at most 300
   iterations) against ``learning_method="online"`` from ``P0`` with its defaults (2 passes).
   The quality is the difference of their mean log-likelihoods on all the rows (a pass each,
   outside the times).
2. **Each with its defaults, initialisation included.** ``GaussianMixture(K, random_state=0)``
   (k-means over the whole store, then EM to ``tol``) against the same with
   ``learning_method="online"`` (initialised from its first waves) for 1 and for 2 passes:
   the speed-up is the ratio of their wall times, each from ``fit``'s call to its return, for
   the fewest passes whose model is within 0.01 nats per row of batch EM's.
3. **Worker memory.** The largest peak RSS of a worker (``VmHWM``, reset before the fit)
   during the online fit, at the workload's size and at twice it (same chunks, so the same
   waves, twice as many).

Workers import daskgmm's kernels and estimators before the measurements (a one-off 0.3 s on a
fresh worker, which the first online fit of a new cluster pays). The rows are draws from
``common.generating_mixture`` with means of spread ``--spread`` (1.5:
components overlapping enough that batch EM needs tens of passes, as on real data; at the
default 4.0 of the other benchmarks it needs 3 or 4 and online EM has nothing to save).

Usage::

    python bench/bench_online.py                        # big (2e7 x 3, K=8) and W2's shape
    python bench/bench_online.py --workloads big --scale 0.05    # a smoke run
"""

import argparse
import logging
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

import common

logger = logging.getLogger("bench_online")

QUALITY_TARGET, SPEEDUP_TARGET = 0.01, 5.0


class Workload(NamedTuple):
    name: str
    n_rows: int
    n_features: int
    n_components: int
    chunk_rows: int


WORKLOADS = {
    "big": Workload("big", 20_000_000, 3, 8, 500_000),
    "W2": Workload("W2", 500_000, 32, 16, 12_500),
}


def import_estimators():
    """Import daskgmm's estimators in a worker, before any measurement: a chained online step's
    tasks carry the estimator, and a fresh worker's first import of it (scikit-learn's base
    classes with it) takes about 0.3 s, once per worker, as common.import_daskgmm does for the
    kernels every pass uses."""
    import daskgmm.mixture  # noqa: F401

    return True


def write_store(path, workload, n_rows, spread):
    """Write the rows to a float32 Zarr array at ``path`` with zarr's defaults, a chunk at a
    time; return the seconds it took."""
    import dask.array as da
    import zarr

    start = time.perf_counter()
    target = zarr.create_array(store=str(path), shape=(n_rows, workload.n_features),
                               chunks=(workload.chunk_rows, workload.n_features),
                               dtype="float32")
    rows = common.lazy_mixture(n_rows, workload.n_features, workload.n_components,
                               workload.chunk_rows, np.float32, spread=spread)
    da.store(rows, target, lock=False)
    return time.perf_counter() - start


def timed_fit(model, X):
    start = time.perf_counter()
    model.fit(X)
    return time.perf_counter() - start


def initial_parameters(X, workload):
    """``P0``: k-means on the first two chunks (in memory), as ``*_init`` arguments."""
    from daskgmm import GaussianMixture

    sample = X[:2 * workload.chunk_rows].compute().astype(np.float64)
    start = GaussianMixture(workload.n_components, random_state=0).partial_fit(sample)
    return {"weights_init": start.weights_, "means_init": start.means_,
            "precisions_init": start.precisions_}


def peak_worker_memory(client, fit):
    """Run ``fit()``; return the largest worker peak RSS (MiB) during it."""
    client.run(common.reset_peak_rss)
    fit()
    return max(client.run(common.peak_rss).values()) / 2 ** 20


def measure(workload, args, directory):
    """Every figure of one workload, on one fresh cluster."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from daskgmm import GaussianMixture

    n_rows = int(workload.n_rows * args.scale)
    workload = workload._replace(chunk_rows=max(500, int(workload.chunk_rows * args.scale)))
    K = workload.n_components
    path, double = f"{directory}/{workload.name}.zarr", f"{directory}/{workload.name}-2.zarr"
    prep = write_store(path, workload, n_rows, args.spread)
    write_store(double, workload, 2 * n_rows, args.spread)
    logger.info("%s: %d rows written in %.1f s", workload.name, n_rows, prep)
    result = {"workload": workload.name, "rows": n_rows, "prep_seconds": prep}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        X = da.from_zarr(path)
        client.run(common.import_daskgmm)
        client.run(import_estimators)
        p0 = initial_parameters(X, workload)
        same_batch = GaussianMixture(K, max_iter=300, **p0)
        same_online = GaussianMixture(K, learning_method="online", **p0)
        result["same_start_batch_s"] = timed_fit(same_batch, X)
        result["same_start_online_s"] = timed_fit(same_online, X)
        result["same_start_batch_iter"] = same_batch.n_iter_
        result["same_start_gap"] = same_batch.score(X) - same_online.score(X)
        logger.info("same start: %s", result)

        batch = GaussianMixture(K, random_state=0, max_iter=300)
        result["batch_s"] = timed_fit(batch, X)
        result["batch_iter"], batch_score = batch.n_iter_, batch.score(X)
        for passes in (1, 2):
            online = GaussianMixture(K, random_state=0, learning_method="online",
                                     max_passes=passes)
            result[f"online_{passes}_s"] = timed_fit(online, X)
            result[f"online_{passes}_steps"] = online.online_steps_
            result[f"online_{passes}_gap"] = batch_score - online.score(X)
        result["memory_mib"] = peak_worker_memory(
            client, lambda: GaussianMixture(K, random_state=0, learning_method="online").fit(X))
        result["memory_double_mib"] = peak_worker_memory(
            client, lambda: GaussianMixture(K, random_state=0, learning_method="online").fit(
                da.from_zarr(double)))
    logger.info("%s", result)
    return result


def report(results):
    print("\n".join(common.header()))
    print("| workload | rows | batch EM from P0: s (iter) | online from P0, 2 passes: s "
          "| gap | batch EM, defaults: s (iter) | online, 1 pass: s (steps) | gap | speed-up "
          "| online, 2 passes: s (steps) | gap | speed-up | worker peak MiB (N, 2N) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: |")
    for r in results:
        cells = [r["workload"], f"{r['rows']:,}",
                 f"{r['same_start_batch_s']:.1f} ({r['same_start_batch_iter']})",
                 f"{r['same_start_online_s']:.1f}", f"{r['same_start_gap']:+.4f}",
                 f"{r['batch_s']:.1f} ({r['batch_iter']})"]
        for passes in (1, 2):
            cells += [f"{r[f'online_{passes}_s']:.1f} ({r[f'online_{passes}_steps']})",
                      f"{r[f'online_{passes}_gap']:+.4f}",
                      f"{r['batch_s'] / r[f'online_{passes}_s']:.1f}x"]
        cells.append(f"{r['memory_mib']:.0f}, {r['memory_double_mib']:.0f}")
        print("| " + " | ".join(cells) + " |")
    print("\ngap: batch EM's mean log-likelihood per row on all the rows minus online EM's "
          "(positive: batch EM's model is better).")
    for r in results:
        good = [passes for passes in (1, 2) if r[f"online_{passes}_gap"] <= QUALITY_TARGET]
        speed = max((r["batch_s"] / r[f"online_{passes}_s"] for passes in good), default=0.0)
        print(f"- {r['workload']}: from the same start within {QUALITY_TARGET} after 2 passes: "
              f"{'yes' if r['same_start_gap'] <= QUALITY_TARGET else 'NO'}; with the defaults, "
              f"within it after {good[0] if good else 'NO'} pass(es), then "
              f"{speed:.1f}x faster than batch EM (target {SPEEDUP_TARGET:.0f}x: "
              f"{'yes' if speed >= SPEEDUP_TARGET else 'NO'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="big,W2")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N")
    parser.add_argument("--spread", type=float, default=1.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    with tempfile.TemporaryDirectory() as directory:
        results = [measure(WORKLOADS[name], args, directory)
                   for name in args.workloads.split(",")]
    report(results)


if __name__ == "__main__":
    main()
