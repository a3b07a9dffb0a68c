"""Segmenting a large RGB image: the shipped segment job against a scikit-learn pipeline.

The input is an 8192 x 8192 RGB uint8 Zarr array in 1024 x 1024 x 3 chunks (``--side``,
``--chunk``), written chunk by chunk with zarr's own API and default compressor: the shipped
sample scene (``daskgmm.sample_data.sample_scene``, a few colour regions) made once at
``min(side, 1024)`` pixels, upsampled (nearest) to ``side`` and given fresh noise per chunk, so
memory stays at a few chunks. Writing it is not timed.

- **daskgmm**: ``configs/segment.yaml`` copied with ONLY ``input.path`` and ``output.path``
  changed (loaded and dumped with pyyaml), run as ``python -m daskgmm.run <config>``; the whole
  command is timed, start-up included (fit on 20,000 sampled pixels, labels and log-likelihood
  of every pixel written to Zarr, previews, checkpoint and model).
- **scikit-learn**: one process (this script re-run with ``--sklearn-child``) that reads the
  image, fits ``sklearn.mixture.GaussianMixture`` with the config's model section on 20,000
  random pixels, then ``predict`` and ``score_samples`` every pixel in bands of ``--chunk``
  image rows and writes labels (uint8) and log-likelihood (float32) to a Zarr group with the
  same chunking; the whole command is timed the same way (its start-up includes importing
  bench/common.py, which loads dask: about 0.5 s here). It runs twice, with OpenBLAS's default
  threads and with one BLAS thread (on a busy 2-core machine the default was up to twice as
  slow); the ratio is against the faster run.

Peak memory is the summed RSS of each command's process tree, sampled every 20 ms with psutil.
The two models are fitted on different samples from different initialisations, so their labels
are compared after matching components (the assignment that maximises agreement), reported,
not asserted. Spark MLlib is not run here: it has no Zarr reader, so a Spark pipeline would
first measure a conversion of the image to a table.

Usage::

    python bench/bench_segment.py                             # 8192 x 8192, both pipelines
    python bench/bench_segment.py --side 2048                 # a quick smoke run
    python bench/bench_segment.py --side 16384 --skip-sklearn # the memory check
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common

logger = logging.getLogger("bench_segment")

CONFIG = common.REPO / "configs" / "segment.yaml"
BASE_SIDE, NOISE = 1024, 4.0
SPEEDUP_TARGET, RATE_TARGET, MEMORY_TARGET, MEMORY_SIDE = 10.0, 15.0, 2 * 2**30, 16384
SKLEARN_PARAMETERS = ("n_components", "covariance_type", "max_iter", "tol", "random_state")


# ---------------------------------------------------------------------------- input

def scene_chunk(base, side, rows, cols, seed):
    """The pixels ``rows x cols`` of ``base`` upsampled to ``side``, with fresh noise."""
    scale = base.shape[0] / side
    tile = base[(rows * scale).astype(int)[:, None], (cols * scale).astype(int)[None, :]]
    noise = np.random.default_rng(seed).normal(scale=NOISE, size=tile.shape)
    return np.clip(np.rint(tile + noise), 0, 255).astype(np.uint8)


def write_scene(path, side, chunk):
    """Write the ``side`` x ``side`` RGB scene to a Zarr array at ``path``, a chunk at a time."""
    import zarr

    from daskgmm.sample_data import sample_scene

    base = sample_scene(min(side, BASE_SIDE))
    target = zarr.create_array(store=str(path), shape=(side, side, 3), chunks=(chunk, chunk, 3),
                               dtype="uint8")
    for top in range(0, side, chunk):
        rows = np.arange(top, min(top + chunk, side))
        for left in range(0, side, chunk):
            cols = np.arange(left, min(left + chunk, side))
            target[top:top + len(rows), left:left + len(cols)] = scene_chunk(
                base, side, rows, cols, [common.SEED, top, left])


def job_config(folder, image, output):
    """The shipped segment config with only ``input.path`` and ``output.path`` changed."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    config["input"]["path"], config["output"]["path"] = str(image), str(output)
    path = Path(folder) / "segment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config


# ---------------------------------------------------------------------------- scikit-learn

def sklearn_segment(image_path, output_path, config):
    """Fit on sampled pixels, label and score every pixel in bands, write Zarr; phase seconds."""
    import zarr
    from sklearn.mixture import GaussianMixture

    started = time.perf_counter()
    image = zarr.open_array(image_path, mode="r")
    chunk = image.chunks[0]
    pixels = image[...]
    read = time.perf_counter()
    rows = pixels.reshape(-1, pixels.shape[-1])
    model_section = config["model"]
    rng = np.random.default_rng(model_section["random_state"])
    sample = rows[rng.choice(len(rows), size=min(config["training"]["sample"], len(rows)),
                             replace=False)].astype(np.float64)
    model = GaussianMixture(**{key: model_section[key] for key in SKLEARN_PARAMETERS}).fit(sample)
    fitted = time.perf_counter()
    group = zarr.open_group(str(output_path), mode="w")
    height, width = pixels.shape[:2]
    labels = group.create_array("labels", shape=(height, width), chunks=(chunk, chunk),
                                dtype="uint8")
    scores = group.create_array("log_likelihood", shape=(height, width), chunks=(chunk, chunk),
                                dtype="float32")
    for top in range(0, height, chunk):
        band = pixels[top:top + chunk]
        band_rows = band.reshape(-1, band.shape[-1]).astype(np.float64)
        labels[top:top + chunk] = model.predict(band_rows).astype(np.uint8).reshape(band.shape[:2])
        scores[top:top + chunk] = model.score_samples(band_rows).astype(np.float32).reshape(
            band.shape[:2])
    return {"read": read - started, "fit": fitted - read, "label": time.perf_counter() - fitted,
            "n_iter": int(model.n_iter_)}


def run_sklearn_child(args):
    """The ``--sklearn-child`` entry: run the pipeline, write its phase seconds as JSON."""
    from threadpoolctl import threadpool_limits

    image, output, config, phases, threads = args.sklearn_child
    with threadpool_limits(limits=None if threads == "default" else int(threads), user_api="blas"):
        result = sklearn_segment(image, output, json.loads(Path(config).read_text()))
    Path(phases).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- measurement

def measure(label, command, repeats):
    """Run ``command`` ``repeats`` times: median seconds, largest peak memory, last output."""
    runs = [common.run_sampled(command) for _ in range(repeats)]
    for run in runs:
        if run["returncode"] != 0:
            raise SystemExit(f"{label} failed (exit {run['returncode']}):\n{run['output']}")
    seconds = float(np.median([run["seconds"] for run in runs]))
    logger.info("%s: %.2f s, peak %.0f MiB", label, seconds,
                max(run["peak_rss"] for run in runs) / common.MiB)
    return {"pipeline": label, "seconds": seconds,
            "peak_rss": max(run["peak_rss"] for run in runs), "output": runs[-1]["output"]}


def run_daskgmm(folder, image, repeats):
    """Time ``python -m daskgmm.run`` on the shipped config pointed at ``image``."""
    config_path, config = job_config(folder, image, Path(folder) / "daskgmm-out")
    result = measure("daskgmm, python -m daskgmm.run configs/segment.yaml",
                     [sys.executable, "-m", "daskgmm.run", str(config_path)], repeats)
    logger.info("the job's output:\n%s", result["output"].rstrip())
    lines = [line for line in result["output"].splitlines() if line.strip()]
    result["log_lines"] = len(lines)
    result["shuffle_lines"] = sum("shuffle" in line.lower() for line in lines)
    result["labels"] = Path(config["output"]["path"]) / "result.zarr"
    return result, config


def run_sklearn(folder, image, config, repeats, threads="default"):
    """Time the scikit-learn pipeline in its own process, BLAS limited to ``threads``."""
    config_path, phases = Path(folder) / "config.json", Path(folder) / "phases.json"
    config_path.write_text(json.dumps(config))
    output = Path(folder) / "sklearn-out.zarr"
    result = measure(f"scikit-learn pipeline (one process, BLAS threads {threads})",
                     [sys.executable, str(Path(__file__).resolve()), "--sklearn-child", str(image),
                      str(output), str(config_path), str(phases), str(threads)], repeats)
    result["phases"] = json.loads(phases.read_text())
    result["labels"] = output
    return result


def label_agreement(daskgmm_result, sklearn_result, n_components):
    """Share of pixels with the same label after matching components; mean log-likelihoods."""
    import zarr
    from scipy.optimize import linear_sum_assignment

    ours = zarr.open_group(str(daskgmm_result), mode="r")
    theirs = zarr.open_group(str(sklearn_result), mode="r")
    confusion = np.zeros((n_components, n_components), dtype=np.int64)
    sums = np.zeros(2)
    chunk = theirs["labels"].chunks[0]
    for top in range(0, theirs["labels"].shape[0], chunk):
        a = ours["labels"][0, top:top + chunk].ravel().astype(np.int64)
        b = theirs["labels"][top:top + chunk].ravel().astype(np.int64)
        confusion += np.bincount(a * n_components + b,
                                 minlength=n_components**2).reshape(confusion.shape)
        sums += [ours["log_likelihood"][0, top:top + chunk].sum(dtype=np.float64),
                 theirs["log_likelihood"][top:top + chunk].sum(dtype=np.float64)]
    matched_rows, matched_cols = linear_sum_assignment(-confusion)
    pixels = theirs["labels"].size
    return confusion[matched_rows, matched_cols].sum() / pixels, sums / pixels


# ---------------------------------------------------------------------------- report

COLUMNS = [("pipeline", "pipeline", "s"), ("seconds", "seconds", ".2f"),
           ("rate", "Mpx/s", ".2f"), ("ratio", "sklearn s / this s", "s"),
           ("peak", "peak memory MiB", ".0f"), ("mean_ll", "mean log-lik / px", "s")]


def report_rows(results, reference, pixels):
    """The table's rows, with rates and the ratio to the faster scikit-learn run when it ran."""
    ratios = [None if reference is None else reference["seconds"] / result["seconds"]
              for result in results]
    return [{**result, "rate": pixels / result["seconds"] / 1e6, "ratio": _optional(ratio, ".1f"),
             "peak": result["peak_rss"] / common.MiB,
             "mean_ll": _optional(result.get("mean_ll"), ".4f")}
            for result, ratio in zip(results, ratios)]


def _optional(value, fmt):
    return "-" if value is None else format(value, fmt)


def target_lines(args, daskgmm, sklearn, pixels):
    """Whether the daskgmm job meets the lead's targets in this run."""
    rate = pixels / daskgmm["seconds"] / 1e6
    lines = [f"- rate: {rate:.1f} Mpx/s (target about {RATE_TARGET:g})"]
    if sklearn is not None:
        ratio = sklearn["seconds"] / daskgmm["seconds"]
        lines.append(f"- speed: {ratio:.1f}x the scikit-learn pipeline (target >= "
                     f"{SPEEDUP_TARGET:g}x): {'met' if ratio >= SPEEDUP_TARGET else 'NOT met'}")
    peak = daskgmm["peak_rss"] / 2**30
    verdict = "met" if peak < MEMORY_TARGET / 2**30 else "NOT met"
    where = "" if args.side >= MEMORY_SIDE else f" (the check is at --side {MEMORY_SIDE})"
    lines.append(f"- peak memory: {peak:.2f} GiB (target < {MEMORY_TARGET / 2**30:g} GiB at "
                 f"{MEMORY_SIDE} x {MEMORY_SIDE}){where}: {verdict}")
    return lines


def notes(args, daskgmm, sklearn, agreement):
    lines = [f"image {args.side} x {args.side} x 3 uint8 ({args.side**2 / 1e6:.1f} Mpx), chunks "
             f"{args.chunk} x {args.chunk} x 3; seconds: median of {args.repeats} run(s) of the "
             "whole command; peak memory: largest summed RSS of the process tree (20 ms samples).",
             f"daskgmm job: {daskgmm['log_lines']} lines of output, {daskgmm['shuffle_lines']} "
             "mentioning 'shuffle'."]
    if sklearn is not None:
        phases = sklearn["phases"]
        lines.append("scikit-learn runs twice, with OpenBLAS's default threads (one per core) "
                     "and with one BLAS thread; ratios are against the faster run.")
        lines.append(f"scikit-learn phases (faster run): read {phases['read']:.2f} s, fit "
                     f"{phases['fit']:.2f} s "
                     f"({phases['n_iter']} iterations), predict + score_samples + write "
                     f"{phases['label']:.2f} s (the rest is start-up and imports).")
        lines.append(f"labels agree on {100 * agreement:.2f}% of pixels after matching "
                     "components (different samples and initialisations: reported, not "
                     "asserted).")
    lines.append("Spark MLlib: not run (no Zarr reader; see the script's docstring).")
    return lines


# ---------------------------------------------------------------------------- main

def parse_args(argv=None):
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8192,
                        help="image height and width in pixels (8192; 16384 for the memory check)")
    parser.add_argument("--chunk", type=int, default=1024, help="chunk height and width (1024)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per pipeline; median (1)")
    parser.add_argument("--skip-sklearn", action="store_true", help="run the daskgmm job only")
    parser.add_argument("--workdir", help="folder for the temporary image and outputs "
                        "(default: /tmp)")
    parser.add_argument("--sklearn-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side < 16 or args.chunk < 16:
        parser.error(f"--side and --chunk must be at least 16, got {args.side} and {args.chunk}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def run_all(args, folder):
    """The image, then the daskgmm job and the scikit-learn pipeline run in turn."""
    image = Path(folder) / "image.zarr"
    started = time.perf_counter()
    write_scene(image, args.side, args.chunk)
    # On disk, as a user's store is: not dirty pages the kernel flushes during the first run.
    os.sync()
    logger.info("wrote %s (%.1f s)", image, time.perf_counter() - started)
    daskgmm, config = run_daskgmm(folder, image, args.repeats)
    if args.skip_sklearn:
        return daskgmm, [], None
    sklearn = [run_sklearn(folder, image, config, args.repeats, threads)
               for threads in ("default", 1)]
    agreement, means = label_agreement(daskgmm["labels"], sklearn[-1]["labels"],
                                       config["model"]["n_components"])
    daskgmm["mean_ll"] = means[0]
    for result in sklearn:
        result["mean_ll"] = means[1]
    return daskgmm, sklearn, agreement


def main(argv=None):
    """Write the image, run both pipelines, compare their labels, print the report."""
    args = parse_args(argv)
    if args.sklearn_child:
        return run_sklearn_child(args)
    common.log_progress(logger)
    with tempfile.TemporaryDirectory(prefix="bench-segment-", dir=args.workdir) as folder:
        daskgmm, sklearn, agreement = run_all(args, folder)
    pixels = args.side**2
    reference = min(sklearn, key=lambda result: result["seconds"]) if sklearn else None
    print("\n".join(common.header()))
    print()
    print(common.table(report_rows([daskgmm] + sklearn, reference, pixels), COLUMNS))
    print()
    print("\n".join(target_lines(args, daskgmm, reference, pixels)
                    + notes(args, daskgmm, reference, agreement)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
