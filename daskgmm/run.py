"""``python -m daskgmm.run CONFIG.yaml``: check a job, open its cluster, run its pipeline, report.

Exit status: 0 done; 2 a mistake in the configuration (found before any work starts: the message
names the file and the dotted key); 1 the job failed while running (a one-paragraph message,
the traceback with ``--verbose``); 3 done, but some inputs were skipped (a batch job's
unreadable images, or images with the wrong number of channels: the summary names each with its
reason); 130 interrupted. A failed or interrupted job leaves no output that looks complete and
does not touch an existing one; a batch job (``batch:``) keeps the inputs it finished.
"""

import argparse
import gc
import importlib
import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import dask

from . import object_record, storage
from .atomic import folder_exists
from .cluster import check_cluster, dashboard_link, describe_cluster, open_client
from .config import ConfigError, load_config

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_SKIPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Above every level: without --verbose no record of distributed's (a worker's traceback of a
# failed task among them) reaches stderr; the job reports its own failure.
_DISTRIBUTED_SILENT = logging.CRITICAL + 1

logger = logging.getLogger("daskgmm.run")


def build_parser():
    """The command line of ``python -m daskgmm.run``."""
    parser = argparse.ArgumentParser(
        prog="python -m daskgmm.run",
        description="Run a daskgmm job (segment, select, anomaly, fit, predict) from a YAML file.")
    parser.add_argument("config", help="the job's YAML file, e.g. configs/segment.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a setting, e.g. --set model.n_components=5 (YAML value)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the fit from the checkpoint a failed run left")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the job and print what it would do, then stop")
    parser.add_argument("--verbose", action="store_true",
                        help="debug logging, and the traceback of a failure")
    return parser


@contextmanager
def logging_to_stderr(verbose=False):
    """Send daskgmm's log (per-iteration progress included) and warnings to stderr.

    The loggers are put back as they were on exit, so ``main`` can be called in-process.
    """
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(message)s"
    if verbose:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    loggers = [logging.getLogger(name) for name in ("daskgmm", "py.warnings")]
    saved = [(log.level, log.propagate) for log in loggers]
    logging.captureWarnings(True)
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = False
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for log, (level, propagate) in zip(loggers, saved):
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate


def pipeline_module(name):
    """The module ``daskgmm.pipelines.<name>`` (``prepare`` and ``run`` for a pipeline)."""
    return importlib.import_module(f"daskgmm.pipelines.{name}")


def prepare(args):
    """Load and check the job; return ``(config, pipeline module, prepared job)``.

    Raises
    ------
    ConfigError
        For any mistake, attributed to the job file.
    """
    config = load_config(args.config, args.overrides)
    try:
        check_cluster(config.cluster)
        pipeline = pipeline_module(config.pipeline)
        with storage.using(config.storage):
            prepared = pipeline.prepare(config, resume=args.resume)
    except ConfigError as error:
        raise error.in_file(args.config) from None
    return config, pipeline, prepared


def format_plan(prepared, cluster_line, config_file):
    """The plan printed by ``--dry-run`` (in the job's :func:`~daskgmm.storage.using`)."""
    plan = prepared.plan
    lines = [f"job: {plan.pipeline} ({config_file})", "inputs:"]
    lines += [f"  {line}" for line in plan.inputs]
    lines += ["steps:"] + [f"  {line}" for line in plan.steps]
    output = prepared.config.output
    replace = " (replaced when done)" if _exists(output.path) else ""
    if prepared.config.batch is not None:
        replace = " (a batch store: results are added to it)"
    lines += [f"output: {output.path}{replace}"] + [f"  {line}" for line in plan.outputs]
    lines += [f"cluster: {cluster_line}"]
    urls = {storage.scheme_of(path): path for path in prepared.config.paths().values()
            if storage.is_url(path)}
    lines += [f"credentials for {scheme}://: {storage.credentials_found(url)}"
              for scheme, url in sorted(urls.items())]
    return "\n".join(lines)


def format_summary(summary, seconds):
    """The report printed when a job is done."""
    lines = [f"done in {seconds:.1f}s"]
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            value = f"{len(value)} rows"
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def failure_message(error, config, config_file):
    """One paragraph on a failed job: what failed, what was (not) written, what to do."""
    output = config.output.path
    written = (f"Nothing was written to {output}"
               f"{' (the existing output there is unchanged)' if _exists(output) else ''}")
    if config.batch is not None:
        written = (f"The inputs finished before the failure are recorded in {output}; the next "
                   "run processes the rest")
    message = (f"daskgmm.run: the {config.pipeline} job ({config_file}) failed: "
               f"{_cause(error)}. {written}.")
    if _workers_died(error):
        message += (" Dask workers died running the job, most often for lack of memory: give "
                    "each worker more memory, or store the input in smaller chunks.")
    if _exists(config.checkpoint_path):
        message += (f" The fit so far is saved in {config.checkpoint_path}; rerun with --resume "
                    "to continue from it.")
    return message + " Rerun with --verbose for the traceback."


def check_writable(path, key):
    """Refuse an output whose place cannot be written: a URL's folder (a probe object is
    written and deleted) or the nearest existing folder of a local path."""
    if storage.is_url(path):
        object_record.check_writable(path, key)
        return
    parent = Path(os.path.abspath(path))
    while not parent.exists():
        parent = parent.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{parent} may not be written by this user; choose a path where "
                          f"{path} can be made", key)


def _exists(path):
    """Whether a folder is at ``path``, for a message: a store that cannot be reached says no."""
    try:
        return folder_exists(path)
    except OSError:
        return False


def _cause(error):
    return f"{type(error).__name__}: {str(error).rstrip('.')}"


def _workers_died(error):
    from distributed import KilledWorker

    return isinstance(error, KilledWorker)


def execute(config, pipeline, prepared, verbose=False):
    """Open the cluster and run the pipeline; return its summary.

    Distributed's log (its warnings, and its errors with the tracebacks of failed tasks) reaches
    stderr only if ``verbose``.

    Low-level task fusion is off for the job: a job computes the same source keys in graphs of
    different shapes (the training sample, persisted, then the predictions), and fusion would
    give a key a different task in each, which the scheduler reports as a hazard.
    """
    if prepared.nothing_to_do is not None:  # e.g. a batch with no new input: no cluster needed
        return prepared.nothing_to_do
    log_level = logging.WARNING if verbose else _DISTRIBUTED_SILENT
    with dask.config.set({"optimization.fuse.active": False}), \
            open_client(config.cluster, log_level=log_level) as client:
        print(f"dashboard: {dashboard_link(client)}", flush=True)
        return pipeline.run(prepared)


def main(argv=None):
    """Run a job from the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    with logging_to_stderr(args.verbose):
        return _run(args)


def _failed(args, message):
    """Report a failed job (its traceback too, with --verbose); return the exit status."""
    if args.verbose:
        traceback.print_exc()
    print(message, file=sys.stderr)
    return EXIT_FAILED


def _run(args):
    try:
        config, pipeline, prepared = prepare(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as error:  # a fault met while checking, e.g. a damaged checkpoint
        return _failed(args, f"daskgmm.run: checking the job ({args.config}) failed: "
                             f"{_cause(error)}. Nothing was written. Rerun with --verbose for "
                             "the traceback.")
    if args.dry_run:
        try:
            with storage.using(config.storage):
                check_writable(config.output.path, "output.path")
                print(format_plan(prepared, describe_cluster(config.cluster), args.config))
        except ConfigError as error:
            print(f"error: {error.in_file(args.config)}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK
    print(f"daskgmm {config.pipeline} job: {args.config} -> {config.output.path}", flush=True)
    started = time.perf_counter()
    try:
        with storage.using(config.storage):
            summary = execute(config, pipeline, prepared, args.verbose)
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as error:  # the guard refused a path that changed since the check
        print(f"error: {error.in_file(args.config)}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as error:
        with storage.using(config.storage):  # the message looks at the output's place
            return _failed(args, failure_message(error, config, args.config))
    print(format_summary(summary, time.perf_counter() - started))
    if summary.get("skipped"):
        print(f"{len(summary['skipped'])} input(s) skipped: see 'skipped' above", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


if __name__ == "__main__":
    status = main()
    # The job is over: shutting down without the collector walking its millions of objects
    # takes 0.1 s instead of 1.0 s (bench/README.md). Files are closed and flushed already.
    gc.freeze()
    sys.exit(status)
