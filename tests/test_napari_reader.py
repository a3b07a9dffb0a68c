"""napari opens the segment job's OME-Zarr output as it is: headless, through napari's reader
plugin discovery (npe2) and the napari-ome-zarr plugin it finds, no viewer or Qt needed."""

import numpy as np
import pytest

from jobs_helpers import job, run_pipeline

npe2 = pytest.importorskip("npe2", reason="napari's plugin engine")
pytest.importorskip("napari_ome_zarr", reason="the napari-ome-zarr reader plugin")


def test_napari_finds_a_reader_and_reads_the_labels_layer(tmp_path, client):
    spec = job("segment", tmp_path / "cells.ome.zarr", tmp_path / "out",
               input={"generate": "sample-cells"}, model={"n_components": 3, "max_iter": 30},
               training={"sample": 5000})
    run_pipeline(spec)
    manager = npe2.PluginManager.instance()
    manager.discover()
    for path, kind in [(tmp_path / "out" / "labels.ome.zarr", "labels"),
                       (tmp_path / "cells.ome.zarr", "image")]:
        readers = [r for r in manager.iter_compatible_readers([str(path)])
                   if r.plugin_name == "napari-ome-zarr"]
        assert readers, f"napari finds no napari-ome-zarr reader for {path}"
        # as napari calls a reader: the plugin's reader of these paths, then the reading
        read = readers[0].exec(kwargs={"path": [str(path)], "stack": False})
        layers = read([str(path)], stack=False)
        assert [layer_kind for _, _, layer_kind in layers] == [kind]
        if kind == "labels":
            data, options, _ = layers[0]
            assert [level.shape for level in data] == [(384, 384), (192, 192), (96, 96)]
            assert list(options["scale"]) == [0.5, 0.5]  # the image's pixel size
            assert sorted(options["colormap"]) == [0, 1, 2, 3]
            assert options["properties"]["component"] == [0, 1, 2]
            assert set(np.unique(np.asarray(data[0]))) == {1, 2, 3}
        else:
            assert layers[0][0][0].shape == (3, 384, 384)
