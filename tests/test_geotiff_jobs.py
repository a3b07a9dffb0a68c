"""The segment job on GeoTIFF files as satellite imagery comes: 12 bands of uint16, tiled.

The file is written by tifffile with GeoTIFF tags; the job reads it by its tiles (no copy, peak
memory far under the image's size) and writes the labels as a tiled GeoTIFF with the same
georeferencing, and the tags into ``result.zarr``'s attributes.
"""

import tracemalloc

import numpy as np
import pytest
import zarr

from jobs_helpers import job, run_pipeline

tifffile = pytest.importorskip("tifffile")

SIDE, BANDS = 2048, 12
PIXEL_SCALE = (10.0, 10.0, 0.0)
TIEPOINT = (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)
# GeoKeys: projected, pixel is area, EPSG:32633 (WGS 84 / UTM zone 33N).
GEOKEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
GEO_TAGS = [(33550, "d", 3, PIXEL_SCALE, True), (33922, "d", 6, TIEPOINT, True),
            (34735, "H", len(GEOKEYS), GEOKEYS, True), (42113, "s", 0, "0", True)]


def scene(side=SIDE, bands=BANDS, seed=0):
    """Three land covers in blocks, each with its own 12-band spectrum, plus sensor noise."""
    rng = np.random.default_rng(seed)
    spectra = rng.integers(5000, 50000, size=(3, bands))
    rows, cols = np.arange(side)[:, None], np.arange(side)[None, :]
    cover = (rows // 512 + cols // 700) % 3
    image = np.empty((side, side, bands), np.uint16)
    for top in range(0, side, 256):
        band = spectra[cover[top:top + 256]] + rng.normal(scale=800, size=(256, side, bands))
        image[top:top + 256] = np.clip(band, 0, 65535)
    return image, cover


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    image, cover = scene()
    tifffile.imwrite(path, image, tile=(256, 256), photometric="minisblack",
                     planarconfig="contig", compression="zlib", extratags=GEO_TAGS)
    return path, image.nbytes, cover


@pytest.fixture(scope="module")
def unlimited_client():
    """Workers without a memory limit: nothing is held between passes, every pass reads the
    file again (as on a cluster too small for the image)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, memory_limit=0,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def test_a_large_geotiff_segments_by_tiles_into_a_georeferenced_geotiff(
        geotiff, tmp_path, unlimited_client):
    path, image_bytes, cover = geotiff
    spec = job("segment", path, tmp_path / "out", model={"n_components": 3, "max_iter": 20},
               training={"sample": 20000}, output={"geotiff": True})
    tracemalloc.start()
    try:
        prepared = run_pipeline(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.7 * image_bytes, f"peak {peak / 2**20:.1f} MiB"  # two chunks in flight
    assert "read by tiles" in prepared.sources["input"].kind
    assert not list(tmp_path.glob("*.input.zarr"))  # not copied first
    labels = zarr.open_array(tmp_path / "out" / "result.zarr" / "labels", mode="r")[0]
    with tifffile.TiffFile(tmp_path / "out" / "geotiff" / "image-0000.tif") as written:
        page = written.pages[0]
        assert page.is_tiled and page.shape == (SIDE, SIDE)
        np.testing.assert_array_equal(page.asarray(), labels)
        assert page.tags[33550].value == PIXEL_SCALE
        assert page.tags[33922].value == TIEPOINT
        assert page.tags[34735].value == GEOKEYS
        assert page.tags[42113].value == "255"  # the no-data label, not the input's nodata
    # one component per land cover: the labels are a relabelling of the cover
    pairs = {(int(c), int(l)) for c, l in zip(cover[::17, ::17].ravel(),
                                              labels[::17, ::17].ravel())}
    assert len(pairs) == 3 and len({c for c, _ in pairs}) == 3
    attrs = zarr.open_group(tmp_path / "out" / "result.zarr", mode="r").attrs
    assert attrs["geotiff"][0]["ModelTiepointTag"] == list(TIEPOINT)
    assert attrs["geotiff"][0]["GeoKeyDirectoryTag"] == list(GEOKEYS)


def test_a_batch_of_geotiffs_writes_each_ones_georeferenced_labels(tmp_path, client):
    from batch_helpers import job as batch_job, run_batch

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        image, _ = scene(side=256, bands=4, seed=index)
        tiepoint = (0.0, 0.0, 0.0, 500000.0 + 2560.0 * index, 4000000.0, 0.0)
        tifffile.imwrite(folder / f"tile-{index}.tif", image, tile=(64, 64),
                         photometric="minisblack", planarconfig="contig",
                         extratags=[GEO_TAGS[0], (33922, "d", 6, tiepoint, True), GEO_TAGS[2]])
    run_batch(batch_job(tmp_path, output={"geotiff": True}))
    for index in range(2):
        result = tmp_path / "store" / "results" / f"tile-{index}.tif"
        assert sorted(path.name for path in (result / "geotiff").iterdir()) == ["image-0000.tif"]
        with tifffile.TiffFile(result / "geotiff" / "image-0000.tif") as written:
            assert written.pages[0].tags[33922].value[3] == 500000.0 + 2560.0 * index
        attrs = zarr.open_group(result / "result.zarr", mode="r").attrs
        assert attrs["geotiff"][0]["ModelPixelScaleTag"] == list(PIXEL_SCALE)


@pytest.mark.parametrize("pipeline, section, key", [
    ("fit", {"output": {"geotiff": True}}, "output.geotiff"),
    ("fit", {"output": {"format": "ome-zarr"}}, "output.format"),
    ("segment", {"training": {"level": 1}}, "training.level"),
])
def test_image_format_keys_where_they_do_not_apply(tmp_path, pipeline, section, key):
    from jobs_helpers import images, run_spec, table_rows, write_zarr

    data = images() if pipeline == "segment" else table_rows()
    spec = job(pipeline, write_zarr(tmp_path / "in.zarr", data), tmp_path / "out", **section)
    status, log = run_spec(tmp_path, spec)
    assert status == 2 and key in log
    assert not (tmp_path / "out").exists()


def test_geotiff_labels_in_a_bucket(tmp_path, bucket):
    from jobs_helpers import run_spec

    image, _ = scene(side=256, bands=4)
    tifffile.imwrite(tmp_path / "tile.tif", image, tile=(64, 64), photometric="minisblack",
                     planarconfig="contig", extratags=GEO_TAGS[:3])
    spec = job("segment", tmp_path / "tile.tif", bucket.url("out"), storage=bucket.storage(),
               model={"n_components": 3, "max_iter": 20}, output={"geotiff": True},
               checkpoint={"enabled": False})  # the test server is slow with many objects
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    with bucket.fs.open(f"{bucket.name}/out/geotiff/image-0000.tif", "rb") as file, \
            tifffile.TiffFile(file) as written:
        assert written.pages[0].tags[33922].value == TIEPOINT
        labels = written.pages[0].asarray()
    result = zarr.open_group(bucket.url("out/result.zarr"), mode="r",
                             storage_options=bucket.options())
    np.testing.assert_array_equal(labels, result["labels"][0])
