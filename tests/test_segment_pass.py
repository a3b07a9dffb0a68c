"""The segment job works chunk by chunk: no rechunk or shuffle of the image, the image read once
(twice, for the sample and the output, when it does not fit in the workers' memory), outputs
chunked as the input, and each chunk's labels, log-likelihood and probabilities those of the
estimator."""

import numpy as np
import pytest
import zarr
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal

from conftest import write_zarr
from daskgmm import GaussianMixture, store
from daskgmm.pipelines import pixels
from jobs_helpers import run_pipeline

import dask.array as da

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def images_with_regions(n=2, height=40, width=56, seed=0):
    """``n`` uint8 RGB images of three colour regions plus noise, shape (n, height, width, 3)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 190, 40], [50, 50, 210]])
    regions = (np.arange(width)[None, :] // 19 + np.arange(height)[:, None] // 23) % 3
    noisy = colours[regions][None] + rng.normal(0, 6, size=(n, height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def run_segment(tmp_path, array, chunks, **input_options):
    write_zarr(tmp_path / "images.zarr", da.from_array(array, chunks=chunks))
    job = {"pipeline": "segment",
           "input": {"path": str(tmp_path / "images.zarr"), **input_options},
           "model": {"n_components": 3, "random_state": 0}, "training": {"sample": 2000},
           "output": {"path": str(tmp_path / "out"), "probabilities": True,
                      "log_likelihood": True}}
    with get_task_stream() as stream:
        run_pipeline(job)
    return zarr.open_group(str(tmp_path / "out" / "result.zarr"), mode="r"), stream.data


def task_names(tasks):
    return [str(task["key"]) for task in tasks]


@pytest.mark.parametrize("held", [True, False])  # fits in the workers' memory, or not
@pytest.mark.parametrize("layout", ["channels-last", "channels-first-by-band"])
def test_no_rechunk_or_shuffle_and_the_image_is_read_once_or_twice(client, tmp_path, layout,
                                                                    held, monkeypatch):
    if not held:
        monkeypatch.setattr(pixels, "HOLD_SHARE", 0.0)
    images = images_with_regions()
    if layout == "channels-last":
        array, chunks, axis = images, (1, 16, 24, 3), -1
    else:  # (C, n, H, W) with one band per chunk: a chunk's channels come from three chunks
        array, chunks, axis = np.moveaxis(images, -1, 0), (1, 1, 16, 24), 0
    result, tasks = run_segment(tmp_path, array, chunks, channel_axis=axis)

    names = task_names(tasks)
    assert not [name for name in names if "rechunk" in name or "shuffle" in name
                or "p2p" in name]
    if layout == "channels-last":  # else the reads are fused into the tasks moving the axis
        image = store.open_array(tmp_path / "images.zarr")  # the job's keys: the same
        reads = [name for name in names if name.startswith(f"('{image.name}'")]
        # Held: read once for both passes (the sample's and the output's); else once each.
        assert len(reads) == (1 if held else 2) * image.npartitions
    for name in ("labels", "log_likelihood"):
        assert result[name].chunks == (1, 16, 24)
    assert result["probabilities"].chunks == (1, 16, 24, 3)


def test_each_output_is_the_estimators_from_one_evaluation(client, tmp_path):
    images = images_with_regions()
    result, _ = run_segment(tmp_path, images, (1, 16, 24, 3))
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    rows = images.reshape(-1, 3)

    assert_array_equal(result["labels"][...].reshape(-1), model.predict(rows))
    assert_allclose(result["log_likelihood"][...].reshape(-1),
                    model.score_samples(rows).astype(np.float32), rtol=1e-6)
    assert_allclose(result["probabilities"][...].reshape(-1, 3),
                    model.predict_proba(rows).astype(np.float32), rtol=1e-6, atol=1e-30)


def test_the_sample_is_uniform_over_valid_pixels_and_the_same_every_run(client):
    images = da.from_array(images_with_regions(n=3, height=64, width=64), chunks=(1, 32, 32, 3))
    mask = np.ones((64, 64), dtype=bool)
    mask[:32] = False  # the top half of every image has no data
    chunks = pixels.pixel_chunks(images, da.from_array(mask, chunks=(16, 64)))

    first = pixels.sample_valid_pixels(chunks, 1000, 7, np.uint8)
    again = pixels.sample_valid_pixels(chunks, 1000, 7, np.uint8)
    other = pixels.sample_valid_pixels(chunks, 1000, 8, np.uint8)
    assert first.shape == (1000, 3) and first.dtype == np.uint8
    assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Only bottom-half pixels, and about as many from each of the six chunks holding them.
    valid = images.compute()[:, 32:].reshape(-1, 3)
    assert set(map(tuple, first)) <= set(map(tuple, valid))
    everything = pixels.sample_valid_pixels(chunks, 10**6, 7, np.uint8)
    assert len(everything) == len(valid)


@pytest.mark.parametrize("dtype", [np.int64, np.float64])  # shares drawn first; keys
def test_every_pixel_is_drawn_equally_often(client, dtype):
    """Over many seeds, each of 48 pixels is drawn equally often (6 at a time): both the
    chunks' shares of the sample (integer pixels, all valid) and a chunk's lowest keys drawn as
    order statistics (float pixels, which may lack data) are exact."""
    images = da.from_array(np.arange(48, dtype=dtype).reshape(2, 4, 6, 1), chunks=(1, 2, 6, 1))
    chunks = pixels.pixel_chunks(images)
    counts = np.zeros(48)
    for seed in range(400):
        drawn = pixels.sample_valid_pixels(chunks, 6, seed, dtype)[:, 0].astype(int)
        assert len(set(drawn)) == 6 and list(drawn) == sorted(drawn)  # distinct, in order
        counts[drawn] += 1
    expected = 400 * 6 / 48
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert_array_equal(pixels.sample_valid_pixels(chunks, 6, 0, dtype),
                       pixels.sample_valid_pixels(chunks, 6, 0, dtype))


def test_only_an_irregular_grid_of_chunks_is_rechunked():
    regular = da.zeros((1, 40, 56, 3), chunks=(1, 16, 24, 3))
    assert pixels.image_stack(regular, -1) is regular
    irregular = da.zeros((1, 40, 56, 3), chunks=((1,), (10, 30), (56,), (3,)))
    stack = pixels.image_stack(irregular, -1)
    assert stack.chunks == ((1,), (30, 10), (56,), (3,))


@pytest.mark.parametrize("preview_batch", [16, 1])  # taken in the labelling pass; read back
def test_previews_are_the_labels_at_every_steps_pixel(client, tmp_path, monkeypatch,
                                                       preview_batch):
    from PIL import Image

    from daskgmm.pipelines import segment
    from daskgmm.pipelines.render import colour_labels, component_colours

    monkeypatch.setattr(segment, "PREVIEW_SIDE", 10)  # a step of 6: chunks start off the grid
    monkeypatch.setattr(segment, "PREVIEW_BATCH", preview_batch)
    result, _ = run_segment(tmp_path, images_with_regions(), (1, 16, 24, 3))
    labels = result["labels"][...]
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    colours = component_colours(model.means_, np.uint8)
    for i in range(2):
        preview = np.asarray(Image.open(tmp_path / "out" / "previews" / f"image-{i:04d}.png"))
        assert preview.shape == (7, 10, 3)
        assert_array_equal(preview, colour_labels(labels[i, ::6, ::6], colours))
