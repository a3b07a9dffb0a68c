"""daskgmm.tiff: TIFF files written by tifffile read back lazily, chunk by chunk, and GeoTIFFs
written band by band with their georeferencing kept bit for bit."""

import io
import json
import pickle
import tracemalloc

import dask
import numpy as np
import pytest
import tifffile

from daskgmm import tiff

RNG = np.random.default_rng(7)
# Small enough that every test image spans several chunks, so edges and offsets are exercised.
SMALL_CHUNK_BYTES = 16 * 2**10


def _pixels(shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# name: (written array, tifffile.imwrite arguments, the (n, H, W, C) array expected back)
CASES = {
    "uint8-rgb-tiled": ((70, 90, 3), np.uint8, {"tile": (32, 32), "photometric": "rgb"},
                        lambda a: a[None]),
    "uint16-12-contig": ((70, 90, 12), np.uint16,
                         {"tile": (32, 32), "photometric": "minisblack", "planarconfig": "contig"},
                         lambda a: a[None]),
    "uint16-12-separate": ((12, 70, 90), np.uint16,
                           {"tile": (32, 32), "photometric": "minisblack",
                            "planarconfig": "separate"},
                           lambda a: np.moveaxis(a, 0, -1)[None]),
    "float32-striped": ((101, 67), np.float32, {"rowsperstrip": 17}, lambda a: a[None, ..., None]),
    "int16-big-endian": ((45, 38), np.int16, {"byteorder": ">", "tile": (16, 16)},
                         lambda a: a[None, ..., None]),
    "int32-zlib": ((50, 40, 2), np.int32,
                   {"tile": (16, 16), "compression": "zlib", "photometric": "minisblack",
                    "planarconfig": "contig"},
                   lambda a: a[None]),
    "stack-3-pages": ((3, 40, 50), np.uint16, {"photometric": "minisblack"},
                      lambda a: a[..., None]),
    "bigtiff": ((40, 50, 2), np.float64,
                {"bigtiff": True, "photometric": "minisblack", "planarconfig": "contig"},
                lambda a: a[None]),
}


def _write(path, data, **kwargs):
    tifffile.imwrite(path, data, **kwargs)
    return str(path)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(tiff, "CHUNK_BYTES", SMALL_CHUNK_BYTES)


@pytest.mark.parametrize("name", CASES)
def test_round_trip(tmp_path, small_chunks, name):
    shape, dtype, kwargs, expected = CASES[name]
    data = _pixels(shape, dtype)
    path = _write(tmp_path / f"{name}.tif", data, **kwargs)
    layout = tiff.tiff_layout(path)
    array = tiff.open_tiff(path, layout)
    want = expected(data)
    assert layout.shape == want.shape == array.shape
    assert array.chunksize == layout.chunks and array.dtype == layout.dtype
    assert layout.dtype == np.dtype(dtype).newbyteorder("=")
    assert layout.dtype.isnative
    values = array.compute()
    assert values.dtype.isnative
    np.testing.assert_array_equal(values, want)


def test_bilevel_reads_as_uint8(tmp_path):
    data = RNG.random((30, 41)) > 0.5
    path = _write(tmp_path / "bilevel.tif", data)
    layout = tiff.tiff_layout(path)
    assert layout.dtype == np.uint8
    np.testing.assert_array_equal(tiff.open_tiff(path, layout).compute()[0, ..., 0], data)


@pytest.mark.parametrize("tiles, chunk", [(1, (1, 64, 64, 12)), (4, (1, 128, 128, 12)),
                                          (6, (1, 192, 128, 12)), (10_000, (1, 300, 500, 12))])
@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_chunks_are_whole_tiles(tmp_path, monkeypatch, tiles, chunk, planarconfig):
    data = np.zeros((300, 500, 12) if planarconfig == "contig" else (12, 300, 500), np.uint16)
    path = _write(tmp_path / "tiled.tif", data, tile=(64, 64), photometric="minisblack",
                  planarconfig=planarconfig)
    monkeypatch.setattr(tiff, "CHUNK_BYTES", tiles * 64 * 64 * 12 * 2)
    assert tiff.tiff_layout(path).chunks == chunk


@pytest.mark.parametrize("strips, rows", [(1, 17), (3, 51), (1000, 101)])
def test_chunks_are_whole_strips(tmp_path, monkeypatch, strips, rows):
    path = _write(tmp_path / "striped.tif", np.zeros((101, 67), np.float32), rowsperstrip=17)
    monkeypatch.setattr(tiff, "CHUNK_BYTES", strips * 17 * 67 * 4)
    assert tiff.tiff_layout(path).chunks == (1, rows, 67, 1)


def test_default_chunks_near_chunk_bytes(tmp_path):
    path = _write(tmp_path / "wide.tif", np.zeros((512, 8192), np.float32), tile=(256, 256))
    _, rows, cols, channels = tiff.tiff_layout(path).chunks
    assert rows % 256 == 0 and cols % 256 == 0
    assert tiff.CHUNK_BYTES / 2 <= rows * cols * channels * 4 <= tiff.CHUNK_BYTES


def test_lazy_one_task_per_chunk(tmp_path, small_chunks, monkeypatch):
    data = _pixels((70, 90, 3), np.uint8)
    path = _write(tmp_path / "lazy.tif", data, tile=(32, 32), photometric="rgb")
    calls = []
    read_region = tiff.read_region
    monkeypatch.setattr(tiff, "read_region", lambda *args: calls.append(args[2])
                        or read_region(*args))
    layout = tiff.tiff_layout(path)
    array = tiff.open_tiff(path, layout)
    assert calls == []
    assert len(array.__dask_graph__()) == np.prod(array.numblocks) > 1
    assert array.name == tiff.open_tiff(path, layout).name
    rows, cols = layout.chunks[1:3]
    stop = min(2 * rows, data.shape[0])
    np.testing.assert_array_equal(array.blocks[0, 1, 0, 0].compute()[0], data[rows:stop, :cols])
    assert calls == [(0, (rows, stop), (0, cols))]


def test_graph_pickles(tmp_path, small_chunks):
    data = _pixels((3, 40, 50), np.int16)
    path = _write(tmp_path / "stack.tif", data, photometric="minisblack")
    array = pickle.loads(pickle.dumps(tiff.open_tiff(path, tiff.tiff_layout(path))))
    np.testing.assert_array_equal(array.compute()[..., 0], data)


def test_reads_a_url(small_chunks):
    fsspec = pytest.importorskip("fsspec")
    data = _pixels((60, 70, 3), np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, tile=(16, 16), photometric="rgb")
    url = "memory://daskgmm-test-tiff/image.tif"
    with fsspec.open(url, "wb") as file:
        file.write(buffer.getvalue())
    try:
        layout = tiff.tiff_layout(url, {})
        np.testing.assert_array_equal(tiff.open_tiff(url, layout).compute()[0], data)
        assert tiff.tiff_file_error(url, {}) is None
    finally:
        fsspec.filesystem("memory").rm(url)


# A UTM zone 11N GeoTIFF as GDAL writes it: scale, tiepoint, keys and their ASCII and double
# parameters, and a no-data value.
GEO_KEYS = (1, 1, 0, 5, 1024, 0, 1, 1, 1025, 0, 1, 1, 2057, 34736, 1, 0, 3072, 0, 1, 32611,
            3073, 34737, 22, 0)
GEO_TAGS = [(33550, "d", 3, (30.0, 30.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 440720.0, 3751320.0, 0.0), True),
            (34735, "H", len(GEO_KEYS), GEO_KEYS, True),
            (34736, "d", 1, (6378137.0,), True),
            (34737, "s", 0, "WGS 84 / UTM zone 11N|", True),
            (42113, "s", 0, "0", True)]
TRANSFORM = (0.5, 0.0, 0.0, 100.0, 0.0, -0.5, 0.0, 200.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
TRANSFORM_TAGS = [(34264, "d", 16, TRANSFORM, True), (34735, "H", 4, (1, 1, 0, 0), True)]


def _tags(path):
    with tifffile.TiffFile(path) as file:
        page = file.pages[0]
        return page.is_tiled, {tag.code: (tag.dtype, tag.value) for tag in page.tags
                               if tag.code in {c for c, _ in tiff.GEOTIFF_TAGS.values()}}


def _bands(data, rows):
    for top in range(0, data.shape[0], rows):
        yield data[top:top + rows]


@pytest.mark.parametrize("extratags", [GEO_TAGS, TRANSFORM_TAGS], ids=["tiepoint", "transform"])
def test_georeferencing_round_trip(tmp_path, extratags):
    data = _pixels((100, 130), np.float32)
    source = _write(tmp_path / "source.tif", data, extratags=extratags)
    geo = tiff.tiff_layout(source).georeferencing
    assert set(geo) == {name for name, (code, _) in tiff.GEOTIFF_TAGS.items()
                        if code in {tag[0] for tag in extratags}}
    assert json.loads(json.dumps(geo)) == geo
    for code, _, _, value, _ in extratags:
        name = next(name for name, (c, _) in tiff.GEOTIFF_TAGS.items() if c == code)
        assert geo[name] == (value if isinstance(value, str) else list(value))

    written = tmp_path / "written.tif"
    tiff.write_geotiff(written, _bands(data, 32), data.shape, data.dtype, geo, tile=(32, 48))
    tiled, tags = _tags(written)
    assert tiled and tags == _tags(source)[1]
    with tifffile.TiffFile(written) as file:
        assert file.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(file.asarray(), data)
    assert tiff.tiff_layout(written).georeferencing == geo


def test_write_geotiff_to_file_object_in_multi_tile_bands(monkeypatch):
    data = _pixels((70, 50), np.uint16)
    monkeypatch.setattr(tiff, "BIGTIFF_BYTES", 0)
    buffer = io.BytesIO()
    tiff.write_geotiff(buffer, _bands(data, 64), data.shape, data.dtype, tile=(16, 16))
    with tifffile.TiffFile(io.BytesIO(buffer.getvalue())) as file:
        assert file.is_bigtiff and file.byteorder == "<" and file.pages[0].tile == (16, 16)
        np.testing.assert_array_equal(file.asarray(), data)


@pytest.mark.parametrize("bands, message", [
    (lambda d: [d[:32], d[32:40], d[40:]], "whole tile rows"),
    (lambda d: [d[:, :-1]], "full-width"),
    (lambda d: [d[:64], d[:32]], "shape \\(32, 50\\) at row 64"),
    (lambda d: [d[:64]], "64 rows of an image of 70"),
])
def test_write_geotiff_refuses_wrong_bands(tmp_path, bands, message):
    data = np.zeros((70, 50), np.uint8)
    with pytest.raises(ValueError, match=message):
        tiff.write_geotiff(tmp_path / "bad.tif", bands(data), data.shape, data.dtype,
                           tile=(32, 32))


def test_write_geotiff_refuses_unknown_tags(tmp_path):
    with pytest.raises(ValueError, match="ModelPixelScal"):
        tiff.write_geotiff(tmp_path / "bad.tif", [np.zeros((16, 16))], (16, 16), np.float64,
                           {"ModelPixelScal": [1.0, 1.0, 0.0]})


def test_not_a_tiff_names_the_path(tmp_path):
    path = tmp_path / "text.tif"
    path.write_bytes(b"this is not a TIFF file at all")
    with pytest.raises(ValueError, match="text.tif"):
        tiff.tiff_layout(path)
    assert "not a readable TIFF" in tiff.tiff_file_error(path)


def test_refuses_complex_pixels(tmp_path):
    path = _write(tmp_path / "complex.tif", np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError, match="complex64.*complex.tif|complex.tif.*complex64"):
        tiff.tiff_layout(path)


def test_refuses_both_samples_and_channels(tmp_path):
    path = _write(tmp_path / "both.ome.tif", np.zeros((2, 40, 48, 3), np.uint8),
                  photometric="rgb", metadata={"axes": "CYXS"})
    with pytest.raises(ValueError, match="both.ome.tif.*samples"):
        tiff.tiff_layout(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_file_error(tmp_path, small_chunks, compression):
    data = _pixels((120, 120, 3), np.uint16)
    path = _write(tmp_path / "good.tif", data, tile=(32, 32), compression=compression,
                  photometric="rgb")
    assert tiff.tiff_file_error(path) is None
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes((tmp_path / "good.tif").read_bytes()[:60_000])
    assert tiff.tiff_layout(truncated).shape == (1, 120, 120, 3)
    assert "not a readable TIFF" in tiff.tiff_file_error(truncated)


def test_reduction_memory_stays_per_chunk(tmp_path):
    image = (np.arange(2048 * 2048 * 12, dtype=np.uint32) % 65521).astype(np.uint16)
    image = image.reshape(2048, 2048, 12)
    path = _write(tmp_path / "large.tif", image, tile=(256, 256), photometric="minisblack",
                  planarconfig="contig")
    expected, image_bytes = int(image.sum(dtype=np.uint64)), image.nbytes
    del image
    array = tiff.open_tiff(path, tiff.tiff_layout(path))
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="threads", num_workers=2):
            total = int(array.sum(dtype=np.uint64).compute())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == expected
    assert peak < 0.5 * image_bytes
