"""The segment job on OME-Zarr images written by ome-zarr-py, its outputs read by ome-zarr-py.

Images are NGFF 0.4 and 0.5, the channel axis wherever NGFF allows it (``cyx``, ``czyx``,
``tczyx``; ``zyx`` without one). The job reads the axes from the metadata, segments the full
resolution level, and writes ``labels.ome.zarr``: a labels group whose label image carries the
input's levels, axes and scale, colours and properties, and links the source image, so that
the reader opens image and labels together.
"""

import numpy as np
import pytest
import yaml
import zarr
from numpy.testing import assert_array_equal

from jobs_helpers import job, run_pipeline, run_spec

pytest.importorskip("ome_zarr", reason="ome-zarr-py writes the inputs and reads the outputs")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Label, Labels, Multiscales, Reader  # noqa: E402
from ome_zarr.writer import write_image, write_plate_metadata  # noqa: E402

FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}
SIZES = {"t": 2, "c": 3, "z": 2, "y": 96, "x": 80}
PIXEL_SIZE = {"t": 30.0, "c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25}
BRIGHT = 20000


def cells(axes, seed=0):
    """uint16 pixels on ``axes``: the top half bright in every channel, noise elsewhere."""
    rng = np.random.default_rng(seed)
    shape = tuple(SIZES[name] for name in axes)
    data = rng.integers(1000, 3000, size=shape)
    top = [slice(None)] * len(axes)
    top[axes.index("y")] = slice(0, SIZES["y"] // 2)
    data[tuple(top)] += BRIGHT
    return data.astype(np.uint16)


def write_ome(path, version, axes, seed=0):
    """An OME-Zarr image written by ome-zarr-py: three levels, y and x halved twice."""
    fmt = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = cells(axes, seed)
    write_image(data, group, axes=axes, fmt=fmt, scale_factors=(2, 4),
                scale={name: PIXEL_SIZE[name] for name in axes})
    return data


def nodes_at(path):
    return list(Reader(parse_url(str(path)))())


def source_image(nodes):
    """The one image (no label image) the reader opened beside the labels."""
    (node,) = [node for node in nodes if any(isinstance(s, Multiscales) for s in node.specs)
               and not any(isinstance(s, Label) for s in node.specs)]
    return node


def only(nodes, spec):
    (node,) = [node for node in nodes if any(isinstance(s, spec) for s in node.specs)]
    return node


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("axes", ["cyx", "czyx", "tczyx", "zyx"])
def test_ome_zarr_in_labels_image_out(tmp_path, client, version, axes):
    source = tmp_path / "cells.ome.zarr"
    data = write_ome(source, version, axes)
    spec = job("segment", source, tmp_path / "out", model={"n_components": 2, "max_iter": 20},
               output={"log_likelihood": True, "probabilities": True})
    prepared = run_pipeline(spec)
    channels = SIZES["c"] if "c" in axes else 1
    space = tuple(SIZES[name] for name in axes if name != "c")
    assert prepared.sources["input"].shape[-1] == channels  # read from the axes, not guessed

    nodes = nodes_at(tmp_path / "out" / "labels.ome.zarr")
    assert any(isinstance(spec, Labels) for spec in nodes[0].specs)
    label = only(nodes, Label)
    image = source_image(nodes)
    assert image.data[0].shape == data.shape  # the linked source
    assert [level.shape for level in label.data] == [
        tuple(level.shape[i] for i in range(len(axes)) if axes[i] != "c")
        for level in image.data]  # one label level per image level
    assert [axis["name"] for axis in label.metadata["axes"]] == [n for n in axes if n != "c"]
    assert label.metadata["coordinateTransformations"][0][0]["scale"] == [
        PIXEL_SIZE[n] for n in axes if n != "c"]
    colours = label.metadata["color"]
    assert sorted(colours) == [0, 1, 2] and colours[0][3] == 0  # no data: transparent

    full = np.asarray(label.data[0])
    top = [slice(None)] * len(space)
    top[-2] = slice(0, SIZES["y"] // 2)
    bottom = [slice(None)] * len(space)
    bottom[-2] = slice(SIZES["y"] // 2, None)
    assert len(np.unique(full[tuple(top)])) == 1 and len(np.unique(full[tuple(bottom)])) == 1
    assert full[tuple(top)].flat[0] != full[tuple(bottom)].flat[0]
    assert set(np.unique(full)) == {1, 2}  # component + 1; no pixel lacks data
    result = zarr.open_group(tmp_path / "out" / "result.zarr", mode="r")
    assert_array_equal(full.reshape(-1, *space[-2:]), result["labels"][...] + 1)
    assert_array_equal(np.asarray(label.data[1]), full[..., ::2, ::2])
    assert result.attrs["ngff"]["version"] == version

    scores = only(nodes_at(tmp_path / "out" / "probabilities.ome.zarr"), Multiscales)
    names = [axis["name"] for axis in scores.metadata["axes"]]
    assert "c" in names and scores.data[0].shape[names.index("c")] == 2
    loglik = only(nodes_at(tmp_path / "out" / "log_likelihood.ome.zarr"), Multiscales)
    assert loglik.data[0].shape == space


def test_training_level_fits_on_a_coarser_level(tmp_path, client):
    source = tmp_path / "cells.ome.zarr"
    write_ome(source, "0.5", "cyx")
    spec = job("segment", source, tmp_path / "out", model={"n_components": 2, "max_iter": 20},
               training={"level": 2})
    prepared = run_pipeline(spec)
    assert prepared.extra["training_level"].shape == (1, SIZES["y"] // 4, SIZES["x"] // 4, 3)
    labels = zarr.open_array(tmp_path / "out" / "result.zarr" / "labels", mode="r")[0]
    assert labels.shape == (SIZES["y"], SIZES["x"])
    assert len(np.unique(labels[:SIZES["y"] // 2])) == 1
    status, log = run_spec(tmp_path, {**spec, "training": {"level": 3}}, "level.yaml")
    assert status == 2 and "training.level" in log and "0 to 2" in log


def test_output_format_ome_zarr_for_a_plain_zarr_input(tmp_path, client):
    images = np.stack([cells("yx", seed) for seed in (0, 1)])[..., None]
    zarr.save_array(str(tmp_path / "stack.zarr"), images)
    spec = job("segment", tmp_path / "stack.zarr", tmp_path / "out",
               output={"format": "ome-zarr"})
    run_pipeline(spec)
    label = only(nodes_at(tmp_path / "out" / "labels.ome.zarr" / "components"), Label)
    assert [axis["name"] for axis in label.metadata["axes"]] == ["t", "y", "x"]
    assert label.data[0].shape == (2, SIZES["y"], SIZES["x"])
    assert "source" not in zarr.open_group(
        tmp_path / "out" / "labels.ome.zarr" / "components", mode="r").attrs["ome"]["image-label"]
    zarr.save_array(str(tmp_path / "one.zarr"), np.moveaxis(cells("cyx"), 0, -1))  # (H, W, C)
    run_pipeline(job("segment", tmp_path / "one.zarr", tmp_path / "one",
                     output={"format": "ome-zarr"}))
    label = only(nodes_at(tmp_path / "one" / "labels.ome.zarr"), Label)
    assert [axis["name"] for axis in label.metadata["axes"]] == ["y", "x"]
    assert label.data[0].shape == (SIZES["y"], SIZES["x"])


def test_a_plate_is_a_batch(tmp_path, client):
    plate = zarr.open_group(str(tmp_path / "plate.ome.zarr"), mode="w", zarr_format=3)
    write_plate_metadata(plate, ["A"], ["1"], ["A/1"], fmt=FORMATS["0.5"])
    status, log = run_spec(tmp_path, job("segment", tmp_path / "plate.ome.zarr",
                                         tmp_path / "out"))
    assert status == 2 and "input.path" in log and "batch" in log


def write_plate(path, version):
    """A plate of two wells (A/1, B/2), two fields each, written by ome-zarr-py."""
    from ome_zarr.writer import write_well_metadata

    fmt = FORMATS[version]
    plate = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    write_plate_metadata(plate, ["A", "B"], ["1", "2"], ["A/1", "B/2"], fmt=fmt)
    for well_path in ("A/1", "B/2"):
        well = plate.require_group(well_path)
        write_well_metadata(well, [{"path": "0"}, {"path": "1"}], fmt=fmt)
        for field in ("0", "1"):
            image = well.require_group(field)
            write_image(cells("cyx", seed=len(well_path) + int(field)), image, axes="cyx",
                        fmt=fmt, scale_factors=(2,))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_plate_is_a_batch_of_fields(tmp_path, client, version):
    from batch_helpers import manifest

    write_plate(tmp_path / "plate.ome.zarr", version)
    spec = job("segment", tmp_path / "plate.ome.zarr", tmp_path / "store",
               model={"n_components": 2, "max_iter": 20}, batch={})
    del spec["output"]["overwrite"]
    run_pipeline(spec)
    fields = ["A/1/0", "A/1/1", "B/2/0", "B/2/1"]
    assert sorted(manifest(tmp_path)["inputs"]) == fields
    for field in fields:
        result = tmp_path / "store" / "results" / field
        label = only(nodes_at(result / "labels.ome.zarr"), Label)
        assert label.data[0].shape == (SIZES["y"], SIZES["x"])
        assert len(label.data) == 2  # the field's two levels
        assert source_image(nodes_at(result / "labels.ome.zarr")).data[0].shape == (
            3, SIZES["y"], SIZES["x"])
    run_pipeline(spec)  # nothing new: every field was processed once
    assert sorted(manifest(tmp_path)["inputs"]) == fields


def test_the_shipped_ome_config_runs_on_its_generated_sample(tmp_path):
    from jobs_helpers import REPO, run_runner

    config = yaml.safe_load((REPO / "configs" / "segment-ome.yaml").read_text())
    config["input"]["path"] = str(tmp_path / "sample_cells.ome.zarr")
    config["output"]["path"] = str(tmp_path / "out")
    job_file = tmp_path / "segment-ome.yaml"
    job_file.write_text(yaml.safe_dump(config))
    finished = run_runner(job_file)
    assert finished.returncode == 0, finished.stderr
    nodes = nodes_at(tmp_path / "out" / "labels.ome.zarr")
    label = only(nodes, Label)
    assert [level.shape for level in label.data] == [(384, 384), (192, 192), (96, 96)]
    assert sorted(label.metadata["color"]) == [0, 1, 2, 3]
    assert source_image(nodes).data[0].shape == (3, 384, 384)  # the sample, linked
    counts = np.bincount(np.asarray(label.data[0]).ravel(), minlength=4)
    assert counts[0] == 0 and min(counts[1:]) > 2000  # background, cytoplasm, nuclei
    assert (tmp_path / "out" / "previews" / "image-0000.png").is_file()


def test_ome_zarr_outputs_in_a_bucket(tmp_path, bucket, monkeypatch):
    source = tmp_path / "cells.ome.zarr"
    write_ome(source, "0.4", "cyx")
    spec = job("segment", source, bucket.url("out"), storage=bucket.storage(),
               model={"n_components": 2, "max_iter": 20}, output={"log_likelihood": True},
               checkpoint={"enabled": False})  # the test server is slow with many objects
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    label = zarr.open_group(bucket.url("out/labels.ome.zarr/components"), mode="r",
                            storage_options=bucket.options())
    assert label.metadata.zarr_format == 3  # NGFF 0.5 in a bucket, whatever the input's
    assert "image-label" in label.attrs["ome"]
    levels = [label[str(level)].shape for level in range(3)]
    assert levels == [(SIZES["y"], SIZES["x"]), (SIZES["y"] // 2, SIZES["x"] // 2),
                      (SIZES["y"] // 4, SIZES["x"] // 4)]
    result = zarr.open_group(bucket.url("out/result.zarr"), mode="r",
                             storage_options=bucket.options())
    assert_array_equal(label["0"][...], result["labels"][0] + 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", bucket.endpoint_url)  # ome-zarr-py takes no options
    node = only(nodes_at(bucket.url("out/labels.ome.zarr")), Label)
    assert sorted(node.metadata["color"]) == [0, 1, 2]
