"""Small deterministic data sets, so the example jobs run on a fresh install with no downloads.

``sample-scene`` is a 256x256 RGB picture with a few textured regions (sky, hills, grass, a sun
and a house) to segment; ``sample-table`` is 6,000 two-column rows from three Gaussian clusters
plus 60 scattered outliers, for the tabular jobs; ``sample-cells`` is a 16-bit three-channel
fluorescence picture of cells (nuclei, cytoplasm, background), written as an OME-Zarr image.
All are the same bytes on every machine.
"""

from pathlib import Path

import numpy as np


def sample_scene(size=256, seed=0):
    """Return the synthetic scene: a uint8 array of shape ``(size, size, 3)``.

    Parameters
    ----------
    size : int, default=256
    seed : int, default=0

    Returns
    -------
    ndarray of shape (size, size, 3), dtype uint8
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    sky = np.stack([90 + 80 * rows, 140 + 60 * rows, 230 - 10 * rows], axis=-1)
    image = sky
    hills = rows > 0.55 + 0.08 * np.sin(2 * np.pi * 1.5 * cols)
    image = np.where(hills[..., None], [70, 120, 60], image)
    grass = rows > 0.78
    blades = 12 * np.sin(2 * np.pi * 40 * cols) * np.sin(2 * np.pi * 25 * rows)
    image = np.where(grass[..., None], np.stack([50 + blades, 160 + blades, 50 + blades], -1),
                     image)
    sun = (rows - 0.2) ** 2 + (cols - 0.78) ** 2 < 0.09**2
    image = np.where(sun[..., None], [245, 200, 60], image)
    house = (rows > 0.5) & (rows < 0.85) & (cols > 0.18) & (cols < 0.45)
    bricks = 20 * ((np.floor(rows * size / 6) + np.floor(cols * size / 12)) % 2)
    image = np.where(house[..., None], np.stack([150 + bricks, 70 + bricks / 2, 50 + 0 * bricks],
                                                -1), image)
    image = image + rng.normal(scale=6.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def sample_table(n_rows=6000, seed=0):
    """Return the synthetic table: float64 rows of shape ``(n_rows + n_rows // 100, 2)``.

    Three elongated clusters hold ``n_rows`` rows; the last ``n_rows // 100`` rows are outliers
    spread uniformly over a wider box (what the ``anomaly`` job should flag).
    """
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 2.0], [2.0, 7.0]])
    shapes = [np.array([[1.0, 0.4], [0.0, 0.6]]), np.array([[0.7, 0.0], [0.3, 1.1]]),
              np.array([[0.5, -0.2], [0.0, 0.9]])]
    sizes = np.full(3, n_rows // 3)
    sizes[: n_rows % 3] += 1
    clusters = [rng.standard_normal((count, 2)) @ shape + centre
                for count, shape, centre in zip(sizes, shapes, centres)]
    outliers = rng.uniform(-8.0, 14.0, size=(n_rows // 100, 2))
    return np.concatenate(clusters + [outliers])


def sample_cells(size=384, n_cells=36, seed=0):
    """Return the synthetic cells: a uint16 array of shape ``(3, size, size)`` (c, y, x).

    Channel 0 is a nuclear stain, bright in each cell's nucleus; channel 1 a cytoplasm stain,
    bright in the rest of the cell; channel 2 autofluorescence, a gentle gradient everywhere.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    centres = rng.uniform(0.08 * size, 0.92 * size, size=(n_cells, 2))
    radii = rng.uniform(0.035, 0.05, size=n_cells) * size
    nearest = np.full((size, size), np.inf)
    for (row, col), radius in zip(centres, radii):
        nearest = np.minimum(nearest, np.hypot(rows - row, cols - col) / radius)
    nucleus, cell = nearest < 0.45, nearest < 1.0
    means = np.stack([np.where(nucleus, 9000.0, np.where(cell, 1500.0, 400.0)),
                      np.where(cell & ~nucleus, 6000.0, np.where(nucleus, 2500.0, 500.0)),
                      800.0 + 400.0 * rows / size])
    pixels = rng.normal(means, 0.08 * means + 60.0)
    return np.clip(np.rint(pixels), 0, 65535).astype(np.uint16)


GENERATORS = {
    "sample-scene": (sample_scene, {"row_chunk": 256}),
    "sample-table": (sample_table, {"row_chunk": 2000}),
    "sample-cells": (sample_cells, {"row_chunk": 128}),
}
# The generated data sets written as OME-Zarr images (axes c, y, x), with their levels.
OME_SAMPLES = {"sample-cells": 3}


def sample_layout(name):
    """Return the ``(shape, dtype)`` of the generated data set ``name``: an OME-Zarr image's
    as the job reads it, images ``(1, y, x, c)``."""
    data = GENERATORS[name][0]()
    if name in OME_SAMPLES:
        return (1,) + data.shape[1:] + data.shape[:1], data.dtype
    return data.shape, data.dtype


def write_sample(name, path, compute=None):
    """Generate the data set ``name`` into a Zarr array at ``path`` (atomically).

    Parameters
    ----------
    name : {'sample-scene', 'sample-table'}
    path : str or Path
    compute : callable, optional
        Passed to :func:`daskgmm.store.write_array`.
    """
    import dask.array as da

    from .store import write_array

    make, options = GENERATORS[name]
    data = make()
    if name in OME_SAMPLES:
        chunks = (data.shape[0], options["row_chunk"], options["row_chunk"])
        _write_ome_sample(name, path, da.from_array(data, chunks=chunks), compute)
        return
    chunks = (options["row_chunk"],) + data.shape[1:]
    write_array(path, da.from_array(data, chunks=chunks), SAMPLE, attrs={"generated_by": name},
                compute=compute)


def _write_ome_sample(name, path, data, compute):
    """Write ``(c, y, x)`` data as an OME-Zarr 0.5 image of :data:`OME_SAMPLES` levels (each
    halving y and x), atomically; its pixel size is 0.5 um."""
    import dask

    from .atomic import atomic_directory
    from .ngff import Axis, write_multiscale_image
    from .store import create_group

    axes = (Axis("c", "channel"), Axis("y", "space", "micrometer"),
            Axis("x", "space", "micrometer"))
    levels = [data[:, ::2**level, ::2**level] for level in range(OME_SAMPLES[name])]
    with atomic_directory(path, SAMPLE) as staging:
        group = create_group(staging, zarr_format=3)
        writes = write_multiscale_image(group, levels, axes, (1.0, 0.5, 0.5), "0.5", name)
        group.attrs.update({"generated_by": name})
        (compute or dask.compute)(writes)


SAMPLE_IMAGE_SIZES = (256, 192, 128)
# The kind of folder generated data is written to, as its ownership marker names it.
SAMPLE = "sample"


def write_sample_images(folder, sizes=SAMPLE_IMAGE_SIZES):
    """Write the sample scene as PNG files into a new ``folder``, atomically.

    One file per size, ``scene-0.png``, ``scene-1.png``, ..., each with its own noise: the input
    of the example batch job (configs/segment-batch.yaml).

    Raises
    ------
    FileExistsError
        If ``folder`` exists.
    """
    from .atomic import atomic_directory
    from .guard import real_path
    from .images import write_png

    folder = real_path(folder)
    if folder.exists():
        raise FileExistsError(f"{str(folder)!r} exists")
    with atomic_directory(folder, SAMPLE) as staging:
        for i, size in enumerate(sizes):
            write_png(Path(staging) / f"scene-{i}.png", sample_scene(size, seed=i))
