"""Small deterministic data sets, so the example jobs run on a fresh install with no downloads.

``sample-scene`` is a 256x256 RGB picture with a few textured regions (sky, hills, grass, a sun
and a house) to segment; ``sample-table`` is 6,000 two-column rows from three Gaussian clusters
plus 60 scattered outliers, for the tabular jobs. Both are the same bytes on every machine.
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


GENERATORS = {
    "sample-scene": (sample_scene, {"row_chunk": 256}),
    "sample-table": (sample_table, {"row_chunk": 2000}),
}


def sample_layout(name):
    """Return the ``(shape, dtype)`` of the generated data set ``name``."""
    data = GENERATORS[name][0]()
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
    chunks = (options["row_chunk"],) + data.shape[1:]
    write_array(path, da.from_array(data, chunks=chunks), SAMPLE, attrs={"generated_by": name},
                compute=compute)


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
