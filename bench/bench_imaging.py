"""Segmenting images in the formats of their fields: a 12-band 16-bit GeoTIFF, an OME-Zarr image.

- **GeoTIFF**: ``--side`` x ``--side`` x 12 uint16 (384 MiB at 4096), tiled 256 x 256, written
  by tifffile with GeoTIFF tags: three land covers, each with its own spectrum, plus noise.
  daskgmm runs ``configs/segment.yaml`` with ONLY ``input.path`` and ``output.path`` changed
  (the job reads the file by its tiles, no copy).
- **OME-Zarr** (when ome-zarr-py is installed): ``--side`` x ``--side`` x 3 uint16 cells
  (``daskgmm.sample_data.sample_cells`` upsampled, fresh noise), NGFF 0.4 written by
  ome-zarr-py's ``write_image`` with its pyramid; daskgmm runs ``configs/segment-ome.yaml``
  with only the two paths changed (axes from the metadata, fit on level 1, labels.ome.zarr).

The peer, per input, is one process of scikit-learn: it reads the whole image (tifffile or
zarr), fits ``GaussianMixture`` with the config's model section on the config's number of
random pixels, then labels and scores every pixel in bands of 1024 rows and writes both to Zarr.
Whole commands are timed (start-up, fit, writing); peak memory is the process tree's summed RSS
(20 ms samples). Writing the inputs is not timed.

Usage::

    python bench/bench_imaging.py               # 4096 x 4096
    python bench/bench_imaging.py --side 2048   # quicker
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import common
from bench_segment import SKLEARN_PARAMETERS, measure

logger = logging.getLogger("bench_imaging")
BANDS, TILE, BAND_ROWS = 12, 256, 1024


def write_geotiff(path, side):
    """The 12-band scene, written by tifffile tile row by tile row (never whole in memory)."""
    import tifffile

    rng = np.random.default_rng(common.SEED)
    spectra = rng.integers(5000, 50000, size=(3, BANDS))

    def tiles():
        for top in range(0, side, TILE):
            rows = np.arange(top, top + TILE)[:, None]
            cover = (rows // 512 + np.arange(side)[None, :] // 700) % 3
            band = spectra[cover] + rng.normal(scale=800, size=(TILE, side, BANDS))
            band = np.clip(band, 0, 65535).astype(np.uint16)
            for left in range(0, side, TILE):
                yield band[:, left:left + TILE]

    tags = [(33550, "d", 3, (10.0, 10.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), True)]
    tifffile.imwrite(path, tiles(), shape=(side, side, BANDS), dtype=np.uint16,
                     tile=(TILE, TILE), photometric="minisblack", planarconfig="contig",
                     extratags=tags)


def write_ome(path, side):
    """Cells in 3 channels (c, y, x), NGFF 0.4 written by ome-zarr-py, its pyramid included."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from daskgmm.sample_data import sample_cells

    base = sample_cells()
    index = np.arange(side) * base.shape[1] // side
    pixels = base[:, index[:, None], index[None, :]].astype(np.float64)
    pixels += np.random.default_rng(common.SEED).normal(scale=60.0, size=pixels.shape)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(np.clip(pixels, 0, 65535).astype(np.uint16), group, axes="cyx",
                fmt=FormatV04(), scale_factors=(2, 4))


def read_pixels(path):
    """The whole image as ``(H, W, C)``: a TIFF by tifffile, an OME-Zarr's level 0 by zarr."""
    if str(path).endswith(".tif"):
        import tifffile

        return tifffile.imread(path)
    import zarr

    return np.moveaxis(zarr.open_array(f"{path}/s0", mode="r")[...], 0, -1)


def sklearn_segment(image_path, output_path, config):
    """Read, fit on sampled pixels, label and score every pixel in bands, write Zarr."""
    import zarr
    from sklearn.mixture import GaussianMixture

    pixels = read_pixels(image_path)
    rows = pixels.reshape(-1, pixels.shape[-1])
    model_section = config["model"]
    rng = np.random.default_rng(model_section["random_state"])
    sample = rows[rng.choice(len(rows), size=config["training"]["sample"], replace=False)]
    model = GaussianMixture(**{key: model_section[key] for key in SKLEARN_PARAMETERS
                               if key in model_section})
    model.fit(sample.astype(np.float64))
    height, width = pixels.shape[:2]
    group = zarr.open_group(str(output_path), mode="w")
    labels = group.create_array("labels", shape=(height, width), chunks=(BAND_ROWS, width),
                                dtype="uint8")
    scores = group.create_array("log_likelihood", shape=(height, width),
                                chunks=(BAND_ROWS, width), dtype="float32")
    for top in range(0, height, BAND_ROWS):
        band = rows[top * width:(top + BAND_ROWS) * width].astype(np.float64)
        labels[top:top + BAND_ROWS] = model.predict(band).reshape(-1, width)
        scores[top:top + BAND_ROWS] = model.score_samples(band).reshape(-1, width)


def job_config(folder, shipped, image, name):
    """A shipped config with only ``input.path`` and ``output.path`` changed."""
    config = yaml.safe_load((common.REPO / "configs" / shipped).read_text())
    config["input"]["path"] = str(image)
    config["output"]["path"] = str(Path(folder) / f"{name}-out")
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config


def compare(folder, image, shipped, name, repeats):
    """Time the daskgmm job and the scikit-learn process on one image; a table row each."""
    config_path, config = job_config(folder, shipped, image, name)
    ours = measure(f"daskgmm, configs/{shipped}",
                   [sys.executable, "-m", "daskgmm.run", str(config_path)], repeats)
    child = [sys.executable, str(Path(__file__).resolve()), "--sklearn-child", str(image),
             str(Path(folder) / f"{name}-sklearn.zarr"), json.dumps(config)]
    theirs = measure("scikit-learn, one process", child, repeats)
    return [ours, theirs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sklearn-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sklearn_child:
        image, output, config = args.sklearn_child
        sklearn_segment(image, output, json.loads(config))
        return
    common.log_progress(logger)
    print("\n".join(common.header()))
    with tempfile.TemporaryDirectory(dir=common.REPO / "bench") as folder:
        inputs = [("geotiff", "scene.tif", write_geotiff, "segment.yaml", BANDS)]
        try:
            import ome_zarr  # noqa: F401  (the OME-Zarr input's writer)

            inputs.append(("ome", "cells.ome.zarr", write_ome, "segment-ome.yaml", 3))
        except ImportError:
            print("ome-zarr-py is not installed: the OME-Zarr comparison is left out")
        for name, file_name, write, shipped, channels in inputs:
            image = Path(folder) / file_name
            started = time.perf_counter()
            write(image, args.side)
            logger.info("wrote %s in %.1f s", image, time.perf_counter() - started)
            mib = args.side**2 * channels * 2 / common.MiB
            daskgmm_run, sklearn_run = compare(folder, image, shipped, name, args.repeats)
            print(f"\n{name}: {args.side} x {args.side} x {channels} uint16 ({mib:.0f} MiB of "
                  f"pixels)")
            rows = [{"pipeline": run["pipeline"], "seconds": run["seconds"],
                     "ratio": sklearn_run["seconds"] / run["seconds"],
                     "peak": run["peak_rss"] / common.MiB}
                    for run in (daskgmm_run, sklearn_run)]
            print(common.table(rows, [("pipeline", "pipeline", "s"),
                                      ("seconds", "seconds", ".2f"),
                                      ("ratio", "sklearn s / this s", ".1f"),
                                      ("peak", "peak memory MiB", ".0f")]))


if __name__ == "__main__":
    main()
