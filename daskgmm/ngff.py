"""OME-Zarr (OME-NGFF 0.4 and 0.5) images read and written by their metadata: multiscales axes
and levels, HCS plates and wells, label images."""

from dataclasses import dataclass

import dask.array as da
import zarr

# A group is NGFF (not plain Zarr) when its NGFF attributes hold one of these keys.
_NGFF_KEYS = ("multiscales", "plate", "well", "labels", "image-label")
# The NGFF versions supported, and the Zarr format each lives in.
_ZARR_FORMATS = {"0.4": 2, "0.5": 3}


@dataclass(frozen=True)
class Axis:
    """An NGFF image axis: its name, type ("space", "time", "channel", ...) and unit."""

    name: str
    type: str | None = None
    unit: str | None = None

    def to_json(self):
        """The axis as an entry of NGFF ``axes`` metadata, without the fields that are None."""
        return {key: value for key, value in vars(self).items() if value is not None}


@dataclass(frozen=True)
class NgffImage:
    """An OME-NGFF multiscale image, as its metadata describes it (no pixel data is read).

    ``path`` is the group's location as given, ``version`` "0.4" or "0.5", ``axes`` the
    :class:`Axis` of each array dimension, ``levels`` the level arrays' paths (largest first);
    per level, ``scales`` hold the pixel size along each axis (1.0 where none is given) and
    ``translations`` the first pixel's position (None where none is given). ``name`` is the
    multiscales name, ``channel_names`` the ``omero`` channels' labels (or None).
    """

    path: str
    version: str
    axes: tuple
    levels: tuple
    scales: tuple
    translations: tuple
    name: str | None = None
    channel_names: tuple | None = None

    @property
    def axis_names(self):
        """The axes' names, in array order."""
        return tuple(axis.name for axis in self.axes)

    @property
    def channel_axis(self):
        """The index of the axis of type "channel" (or untyped and named "c"), or None."""
        kinds = [axis.type or ("channel" if axis.name == "c" else None) for axis in self.axes]
        return kinds.index("channel") if "channel" in kinds else None

    def level_path(self, level):
        """The location of the array of ``level`` (0 to ``len(levels) - 1``, 0 the largest)."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level!r} is not a level of the image {self.path}: its levels"
                             f" are 0 to {len(self.levels) - 1} ({', '.join(self.levels)})")
        return _child(self.path, self.levels[level])


def ngff_attrs(attrs):
    """The NGFF part of a group's attributes: the ``"ome"`` dict in 0.5, the attributes in 0.4."""
    ome = attrs.get("ome")
    return ome if isinstance(ome, dict) else attrs


def group_attrs(ngff, version):
    """The group attributes holding the NGFF metadata ``ngff`` (the inverse of ngff_attrs)."""
    return {"ome": {"version": version, **ngff}} if version == "0.5" else dict(ngff)


def _attrs_version(attrs):
    ngff = ngff_attrs(attrs)
    if not any(key in ngff for key in _NGFF_KEYS):
        return None
    # 0.4 writes the version into each block; one written nowhere is the namespace's.
    multiscales = ngff.get("multiscales") if isinstance(ngff.get("multiscales"), list) else []
    blocks = [ngff, *multiscales[:1], ngff.get("plate"), ngff.get("well"), ngff.get("image-label")]
    versions = [block.get("version") for block in blocks if isinstance(block, dict)]
    default = "0.5" if ngff is not attrs else "0.4"
    return str(next((version for version in versions if version is not None), default))


def _check_version(version, where):
    if version not in _ZARR_FORMATS:
        raise ValueError(f"{where}: OME-NGFF version {version!r} is not supported; only "
                         f"{' and '.join(_ZARR_FORMATS)} are")
    return version


def _child(location, path):
    return f"{location.rstrip('/')}/{path}" if isinstance(location, str) else location / path


def _open_group(location, storage_options, required=True):
    # fsspec options only mean something to URLs; zarr rejects them for local paths.
    url = isinstance(location, str) and "://" in location
    options = {"storage_options": storage_options} if url else {}
    try:
        return zarr.open_group(location, mode="r", **options)
    except (FileNotFoundError, ValueError) as error:  # a missing path, or an array
        if required:
            raise ValueError(f"{location}: there is no Zarr group there ({error})") from error
        return None


def ngff_version(location, storage_options=None):
    """The NGFF version of the group at ``location``; None for plain Zarr groups, arrays and
    missing paths (arguments as in :func:`read_ngff_image`)."""
    group = _open_group(location, storage_options, required=False)
    return None if group is None else _attrs_version(group.attrs.asdict())


def is_hcs(location, storage_options=None):
    """Whether ``location`` is an HCS plate or well (arguments as in :func:`read_ngff_image`)."""
    group = _open_group(location, storage_options, required=False)
    return group is not None and bool({"plate", "well"} & set(ngff_attrs(group.attrs.asdict())))


def read_ngff_image(location, storage_options=None):
    """The :class:`NgffImage` at ``location``: an OME-NGFF 0.4 or 0.5 image's first multiscales.

    ``location`` is a local path, a ``zarr.storage.StorePath`` or an fsspec URL, for which
    ``storage_options`` are the fsspec options. A ``ValueError`` names the location and the fault:
    no group, no multiscales, an unsupported version, axes missing or not matching a level's
    dimensions, a level array missing.
    """
    group, path = _open_group(location, storage_options), str(location)
    ngff = ngff_attrs(group.attrs.asdict())
    multiscales = ngff.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales:
        raise ValueError(f"{path} is not an OME-NGFF image: its group has no 'multiscales' "
                         f"metadata (NGFF keys: {[key for key in _NGFF_KEYS if key in ngff]})")
    version = _check_version(_attrs_version(group.attrs.asdict()), path)
    axes = _read_axes(path, multiscales[0])
    levels = tuple(_paths(path, multiscales[0], "datasets"))
    _check_levels(group, path, levels, len(axes))
    scales, translations = zip(*(_level_transform(path, dataset, multiscales[0], len(axes))
                                 for dataset in multiscales[0]["datasets"]))
    channels = ngff["omero"].get("channels") if isinstance(ngff.get("omero"), dict) else None
    names = None if not isinstance(channels, list) else tuple(
        str(channel.get("label", index)) for index, channel in enumerate(channels))
    return NgffImage(path=path, version=version, axes=axes, levels=levels, scales=scales,
                     translations=translations, name=multiscales[0].get("name"),
                     channel_names=names)


def _read_axes(path, multiscale):
    entries = multiscale.get("axes")
    if not isinstance(entries, list) or not entries or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in entries):
        raise ValueError(f"{path}: the multiscales 'axes' are missing or not a list of "
                         f"{{name, type, unit}}, one per array dimension: {entries!r}")
    return tuple(Axis(entry["name"], entry.get("type"), entry.get("unit")) for entry in entries)


def _check_levels(group, path, levels, ndim):
    if not levels:
        raise ValueError(f"{path}: the multiscales 'datasets' list no level")
    for level in levels:
        node = group.get(level)
        found = node.ndim if isinstance(node, zarr.Array) else None
        if found != ndim:
            raise ValueError(f"{path}: the level array {level!r} that the multiscales metadata "
                             "lists " + ("is missing" if found is None else
                                         f"has {found} dimensions, not one per axis ({ndim})"))


def _level_transform(path, dataset, multiscale, ndim):
    scale, shift = _vectors(path, dataset.get("coordinateTransformations"), ndim)
    outer, outer_shift = _vectors(path, multiscale.get("coordinateTransformations"), ndim)
    # The multiscales-wide transformations apply after the level's own.
    translation = None if shift is None and outer_shift is None else tuple(
        o * t + u for o, t, u in zip(outer, shift or (0.0,) * ndim, outer_shift or (0.0,) * ndim))
    return tuple(o * s for o, s in zip(outer, scale)), translation


def _vectors(path, transforms, ndim):
    found = {"scale": (1.0,) * ndim, "translation": None}
    for transform in transforms or ():
        kind = transform.get("type") if isinstance(transform, dict) else None
        values = transform.get(kind) if kind in found else None
        if kind != "identity" and (not isinstance(values, list) or len(values) != ndim):
            raise ValueError(f"{path}: the coordinate transformation {transform!r} is not a "
                             f"'scale' or 'translation' with {ndim} values, one per axis")
        if kind in found:
            found[kind] = tuple(float(value) for value in values)
    return found["scale"], found["translation"]


def plate_fields(location, storage_options=None):
    """Every field of view of an HCS plate (all its wells) or of one well.

    Returns ``(name, image_location)`` pairs in the metadata's order, the name the well's path
    and the field's (``"A/1/0"``), or the field's alone for a well (arguments as in
    :func:`read_ngff_image`).
    """
    group, path = _open_group(location, storage_options), str(location)
    ngff = ngff_attrs(group.attrs.asdict())
    if "plate" not in ngff and "well" not in ngff:
        raise ValueError(f"{path} is neither an HCS plate nor a well: its group has no 'plate' "
                         "or 'well' metadata")
    _check_version(_attrs_version(group.attrs.asdict()), path)
    if "well" in ngff:
        return [(field, _child(location, field)) for field in _paths(path, ngff["well"], "images")]
    fields = []
    for well in _paths(path, ngff["plate"], "wells"):
        place = _child(location, well)
        images = ngff_attrs(_open_group(place, storage_options).attrs.asdict()).get("well")
        fields += [(f"{well}/{field}", _child(place, field))
                   for field in _paths(str(place), images, "images")]
    return fields


def _paths(path, block, key):
    # The entries of NGFF's lists of places (datasets, wells, images) each have a "path".
    entries = block.get(key) if isinstance(block, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("path"), str) for entry in entries):
        raise ValueError(f"{path}: the {key!r} metadata is missing or not a list of paths")
    return [entry["path"] for entry in entries]


def write_multiscale_image(group, levels, axes, scales, version, name=None, extra=None,
                           chunks=None, compressors="auto", fill_value=None):
    """Write ``levels`` as the arrays ``"0"``, ``"1"``, ... of an NGFF image in ``group``.

    The metadata and the empty arrays are written now; the pixels when the returned writes (one
    ``dask.delayed.Delayed`` per level) are computed, together.

    Parameters
    ----------
    group : zarr.Group
        The image group: Zarr v2 for NGFF ``version`` "0.4", v3 for "0.5".
    levels, axes, scales : list of dask.array.Array, tuple of Axis, sequence of float
        The levels, largest first, one dimension per axis; level 0's pixel size per axis (each
        next level's grows by the step between the sides: 2 for ``[::2]``, also on odd sides).
    name, extra : str, dict, optional
        The multiscales ``name``; further NGFF keys (``{"image-label": ...}``) to write beside.
    chunks, compressors, fill_value : optional
        Every level's chunk shape (clipped to its shape; by default its Dask chunk size, to which
        irregular Dask chunks are rechunked); the others go to ``zarr.Group.create_array``.
    """
    levels = [da.asarray(level) for level in levels]
    _check_image_arguments(group, levels, axes, scales, version, extra, chunks)
    levels = [level.rechunk(_chunk_shape(level, chunks or level.chunksize)) for level in levels]
    writes, datasets = [], []
    for index, (level, scale) in enumerate(zip(levels, _pyramid_scales(scales, levels))):
        writes.append(_store_level(group, str(index), level, axes, compressors, fill_value))
        datasets.append({"path": str(index),
                         "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    multiscale = {"axes": [axis.to_json() for axis in axes], "datasets": datasets}
    multiscale.update({"name": name} if name is not None else {})
    multiscale.update({"version": version} if version == "0.4" else {})
    group.attrs.update(group_attrs({"multiscales": [multiscale], **(extra or {})}, version))
    return writes


def _check_image_arguments(group, levels, axes, scales, version, extra, chunks):
    _check_version(version, "write_multiscale_image")
    if (wanted := _ZARR_FORMATS[version]) != group.metadata.zarr_format:
        raise ValueError(f"OME-NGFF {version} is stored in Zarr v{wanted} groups, not v"
                         f"{group.metadata.zarr_format}: create it with zarr_format={wanted}")
    lengths = {"scales": len(scales), "chunks": len(axes if chunks is None else chunks),
               **{f"levels[{index}].ndim": level.ndim for index, level in enumerate(levels)}}
    wrong = {key: value for key, value in lengths.items() if value != len(axes)}
    if not levels or wrong or {"multiscales", "version"} & set(extra or ()):
        raise ValueError(f"write_multiscale_image needs levels (got {len(levels)}), one value per "
                         f"axis {[axis.name for axis in axes]} (got {wrong}), and no 'multiscales'"
                         f" or 'version' in extra (got {sorted(extra or ())})")


def _chunk_shape(level, wanted):
    # Zarr's grid is regular: chunks of one size (the last may be short), never above the side.
    return tuple(max(1, min(size, side)) for size, side in zip(wanted, level.shape))


def _store_level(group, path, level, axes, compressors, fill_value):
    layout = ({"dimension_names": [axis.name for axis in axes]} if group.metadata.zarr_format == 3
              else {"chunk_key_encoding": {"name": "v2", "separator": "/"}})
    target = group.create_array(path, shape=level.shape, dtype=level.dtype,
                                chunks=level.chunksize, compressors=compressors,
                                fill_value=fill_value, **layout)
    return da.store(level, target, compute=False, lock=False)


def _pyramid_scales(scale, levels):
    scales = [[float(value) for value in scale]]
    for previous, current in zip(levels, levels[1:]):
        steps = (_step(before, after) for before, after in zip(previous.shape, current.shape))
        scales.append([value * step for value, step in zip(scales[-1], steps)])
    return scales


def _step(before, after):
    # The smallest s with ceil(before / s) == after is the [::s] that gave this side; a side
    # that no whole step gives grows by the plain ratio.
    step = -(-before // after) if before and after else 1
    return float(step) if -(-before // step) == after else before / after


def nearest_pyramid(array, axes, min_side=256):
    """A nearest-neighbour pyramid: every second element along y and x, level after level.

    ``array`` (a Dask array, one dimension per axis of ``axes``, among them "y" and "x") is level
    0; the pyramid ends with the first level whose y and x sides are both at most ``min_side``.
    Returns the levels, largest first: none holds values that level 0 lacks, as labels need, and
    each is chunked regularly, along y and x at most as level 0 is.
    """
    names = [axis.name for axis in axes]
    if "y" not in names or "x" not in names or len(names) != array.ndim or min_side < 1:
        raise ValueError(f"nearest_pyramid needs an axis per dimension of the array {array.shape}"
                         f", y and x among them, and min_side >= 1; got {names}, {min_side!r}")
    planes = (names.index("y"), names.index("x"))
    every_second = tuple(slice(None, None, 1 + (axis in planes)) for axis in range(array.ndim))
    levels = [array]
    while any(levels[-1].shape[axis] > min_side for axis in planes):
        smaller = levels[-1][every_second]
        levels.append(smaller.rechunk(_chunk_shape(smaller, array.chunksize)))
    return levels


def label_metadata(colours, version, source=None, properties=None):
    """The ``image-label`` metadata (a dict) of a label image of NGFF ``version``.

    ``colours`` maps label values to RGBA 4-tuples of integers 0 to 255; ``source`` is the
    labelled image's path relative to the label image (NGFF's default ``"../../"`` is the image
    holding the ``labels`` group); ``properties`` (dicts with a "label-value") pass through.
    """
    _check_version(version, "label_metadata")
    colors = [{"label-value": int(value), "rgba": [int(channel) for channel in rgba]}
              for value, rgba in colours.items()]
    if not all(len(rgba) == 4 and 0 <= min(rgba) <= max(rgba) <= 255 for rgba in colours.values()):
        raise ValueError(f"colours={dict(colours)!r} must map label values to RGBA colours: "
                         "four integers 0..255")
    label = {"colors": colors or None, "source": None if source is None else {"image": source},
             "properties": None if properties is None else list(properties),
             "version": version if version == "0.4" else None}
    return {key: value for key, value in label.items() if value is not None}


def labels_group_metadata(names, version):
    """The attributes of a ``labels`` group listing the label images ``names`` (paths in it)."""
    return group_attrs({"labels": list(names)}, _check_version(version, "labels_group_metadata"))
