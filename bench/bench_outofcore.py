"""Out-of-core EM: a Zarr dataset larger than the cluster's memory, streamed every iteration.

The script writes float32 rows (uncompressed, so bytes on disk = bytes of data) to a Zarr array,
starts a ``LocalCluster`` of worker processes with a ``memory_limit`` whose total is smaller than
the data, and fits ``GaussianMixture(K, 'full')`` straight from Zarr (no ``persist``) from explicit
initial parameters, so every Zarr read belongs to an EM pass. It then shows, measured:

* each worker process's peak RSS during the fit (the kernel's ``VmHWM``, reset just before the
  fit, read just after) against its ``memory_limit``;
* that nothing was spilled: no key on a worker's disk, no byte ever written by its spill buffer;
* that every chunk is read exactly once per iteration: the array is opened through a Zarr store
  that counts every ``get`` of a chunk key in the worker processes; the counts are collected
  after each iteration (from daskgmm's per-iteration log record);
* seconds per iteration against the time to read the data once (``from_zarr(...).sum()`` on the
  same cluster) plus the pure kernel time (``em_block`` on in-memory chunks, one core,
  scaled to the chunks per worker).

Usage::

    python bench/bench_outofcore.py                         # 4 GiB, 2 workers x 1 GiB, K=8 full
    python bench/bench_outofcore.py --gib 0.5 --memory-limit 200MiB --iters 2   # smoke run
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dask.utils import format_bytes, parse_bytes

import common

logger = logging.getLogger("bench_outofcore")


def measure(path, n_components, n_iter, n_workers, memory_limit, warm=True):
    """Fit from the Zarr array at ``path`` on a fresh cluster; return every measured number.

    With ``warm``, the workers import daskgmm before anything is timed (see
    :func:`common.import_daskgmm`).
    """
    from distributed import Client, LocalCluster

    X = common.open_counted(path)
    keys = common.chunk_keys(_zarr_array(path))
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      memory_limit=memory_limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        if warm:
            client.run(common.import_daskgmm)
        read = _measure_read(client, X, keys)
        fit = _measure_fit(client, X, keys, n_components, n_iter)
        kernel = kernel_seconds(client, path, fit.pop("model"))
    return {
        "rows": X.shape[0], "features": X.shape[1], "components": n_components,
        "data_bytes": X.nbytes, "disk_bytes": _disk_bytes(path), "chunks": X.numblocks[0],
        "chunk_bytes": X.nbytes / X.numblocks[0], "workers": n_workers,
        "memory_limit": parse_bytes(memory_limit), "warm": warm, "kernel_seconds": kernel,
        **read, **fit,
    }


def _measure_read(client, X, keys, repeats=2):
    """Best time of ``X.sum()`` (one read of the data) and the reads of a chunk per sum."""
    client.run(common.reset_chunk_reads)
    seconds, _ = common.best_time(lambda: X.sum().compute(), repeats)
    least, most = _reads_per_chunk(_collect_reads(client), keys)
    return {"read_seconds": seconds, "reads_per_sum": (least / repeats, most / repeats)}


def _measure_fit(client, X, keys, n_components, n_iter):
    """Fit K full from explicit initial parameters, measuring memory, spills and reads."""
    from daskgmm import GaussianMixture

    client.run(common.reset_chunk_reads)
    client.run(common.reset_peak_rss)
    rss_before = client.run(common.peak_rss)
    processes = client.run(os.getpid)
    snapshots = []
    model = GaussianMixture(n_components, covariance_type="full", tol=0.0, max_iter=n_iter,
                            **common.initial_parameters(X.shape[1], n_components))
    with common.IterationLog(lambda _: snapshots.append(_collect_reads(client))) as log:
        model.fit(X)
    return {
        "rss_before": rss_before, "peak_rss": client.run(common.peak_rss),
        "workers_restarted": processes != client.run(os.getpid),
        "spills": client.run(common.spill_report), "iteration_seconds": log.seconds,
        "reads_per_iteration": _reads_per_iteration(snapshots, keys),
        "lower_bounds": model.lower_bounds_, "model": model,
    }


def _zarr_array(path):
    import zarr

    return zarr.open_array(str(path), mode="r")


def _collect_reads(client):
    """Chunk-read counts summed over all workers."""
    total = {}
    for counts in client.run(common.chunk_reads).values():
        for key, count in counts.items():
            total[key] = total.get(key, 0) + count
    return total


def _reads_per_chunk(counts, keys):
    """(least, most) reads of one chunk; a chunk never read counts 0, an unknown key counts."""
    values = [counts.get(key, 0) for key in keys] + [
        count for key, count in counts.items() if key not in keys]
    return min(values), max(values)


def _reads_per_iteration(snapshots, keys):
    """For each iteration, (least, most) reads of one chunk during that iteration."""
    result, previous = [], {}
    for snapshot in snapshots:
        delta = {key: count - previous.get(key, 0) for key, count in snapshot.items()}
        result.append(_reads_per_chunk(delta, keys))
        previous = snapshot
    return result


def _disk_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def kernel_seconds(client, path, model, sample_chunks=3):
    """Pure kernel time of one pass: ``em_block`` on in-memory chunks, per worker.

    Every worker reads ``sample_chunks`` chunks into memory and times ``em_block`` on them (the
    workers at once, as in a pass, and in the workers' own processes and environment); the mean
    time of a chunk is scaled to the chunks one worker handles in a pass.
    """
    from daskgmm.kernels import make_log_density

    weights, means = model.weights_.astype(float), model.means_.astype(float)
    density = make_log_density(weights, means, model.precisions_cholesky_.astype(float), "full",
                               weights @ means, np.float32)
    seconds = client.run(_time_em_block, str(path), density, sample_chunks)
    n_chunks = _zarr_array(path).cdata_shape[0]
    return float(np.mean(list(seconds.values()))) * n_chunks / len(seconds)


def _time_em_block(path, density, sample_chunks):
    """Mean seconds of ``em_block`` on one in-memory chunk of the array at ``path``."""
    from daskgmm.kernels import em_block

    array = _zarr_array(path)
    rows = array.chunks[0]
    blocks = [array[i * rows:(i + 1) * rows] for i in range(sample_chunks)]
    em_block(blocks[0], None, density, "full")
    return float(np.mean([common.best_time(lambda b=b: em_block(b, None, density, "full"), 2)[0]
                          for b in blocks]))


def report(result):
    """Print the measurements and the checks, as Markdown."""
    limit = result["memory_limit"]
    print(f"data: {result['rows']:,} rows x {result['features']} float32 = "
          f"{format_bytes(result['data_bytes'])} ({format_bytes(result['disk_bytes'])} on disk), "
          f"{result['chunks']} chunks of {format_bytes(result['chunk_bytes'])}; "
          f"K={result['components']} full")
    print(f"cluster: {result['workers']} worker processes x 1 thread, memory_limit "
          f"{format_bytes(limit)} each ({format_bytes(limit * result['workers'])} in total: "
          f"data / total worker memory = "
          f"{result['data_bytes'] / (limit * result['workers']):.2f}); workers "
          f"{'warm (daskgmm imported before the fit)' if result['warm'] else 'cold'}")
    print()
    rows = [{"worker": address, "before": result["rss_before"][address] / common.MiB,
             "peak": peak / common.MiB, "share": peak / limit,
             "keys": result["spills"][address]["keys_on_disk"],
             "spilled": result["spills"][address]["bytes_written"]}
            for address, peak in sorted(result["peak_rss"].items())]
    print(common.table(rows, [("worker", "worker", "s"), ("before", "RSS before fit MiB", ".0f"),
                              ("peak", "peak RSS during fit MiB", ".0f"),
                              ("share", "peak / limit", ".2f"), ("keys", "keys on disk", "d"),
                              ("spilled", "bytes spilled", "d")]))
    print()
    iterations = [{"n": i + 1, "seconds": s, "least": least, "most": most}
                  for i, (s, (least, most)) in
                  enumerate(zip(result["iteration_seconds"], result["reads_per_iteration"]))]
    print(common.table(iterations, [("n", "iteration", "d"), ("seconds", "seconds", ".2f"),
                                    ("least", "reads of a chunk (least)", ".0f"),
                                    ("most", "reads of a chunk (most)", ".0f")]))
    print()
    per_iteration = float(np.median(result["iteration_seconds"]))
    read, kernel = result["read_seconds"], result["kernel_seconds"]
    print(f"median seconds per iteration {per_iteration:.2f}; one read of the data "
          f"(from_zarr(...).sum(), best of 2) {read:.2f} s "
          f"({result['data_bytes'] / read / 2**30:.2f} GiB/s, reads per chunk "
          f"{result['reads_per_sum'][0]:.0f}-{result['reads_per_sum'][1]:.0f}); pure kernel "
          f"{kernel:.2f} s (em_block in memory, per worker)")
    print(f"iteration / read = {per_iteration / read:.2f}; iteration / (read + kernel) = "
          f"{per_iteration / (read + kernel):.2f}")
    for line in checks(result):
        print(line)


def checks(result):
    """The claims of this benchmark, each as 'PASS ...' or 'FAIL ...'."""
    limit = result["memory_limit"]
    claims = {
        "data larger than the cluster's total worker memory":
            result["data_bytes"] > limit * result["workers"],
        "no worker restarted during the fit": not result["workers_restarted"],
        "every worker's peak RSS under its memory_limit":
            all(peak < limit for peak in result["peak_rss"].values()),
        "nothing spilled": all(s == {"keys_on_disk": 0, "bytes_written": 0}
                               for s in result["spills"].values()),
        "every chunk read exactly once per iteration":
            len(result["reads_per_iteration"]) == len(result["iteration_seconds"]) > 0
            and all(reads == (1, 1) for reads in result["reads_per_iteration"]),
    }
    return [f"{'PASS' if ok else 'FAIL'} {claim}" for claim, ok in claims.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="GiB of float32 data (4)")
    parser.add_argument("--features", type=int, default=3, help="D (3)")
    parser.add_argument("--components", type=int, default=8, help="K (8)")
    parser.add_argument("--chunk-mib", type=float, default=32.0, help="MiB per chunk (32)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--memory-limit", default="1GiB", help="per worker (1GiB)")
    parser.add_argument("--iters", type=int, default=3, help="EM iterations (3)")
    parser.add_argument("--path", help="Zarr path to write (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the Zarr data afterwards")
    parser.add_argument("--cold", action="store_true",
                        help="do not import daskgmm on the workers before the fit")
    args = parser.parse_args(argv)
    common.log_progress(logger)
    row_bytes = 4 * args.features
    n_rows = int(args.gib * 2**30) // row_bytes
    chunk_rows = int(args.chunk_mib * common.MiB) // row_bytes
    scratch = None if args.path else tempfile.mkdtemp(prefix="bench-outofcore-")
    path = Path(args.path or scratch) / "X.zarr"
    try:
        start = time.perf_counter()
        common.write_zarr(path, n_rows, args.features, args.components, chunk_rows)
        logger.info("wrote %s in %.1f s", path, time.perf_counter() - start)
        result = measure(path, args.components, args.iters, args.workers, args.memory_limit,
                         warm=not args.cold)
    finally:
        if scratch and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(common.header()))
    print()
    report(result)
    return 0 if all(line.startswith("PASS") for line in checks(result)) else 1


if __name__ == "__main__":
    sys.exit(main())
