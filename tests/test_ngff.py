"""daskgmm.ngff against ome-zarr-py (a test dependency only): its writer makes the inputs, its
reader checks the outputs."""

import functools
import http.server
import json
import shutil
import threading

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from zarr.storage import LocalStore, StorePath

from daskgmm.ngff import (Axis, is_hcs, label_metadata, labels_group_metadata, nearest_pyramid,
                          ngff_attrs, ngff_version, plate_fields, read_ngff_image,
                          write_multiscale_image)

pytest.importorskip("ome_zarr", reason="ome-zarr-py writes the tests' inputs and reads outputs")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Label, Labels, Multiscales, Reader  # noqa: E402
from ome_zarr.writer import (write_image, write_plate_metadata,  # noqa: E402
                             write_well_metadata)

VERSIONS = ("0.4", "0.5")
FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}
# NGFF orders axes t, c, then space (z, y, x): the channel axis can only be in these places.
IMAGE_AXES = ("yx", "cyx", "czyx", "tcyx", "tczyx")
SHAPES = {"yx": (64, 48), "cyx": (2, 64, 48), "czyx": (2, 3, 64, 48), "tcyx": (2, 2, 64, 48),
          "tczyx": (2, 2, 3, 64, 48), "tzyx": (2, 3, 64, 48)}
PIXEL_SIZE = {"t": 5.0, "c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25}
COLOURS = {1: (255, 0, 0, 255), 2: (0, 128, 255, 128), 3: (10, 20, 30, 40)}


def reference_image(path, version, axes, **metadata):
    """An image that ome-zarr-py writes at ``path``: 3 levels, y and x halved twice."""
    fmt = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = np.random.default_rng(0).integers(0, 200, SHAPES[axes]).astype(np.uint16)
    write_image(data, group, axes=axes, fmt=fmt, scale_factors=(2, 4),
                scale={name: PIXEL_SIZE[name] for name in axes}, **metadata)
    return group, data


def reader_nodes(location):
    return list(Reader(parse_url(str(location)))())


def label_node(nodes):
    (node,) = [node for node in nodes if any(isinstance(spec, Label) for spec in node.specs)]
    return node


# ---------------------------------------------------------------- reading ome-zarr-py's images


@pytest.mark.parametrize("axes", IMAGE_AXES)
@pytest.mark.parametrize("version", VERSIONS)
def test_reads_reference_image(tmp_path, version, axes):
    path = tmp_path / "image.ome.zarr"
    names = ("DAPI", "GFP") if "c" in axes else None
    window = {"min": 0, "max": 255, "start": 0, "end": 255}
    channels = [{"label": name, "color": "FF0000", "window": window} for name in names or ()]
    _, data = reference_image(path, version, axes, **{"omero": {"channels": channels}} if names
                              else {})
    image = read_ngff_image(str(path))
    assert (image.version, image.axis_names, image.levels) == (version, tuple(axes),
                                                                ("s0", "s1", "s2"))
    assert image.channel_axis == (axes.index("c") if "c" in axes else None)
    assert image.channel_names == names
    assert image.name == "image" and ngff_version(str(path)) == version
    expected = [tuple(PIXEL_SIZE[name] * (2**level if name in "yx" else 1) for name in axes)
                for level in range(3)]
    assert list(image.scales) == expected
    (node,) = [node for node in reader_nodes(path) if node.first(Multiscales)]
    transforms = node.metadata["coordinateTransformations"]
    assert [tuple(level[0]["scale"]) for level in transforms] == expected
    assert [tuple(level[1]["translation"]) for level in transforms] == list(image.translations)
    assert [axis.to_json() for axis in image.axes] == node.metadata["axes"]
    assert_array_equal(zarr.open_array(image.level_path(0), mode="r")[...], data)
    assert zarr.open_array(image.level_path(2), mode="r").shape == node.data[2].shape


def test_reads_store_paths_and_urls(tmp_path):
    path = tmp_path / "image.ome.zarr"
    _, data = reference_image(path, "0.5", "cyx")
    by_store = read_ngff_image(StorePath(LocalStore(str(tmp_path)), "image.ome.zarr"))
    by_url = read_ngff_image(path.as_uri(), storage_options={"auto_mkdir": False})
    assert by_store.levels == by_url.levels == read_ngff_image(path).levels
    assert ngff_version(path.as_uri(), storage_options={}) == "0.5"
    assert_array_equal(zarr.open_array(by_url.level_path(0), mode="r")[...], data)


def test_reads_multiscales_wide_transformations(tmp_path):
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(4, 4), dtype="u1", chunks=(2, 2))
    def transforms(scale, translation):
        return [{"type": "scale", "scale": scale},
                {"type": "translation", "translation": translation}]

    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x"}],
        "datasets": [{"path": "0", "coordinateTransformations": transforms([2, 3], [1, 1])}],
        "coordinateTransformations": transforms([10, 1], [0.5, 0])}]
    image = read_ngff_image(str(tmp_path / "image.zarr"))
    assert image.scales == ((20.0, 3.0),) and image.translations == ((10.5, 1.0),)
    assert image.channel_axis is None and image.axes[1] == Axis("x")


# ---------------------------------------------------------------- what is no (supported) image


def test_plain_zarr_is_no_ngff(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", attributes={"title": "x"})
    group.create_array("data", shape=(4,), dtype="u1")
    for location in ("plain.zarr", "plain.zarr/data", "missing.zarr"):
        assert ngff_version(str(tmp_path / location)) is None
        assert not is_hcs(str(tmp_path / location))
    with pytest.raises(ValueError, match=r"plain\.zarr is not an OME-NGFF image.*multiscales"):
        read_ngff_image(str(tmp_path / "plain.zarr"))
    with pytest.raises(ValueError, match=r"missing\.zarr: there is no Zarr group"):
        read_ngff_image(str(tmp_path / "missing.zarr"))
    with pytest.raises(ValueError, match="neither an HCS plate nor a well"):
        plate_fields(str(tmp_path / "plain.zarr"))


@pytest.mark.parametrize("zarr_format, version", [(2, "0.3"), (3, "0.6-dev")])
def test_unsupported_versions(tmp_path, zarr_format, version):
    path = str(tmp_path / "image.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.create_array("0", shape=(4, 4), dtype="u1")
    block = {"axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    group.attrs.update({"multiscales": [{**block, "version": version}]} if zarr_format == 2
                       else {"ome": {"version": version, "multiscales": [block]}})
    assert ngff_version(path) == version
    with pytest.raises(ValueError, match=f"version '{version}' is not supported; only 0.4 and"):
        read_ngff_image(path)


@pytest.mark.parametrize("version", VERSIONS)
def test_broken_images(tmp_path, version):
    path = tmp_path / "image.ome.zarr"
    group, _ = reference_image(path, version, "cyx")
    with pytest.raises(ValueError, match=r"level 3 is not a level .* 0 to 2 \(s0, s1, s2\)"):
        read_ngff_image(str(path)).level_path(3)
    ngff = ngff_attrs(attrs := group.attrs.asdict())
    del ngff["multiscales"][0]["axes"][0]
    group.attrs.put(attrs)
    with pytest.raises(ValueError, match="'s0' .* has 3 dimensions, not one per axis"):
        read_ngff_image(str(path))
    del ngff["multiscales"][0]["axes"]
    group.attrs.put(attrs)
    with pytest.raises(ValueError, match="image.ome.zarr: the multiscales 'axes' are missing"):
        read_ngff_image(str(path))
    reference_image(path, version, "cyx")
    shutil.rmtree(path / "s2")
    with pytest.raises(ValueError, match="the level array 's2' .* is missing"):
        read_ngff_image(str(path))


# ---------------------------------------------------------------- HCS plates and wells


def reference_plate(path, version):
    """A plate of ome-zarr-py: wells A/1 and A/2, each with fields 0 and 1."""
    fmt = FORMATS[version]
    plate = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_plate_metadata(plate, ["A"], ["1", "2"], ["A/1", "A/2"], fmt=fmt)
    for well_path in ("A/1", "A/2"):
        well = plate.require_group(well_path)
        write_well_metadata(well, [{"path": "0"}, {"path": "1"}], fmt=fmt)
        for field in ("0", "1"):
            write_image(np.zeros((16, 16), np.uint8), well.require_group(field), axes="yx",
                        fmt=fmt, scale_factors=(2,))


@pytest.mark.parametrize("version", VERSIONS)
def test_plate_fields(tmp_path, version):
    path = str(tmp_path / "plate.ome.zarr")
    reference_plate(path, version)
    fields = plate_fields(path)
    assert [name for name, _ in fields] == ["A/1/0", "A/1/1", "A/2/0", "A/2/1"]
    assert [location for _, location in fields] == [f"{path}/{name}" for name, _ in fields]
    assert all(read_ngff_image(location).levels == ("s0", "s1") for _, location in fields)
    assert plate_fields(f"{path}/A/2") == [("0", f"{path}/A/2/0"), ("1", f"{path}/A/2/1")]
    assert is_hcs(path) and is_hcs(f"{path}/A/1") and not is_hcs(f"{path}/A/1/0")
    assert ngff_version(path) == ngff_version(f"{path}/A/1") == version
    with pytest.raises(ValueError, match="not an OME-NGFF image.*'plate'"):
        read_ngff_image(path)
    assert str(plate_fields(StorePath(LocalStore(path)))[0][1]).endswith("plate.ome.zarr/A/1/0")


# ---------------------------------------------------------------- writing label images


def write_labels(parent, name, labels, axes, version, source, scales=None, **options):
    """Write ``labels`` with daskgmm as the label image ``name`` of a ``labels`` group."""
    group = zarr.open_group(str(parent), mode="a", zarr_format=FORMATS[version].zarr_format,
                            **options)
    group.attrs.update(labels_group_metadata([name], version))
    dask.compute(write_multiscale_image(
        group.require_group(name), nearest_pyramid(labels, axes, min_side=16), axes,
        scales or [1.0] * len(axes), version, name=name, fill_value=0,
        extra={"image-label": label_metadata(COLOURS, version, source=source)}))


@pytest.mark.parametrize("axes", ["tzyx", "yx"])
@pytest.mark.parametrize("version", VERSIONS)
def test_labels_inside_reference_image(tmp_path, version, axes):
    root = tmp_path / "image.ome.zarr"
    reference_image(root, version, axes)
    image = read_ngff_image(str(root))
    values = np.random.default_rng(1).integers(0, 4, SHAPES[axes]).astype(np.uint8)
    labels = da.from_array(values, chunks=(1,) * (len(axes) - 2) + (16, 16))
    write_labels(root / "labels", "seg", labels, image.axes, version, "../../", image.scales[0])
    nodes = reader_nodes(root)
    assert [type(spec) for spec in nodes[0].specs + nodes[1].specs] == [Multiscales, Labels]
    assert label_node(nodes).zarr.path.endswith("labels/seg")
    nodes = reader_nodes(root / "labels" / "seg")
    parent, node = nodes[0], label_node(nodes)
    assert parent.zarr.path == str(root.resolve()) and not parent.visible
    assert node.metadata["color"] == {value: [c / 255 for c in rgba]
                                      for value, rgba in COLOURS.items()}
    assert node.metadata["axes"] == [axis.to_json() for axis in image.axes]
    assert [level.shape for level in node.data] == [level.shape for level in parent.data]
    for level, data in enumerate(node.data):
        assert_array_equal(data.compute(), values[..., ::2**level, ::2**level])
    seg = read_ngff_image(str(root / "labels" / "seg"))
    assert seg.scales == image.scales and seg.levels == ("0", "1", "2")
    first = zarr.open_array(seg.level_path(0), mode="r")
    assert first.chunks == labels.chunksize and first.dtype == np.uint8
    if version == "0.5":
        assert first.metadata.dimension_names == tuple(axes)
    else:
        assert first.metadata.dimension_separator == "/"
        attrs = json.loads((root / "labels" / "seg" / ".zattrs").read_text())
        assert attrs["image-label"]["version"] == attrs["multiscales"][0]["version"] == "0.4"


def outside_layout(tmp_path, version):
    """An image at other/image.ome.zarr and, beside it, labels at out/labels.zarr/seg."""
    reference_image(tmp_path / "other" / "image.ome.zarr", version, "yx")
    labels = da.zeros(SHAPES["yx"], dtype=np.uint8, chunks=16)
    axes = (Axis("y", "space"), Axis("x", "space"))
    write_labels(tmp_path / "out" / "labels.zarr", "seg", labels, axes, version,
                 "../../../other/image.ome.zarr")


@pytest.fixture
def http_root(tmp_path):
    """``tmp_path`` served over HTTP on a loopback port (read-only, as static files)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()  # returns once serve_forever has stopped
    server.server_close()


@pytest.mark.parametrize("version", VERSIONS)
def test_source_image_outside_the_labels_container(tmp_path, http_root, version):
    # ome-zarr-py resolves source.image against the label image's folder (Path.resolve, or
    # urljoin over HTTP), so a path leading out of the labels' own container reaches the image.
    outside_layout(tmp_path, version)
    local = str((tmp_path / "other" / "image.ome.zarr").resolve())
    for root, image in ((str(tmp_path), local), (http_root, f"{http_root}/other/image.ome.zarr")):
        for start in ("out/labels.zarr/seg", "out/labels.zarr"):
            nodes = reader_nodes(f"{root}/{start}")
            assert [node.zarr.path for node in nodes if not node.visible] == [image]
            assert nodes[-1].first(Label) and nodes[-1].data[0].shape == (64, 48)
        assert read_ngff_image(image).levels == ("s0", "s1", "s2")


def test_source_image_outside_in_a_bucket(bucket, monkeypatch):
    # On S3 ome-zarr-py appends source.image to the URL unresolved ("seg/../../.."), which names
    # no object: it finds no parent image (and logs a warning) but still reads the labels.
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.endpoint_url)  # parse_url takes no options
    options = bucket.options()
    image = zarr.open_group(bucket.url("other/image.ome.zarr"), mode="w", zarr_format=3,
                            storage_options=options)
    write_image(np.zeros((32, 32), np.uint8), image, axes="yx", fmt=FORMATS["0.5"],
                scale_factors=(2,))
    write_labels(bucket.url("out/labels.zarr"), "seg", da.ones((32, 32), np.uint8, chunks=16),
                 (Axis("y"), Axis("x")), "0.5", "../../../other/image.ome.zarr",
                 storage_options=options)
    nodes = reader_nodes(bucket.url("out/labels.zarr/seg"))
    assert [node.zarr.path for node in nodes] == [bucket.url("out/labels.zarr/seg")]
    assert label_node(nodes).data[0].compute().min() == 1
    seg = read_ngff_image(bucket.url("out/labels.zarr/seg"), storage_options=options)
    assert (seg.version, seg.levels, seg.axis_names) == ("0.5", ("0", "1"), ("y", "x"))


# ---------------------------------------------------------------- the writer's own rules


def test_nearest_pyramid_odd_sides_and_chunks(tmp_path):
    values = np.arange(3 * 37 * 21, dtype=np.uint16).reshape(3, 37, 21)
    axes = (Axis("z", "space"), Axis("y", "space"), Axis("x", "space"))
    levels = nearest_pyramid(da.from_array(values, chunks=(2, 8, 8)), axes, min_side=6)
    assert [level.shape[1:] for level in levels] == [(37, 21), (19, 11), (10, 6), (5, 3)]
    assert [level.chunksize for level in levels] == [(2, 8, 8)] * 2 + [(2, 8, 6), (2, 5, 3)]
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w", zarr_format=3)
    # Zarr's grid cannot hold these chunks: the writer makes them regular, of the largest size.
    irregular = [levels[0].rechunk(((1, 2), (10, 20, 7), (21,)))] + levels[1:]
    dask.compute(write_multiscale_image(group, irregular, axes, [3.0, 1.0, 0.5], "0.5"))
    image = read_ngff_image(str(tmp_path / "image.zarr"))
    assert image.scales == ((3.0, 1.0, 0.5), (3.0, 2.0, 1.0), (3.0, 4.0, 2.0), (3.0, 8.0, 4.0))
    assert zarr.open_array(image.level_path(0), mode="r").chunks == (2, 20, 21)
    for level, expected in enumerate(levels):
        assert_array_equal(zarr.open_array(image.level_path(level), mode="r")[...], expected)
    group = zarr.open_group(str(tmp_path / "chunked.zarr"), mode="w", zarr_format=2)
    dask.compute(write_multiscale_image(group, levels, axes, [1, 1, 1], "0.4", chunks=(3, 4, 4)))
    assert zarr.open_array(str(tmp_path / "chunked.zarr" / "3"), mode="r").chunks == (3, 4, 3)


def test_metadata_dicts():
    properties = [{"label-value": 2}]
    assert label_metadata({np.uint8(2): (1, 2, 3, 4)}, "0.4", "../../", properties) == {
        "colors": [{"label-value": 2, "rgba": [1, 2, 3, 4]}], "source": {"image": "../../"},
        "properties": [{"label-value": 2}], "version": "0.4"}
    assert label_metadata({}, "0.5") == {}
    assert labels_group_metadata(["a", "b"], "0.4") == {"labels": ["a", "b"]}
    assert labels_group_metadata(("a",), "0.5") == {"ome": {"version": "0.5", "labels": ["a"]}}
    assert Axis("t", unit="s").to_json() == {"name": "t", "unit": "s"}
    assert ngff_attrs({"ome": {"version": "0.5"}, "other": 1}) == {"version": "0.5"}


def test_writer_rejects_bad_arguments(tmp_path):
    axes = (Axis("y"), Axis("x"))
    level = da.zeros((8, 8), np.uint8, chunks=4)
    v2 = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    with pytest.raises(ValueError, match="0.5 is stored in Zarr v3 groups, not v2"):
        write_multiscale_image(v2, [level], axes, [1, 1], "0.5")
    with pytest.raises(ValueError, match=r"got \{'scales': 3, 'levels\[1\].ndim': 1\}"):
        write_multiscale_image(v2, [level, level[0]], axes, [1, 1, 1], "0.4")
    with pytest.raises(ValueError, match="no 'multiscales' or 'version' in extra"):
        write_multiscale_image(v2, [level], axes, [1, 1], "0.4", extra={"multiscales": []})
    with pytest.raises(ValueError, match="version '0.3' is not supported"):
        write_multiscale_image(v2, [level], axes, [1, 1], "0.3")
    with pytest.raises(ValueError, match="version '0.6' is not supported"):
        labels_group_metadata(["seg"], "0.6")
    with pytest.raises(ValueError, match="RGBA colours: four integers 0..255"):
        label_metadata({1: (0, 0, 300, 0)}, "0.4")
    with pytest.raises(ValueError, match="y and x among them"):
        nearest_pyramid(level, (Axis("a"), Axis("b")))
    assert list(v2.array_keys()) == []  # every check comes before the first write
