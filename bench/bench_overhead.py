"""Scheduler overhead: seconds per EM iteration against the number of chunks, and against N.

Two sweeps on one ``LocalCluster`` (2 workers x 1 thread, worker processes by default), with the
data generated on the workers and persisted (so no I/O is timed) with the chunks dealt evenly to
the workers (``common.balanced_persist``: ``persist`` alone may leave 56% of the chunks on one
worker, and every pass then waits for it, which measures the placement, not daskgmm),
``GaussianMixture(8, 'full')`` from explicit initial parameters, ``tol=0``:

* **chunks**: for each N of ``--n`` (1e7 and 1e8 rows x 3 float64: 240 MB and 2.4 GB), 10 to
  10,000 chunks; chunkings of 1 MB or more and smaller ones in separate tables. For each chunking it
  reports the tasks one iteration runs (counted from the scheduler's task stream of a
  one-iteration fit: the persisted chunks run a worker thread's share to a task), the tasks of a
  pass over the same chunks unpersisted (computed inside the pass, as from Zarr: counted from the
  pass's graph, which is built but not run), the least seconds per iteration, the pure kernel time
  (every worker calls ``daskgmm.kernels.em_block`` on the chunks it holds, in one task of its own,
  single-threaded BLAS, all workers at once: the slowest worker's time, and the mean over the
  workers), the ``em_block`` tasks' own compute time inside the pass (from the same task stream,
  / workers), and the overhead = iteration - kernel, also as a share of the iteration: all of the
  iteration that is not the kernel's arithmetic (graph, scheduling, transfers, the tree
  reduction, the M-step on the client). The claim is checked against the slowest worker's kernel
  time (the least a pass can take on these workers); the share against the mean over workers,
  which also counts the workers' unequal speed as overhead, is printed next to it.
* **rows**: N from 1e5 to 1e8 (``--max-n``) in chunks of about 8 MiB: seconds per iteration and
  per million rows, which is flat where the time is linear in N (checked from 1e7 rows, below
  which fixed per-iteration costs of tens of milliseconds show).

Both curves go to a PNG (``--png``; matplotlib, from the ``bench`` extra: axes, ticks and legends
need text, which a hand-made canvas would not give legibly).

Usage::

    python bench/bench_overhead.py                                   # full sweeps, up to 1e8 rows
    python bench/bench_overhead.py --n 1e6 --chunks 10,100,1000 --max-n 1e6 --iters 2 --rounds 1
    python bench/bench_overhead.py --n 1e8 --rows ""                 # chunk sweep at 1e8 only
"""

import argparse
import logging
import sys
import time

import numpy as np

import common

logger = logging.getLogger("bench_overhead")

N_FEATURES = 3
N_COMPONENTS = 8
SPLIT_EVERY = 8


def measure(client, n_rows, chunk_rows, n_iter, rounds):
    """Seconds per iteration, tasks per iteration and kernel seconds for one chunking.

    ``rounds`` times a fit of ``n_iter`` iterations then ``n_iter`` kernel runs, so that the
    iterations and the kernel runs they are compared with sample the same stretches of a
    shared machine's load.
    """
    X = common.balanced_persist(
        client, lambda: common.lazy_mixture(n_rows, N_FEATURES, N_COMPONENTS, chunk_rows))
    try:
        seconds, kernels = [], []
        for _ in range(rounds):
            fit_seconds, model = _fit(X, n_iter)
            seconds.extend(fit_seconds)
            kernels.extend(_kernel_seconds(client, X, model) for _ in range(n_iter))
        tasks, block_tasks = _tasks_per_iteration(client, X)
        unpersisted_tasks = _unpersisted_pass_tasks(n_rows, chunk_rows)
    finally:
        client.cancel(X)
    iteration = float(np.min(seconds))
    kernel = min(wall for wall, _, _ in kernels)
    kernel_mean = min(mean for _, mean, _ in kernels)
    return {
        "rows": n_rows, "chunks": X.numblocks[0], "chunk_bytes": X.nbytes / X.numblocks[0],
        "tasks": tasks, "unpersisted_tasks": unpersisted_tasks, "seconds": iteration,
        "kernel": kernel, "kernel_mean": kernel_mean, "held": kernels[0][2],
        "block_tasks": block_tasks,
        "overhead": iteration - kernel, "share": (iteration - kernel) / iteration,
        "share_of_mean": (iteration - kernel_mean) / iteration,
        "per_million_rows": iteration / n_rows * 1e6,
    }


def _model(n_iter):
    from daskgmm import GaussianMixture

    return GaussianMixture(N_COMPONENTS, covariance_type="full", tol=0.0, max_iter=n_iter,
                           split_every=SPLIT_EVERY,
                           **common.initial_parameters(N_FEATURES, N_COMPONENTS))


def _fit(X, n_iter):
    with common.IterationLog() as log:
        model = _model(n_iter).fit(X)
    return log.seconds, model


def _tasks_per_iteration(client, X):
    """Tasks the scheduler ran for one EM iteration, and their block tasks' compute seconds.

    From the task stream of a one-iteration fit; the seconds are summed over the block tasks
    (``em_block`` inside the pass) and divided by the number of workers.
    """
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        _model(1).fit(X)
    block_seconds = sum(part["stop"] - part["start"] for task in stream.data
                        if _is_block_task(task["key"]) for part in task["startstops"]
                        if part["action"] == "compute")
    return len(stream.data), block_seconds / len(client.scheduler_info()["workers"])


def _unpersisted_pass_tasks(n_rows, chunk_rows):
    """Tasks of the first EM pass over the same chunks computed inside the pass (not held),
    counted from the pass's graph, which is built but not run."""
    from daskgmm.engine import dask_row_data
    from daskgmm.graph import reduction_graph
    from daskgmm.kernels import em_pass_block

    lazy = common.lazy_mixture(n_rows, N_FEATURES, N_COMPONENTS, chunk_rows)
    top = reduction_graph(dask_row_data(lazy, None), em_pass_block, (None, "full"), SPLIT_EVERY)
    name = top[0].key[0]
    return sum(1 for key in top[0].dask if isinstance(key, tuple) and key[0] == name)


def _is_block_task(key):
    """Keys of a pass's first level, ``(name, 0, task)``, are its ``em_block`` tasks."""
    return (isinstance(key, tuple) and len(key) == 3 and key[0].startswith("daskgmm-pass-")
            and key[1] == 0)


def _kernel_seconds(client, X, model):
    """Kernel time of a pass, wall and mean over workers, and the largest share of the chunks
    one worker holds.

    Every worker calls ``em_block`` on each chunk it holds, in a task of its own (so in the
    thread, and with the memory allocator state, that a pass's tasks get), all workers at once.
    The wall time is the slowest worker's: the least a pass over these chunks, where they are,
    takes with no overhead at all. The mean over workers is what a pass whose work were spread
    perfectly evenly would spend computing; the two differ by the workers' unequal speed
    (noise of a few percent on a shared 2-core machine) and placement (even here).
    """
    from daskgmm.kernels import make_log_density

    weights, means = model.weights_, model.means_
    density = make_log_density(weights, means, model.precisions_cholesky_, "full",
                               weights @ means, X.dtype)
    keys = [key for (key,) in X.__dask_keys__()]
    workers = list(client.scheduler_info()["workers"])
    timings = client.gather([client.submit(_em_block_on_held_chunks, keys, density,
                                           workers=[address], pure=False)
                             for address in workers])
    seconds = [seconds for seconds, _ in timings]
    return max(seconds), sum(seconds) / len(seconds), max(n for _, n in timings) / len(keys)


def _em_block_on_held_chunks(keys, density):
    from distributed import get_worker

    from daskgmm.threads import single_threaded_blas
    from daskgmm.kernels import em_block

    data = get_worker().data
    blocks = [data[key] for key in keys if key in data]
    if not blocks:
        return 0.0, 0
    # As during a pass (map_reduce limits BLAS to one thread; worker processes start so), and
    # as cold as a pass's task: no warm-up call (the fits before this one loaded all code; a
    # whole chunk of 24 MB run first would still be in the 32 MiB L3 cache when timed).
    with single_threaded_blas():
        start = time.perf_counter()
        for block in blocks:
            em_block(block, None, density, "full")
        return time.perf_counter() - start, len(blocks)


def sweep_chunks(client, n_rows, chunk_counts, n_iter, rounds):
    results = []
    for count in chunk_counts:
        results.append(measure(client, n_rows, -(-n_rows // count), n_iter, rounds))
        logger.info("chunks %s", _summary(results[-1]))
    return results


def sweep_rows(client, row_counts, chunk_bytes, n_iter, rounds):
    chunk_rows = int(chunk_bytes // (8 * N_FEATURES))
    results = []
    for n_rows in row_counts:
        results.append(measure(client, n_rows, min(chunk_rows, n_rows), n_iter, rounds))
        logger.info("rows %s", _summary(results[-1]))
    return results


def _summary(result):
    return (f"N={result['rows']:.0e} chunks={result['chunks']} tasks={result['tasks']} "
            f"(unpersisted {result['unpersisted_tasks']}) "
            f"{result['seconds']:.3f} s/it kernel {result['kernel']:.3f} s (mean over workers "
            f"{result['kernel_mean']:.3f} s), em_block tasks "
            f"{result['block_tasks']:.3f} s, "
            f"largest share of chunks on one worker {result['held']:.2f}")


CHUNK_COLUMNS = [("chunks", "chunks", "d"), ("chunk_mb", "chunk MB", ".3g"),
                 ("tasks", "tasks / iteration", "d"),
                 ("unpersisted_tasks", "tasks unpersisted", "d"),
                 ("seconds", "s / iteration", ".3f"),
                 ("kernel", "kernel s", ".3f"), ("kernel_mean", "kernel mean s", ".3f"),
                 ("block_tasks", "em_block tasks s", ".3f"),
                 ("overhead", "overhead s", ".3f"), ("percent", "overhead %", ".1f"),
                 ("percent_of_mean", "overhead % (mean)", ".1f")]
ROW_COLUMNS = [("rows", "rows (N)", ",d"), ("chunks", "chunks", "d"),
               ("tasks", "tasks / iteration", "d"), ("seconds", "s / iteration", ".3f"),
               ("per_million_rows", "s / 1e6 rows", ".4f"), ("kernel", "kernel s", ".3f"),
               ("block_tasks", "em_block tasks s", ".3f"), ("percent", "overhead %", ".1f")]


def _table_rows(results):
    return [{**r, "chunk_mb": r["chunk_bytes"] / 1e6, "percent": 100 * r["share"],
             "percent_of_mean": 100 * r["share_of_mean"]} for r in results]


def checks(by_chunks, by_rows):
    """The claims, each 'PASS ...' or 'FAIL ...'; ``by_chunks`` maps N to its chunk sweep."""
    claims = {}
    for n_rows, results in by_chunks.items():
        claims.update(_chunk_claims(n_rows, results))
    large = [r for r in by_rows if r["rows"] >= 1e7]
    if len(large) >= 2:
        rows = np.log([r["rows"] for r in large])
        slope = np.polyfit(rows, np.log([r["seconds"] for r in large]), 1)[0]
        claims[f"seconds per iteration linear in N from 1e7 rows (log-log slope {slope:.2f})"] = (
            0.85 <= slope <= 1.15)
    return [f"{'PASS' if ok else 'FAIL'} {claim}" for claim, ok in claims.items()]


def _chunk_claims(n_rows, results):
    """Tasks at most linear in the chunks, and overhead under 10% at chunks of 1 MB or more.

    A pass runs at most one first-level task per chunk (held chunks run a thread's share to a
    task, small unheld ones several to a task, so fewer) and combine tasks over those, each
    level at most 1/SPLIT_EVERY of the one below: at most
    chunks * SPLIT_EVERY / (SPLIT_EVERY - 1) + 1 tasks, linear in the chunks. Checked for the
    persisted chunks (run) and the same chunks unpersisted (the graph counted).
    """
    per_chunk_bound = SPLIT_EVERY / (SPLIT_EVERY - 1)
    counts = [(r["chunks"], r[column]) for r in results
              for column in ("tasks", "unpersisted_tasks")]
    linear = all(tasks <= per_chunk_bound * chunks + 1 for chunks, tasks in counts)
    most = max(results, key=lambda r: r["chunks"])
    highest = max(tasks / chunks for chunks, tasks in counts)
    big = [r for r in results if r["chunk_bytes"] >= 1e6]
    shares = ", ".join(f"{100 * r['share']:.1f}%" for r in big)
    return {
        f"N={n_rows:.0e}: tasks per iteration at most linear in the chunks (at most "
        f"{per_chunk_bound:.3f} per chunk + 1 at every chunking, persisted or not; observed at "
        f"most {highest:.3f} per chunk; for {most['chunks']} chunks {most['tasks']} tasks "
        f"persisted, {most['unpersisted_tasks']} unpersisted)": linear,
        f"N={n_rows:.0e}: overhead under 10% of the iteration at chunks of 1 MB or more "
        f"({shares})": bool(big) and all(r["share"] < 0.10 for r in big),
    }


def chunk_tables(by_chunks):
    """One table per N and side of 1 MB per chunk."""
    tables = []
    for n_rows, results in by_chunks.items():
        for title, keep in (("chunks of 1 MB or more", lambda r: r["chunk_bytes"] >= 1e6),
                            ("chunks under 1 MB", lambda r: r["chunk_bytes"] < 1e6)):
            chosen = [r for r in results if keep(r)]
            if chosen:
                tables.append(f"N={n_rows:,} rows, {title}:\n"
                              + common.table(_table_rows(chosen), CHUNK_COLUMNS))
    return tables


def plot(by_chunks, by_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n_rows, results in by_chunks.items():
        chunks = [r["chunks"] for r in results]
        left.loglog(chunks, [r["seconds"] for r in results], "o-", label=f"N={n_rows:.0e} s / it")
        left.loglog(chunks, [r["kernel"] for r in results], "s--", label=f"N={n_rows:.0e} kernel")
        left.loglog(chunks, [max(r["overhead"], 1e-4) for r in results], "^:",
                    label=f"N={n_rows:.0e} overhead")
    left.set_xlabel("chunks")
    left.set_ylabel("seconds")
    left.legend(loc="upper left", fontsize=7)
    left.set_title("per iteration against chunks")
    if by_rows:
        _plot_rows(right, by_rows)
    figure.suptitle(f"daskgmm, K={N_COMPONENTS} full, D={N_FEATURES}, float64")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _plot_rows(right, by_rows):
    rows = [r["rows"] for r in by_rows]
    right.loglog(rows, [r["seconds"] for r in by_rows], "o-", label="s / iteration")
    right.loglog(rows, [r["kernel"] for r in by_rows], "s--", label="kernel (em_block)")
    scale = by_rows[-1]["seconds"] / by_rows[-1]["rows"]
    right.loglog(rows, [scale * n for n in rows], ":", color="grey", label="linear")
    right.set_xlabel("rows N (chunks of ~8 MiB)")
    right.set_ylabel("seconds")
    right.legend(loc="upper left", fontsize=8)
    right.set_title("per iteration against N")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", "--n-rows", dest="n_rows", default="1e7,1e8",
                        help="the Ns of the chunk sweep (1e7,1e8)")
    parser.add_argument("--chunks", default="10,30,100,300,1000,3000,10000",
                        help="chunk counts of the chunk sweep")
    parser.add_argument("--rows", default="1e5,3e5,1e6,3e6,1e7,3e7,1e8",
                        help="row counts of the N sweep")
    parser.add_argument("--max-n", type=float, default=1e8, help="largest N of the N sweep")
    parser.add_argument("--chunk-mib", type=float, default=8.0, help="chunk size of the N sweep")
    parser.add_argument("--iters", type=int, default=5,
                        help="timed iterations, and kernel runs, per round (5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of iterations then kernel runs per point (3)")
    parser.add_argument("--processes", choices=["yes", "no"], default="yes",
                        help="worker processes (yes) or threads in this process (no)")
    parser.add_argument("--png", default="bench_overhead.png", help="where to draw the curves")
    args = parser.parse_args(argv)
    common.log_progress(logger)
    from distributed import Client, LocalCluster

    chunk_counts = [int(c) for c in args.chunks.split(",")]
    row_counts = [int(float(n)) for n in args.rows.split(",") if n and float(n) <= args.max_n]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=args.processes == "yes",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(common.import_daskgmm)
        by_chunks = {int(float(n)): sweep_chunks(client, int(float(n)), chunk_counts, args.iters,
                                                 args.rounds)
                     for n in args.n_rows.split(",")}
        by_rows = sweep_rows(client, row_counts, args.chunk_mib * common.MiB, args.iters,
                             args.rounds)
    print("\n".join(common.header()))
    print(f"cluster: LocalCluster(n_workers=2, threads_per_worker=1, "
          f"processes={args.processes == 'yes'}); K={N_COMPONENTS} full, D={N_FEATURES}, "
          f"float64, split_every={SPLIT_EVERY}; per point {args.rounds} rounds of a fit of "
          f"{args.iters} iterations then {args.iters} kernel runs, least of the iterations and "
          "of the kernel runs (the machine is shared: the least is the measurement least "
          "disturbed by other processes; the rounds let both sample the same stretches of load)")
    print()
    print("\n\n".join(chunk_tables(by_chunks)))
    print()
    if by_rows:
        print(common.table(_table_rows(by_rows), ROW_COLUMNS))
        print()
    lines = checks(by_chunks, by_rows)
    print("\n".join(lines))
    if args.png:
        plot(by_chunks, by_rows, args.png)
        print(f"curves: {args.png}")
    return 0 if all(line.startswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
