"""The segment job's labels as tiled GeoTIFF files, georeferenced as their input images are.

With ``output.geotiff``, each image's labels go to ``geotiff/image-0000.tif``... beside
``result.zarr``: one band, tiled and deflate-compressed, with the input's GeoTIFF tags
(pixel scale, tie points or transformation, GeoKeys), so GIS tools overlay it on the input.
The labels are read back from ``result.zarr`` a few tile rows at a time: the client never holds
an image's labels whole.
"""

from functools import partial

from daskgmm.tiff import GEOTIFF_TILE, write_geotiff

from .progress import compute

# The tags that say where the pixels are; the input's GDAL_NODATA and GDAL_METADATA describe
# its own bands and values, not the labels, and are not carried over.
PLACEMENT_TAGS = ("ModelPixelScaleTag", "ModelTiepointTag", "ModelTransformationTag",
                  "GeoKeyDirectoryTag", "GeoDoubleParamsTag", "GeoAsciiParamsTag")
# Tile rows of labels computed together: few round trips, a few MB on the client.
BANDS_PER_COMPUTE = 8


def geotiff_name(index):
    """The name of image ``index``'s GeoTIFF file in the output folder."""
    return f"geotiff/image-{index:04d}.tif"


def label_tags(georeferencing, no_data):
    """The GeoTIFF tags of a labels file: the input's placement, and the no-data label."""
    tags = {name: value for name, value in georeferencing.items() if name in PLACEMENT_TAGS}
    return {**tags, "GDAL_NODATA": str(int(no_data))}


def _bands(labels):
    """Yield ``labels`` (a lazy ``(H, W)`` array) in full-width bands of whole tile rows."""
    rows = GEOTIFF_TILE[0]
    starts = range(0, labels.shape[0], rows)
    for first in range(0, len(starts), BANDS_PER_COMPUTE):
        group = starts[first:first + BANDS_PER_COMPUTE]
        yield from compute(*[labels[top:top + rows] for top in group])


def write_label_geotiffs(output, georeferencing, no_data):
    """Write every image's labels from ``result.zarr`` as a GeoTIFF file of ``output``.

    Parameters
    ----------
    output : JobOutput
        Whose ``labels`` are written.
    georeferencing : list of dict
        The GeoTIFF tags of each input image (empty dicts for images without).
    no_data : int
        The label of pixels without data, recorded as the files' GDAL_NODATA.

    Returns
    -------
    list of str
        The files written.
    """
    labels = output.read_array("labels")
    names = []
    for index, tags in enumerate(georeferencing):
        write = partial(write_geotiff, blocks=_bands(labels[index]), shape=labels.shape[1:],
                        dtype=labels.dtype, georeferencing=label_tags(tags, no_data))
        output.write_stream(geotiff_name(index), lambda file, write=write: write(file))
        names.append(geotiff_name(index))
    return names
