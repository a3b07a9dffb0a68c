"""Pictures for people: label maps coloured by component, and a small line plot, as RGB arrays.

Everything is drawn into NumPy arrays; only the text of the plot is rasterised with Pillow's
built-in bitmap font. Writing the PNG files is :func:`daskgmm.images.write_png`'s job.
"""

import numpy as np

from daskgmm.model_config import effective_mask

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (200, 200, 200)
# Distinct line colours (Tableau 10), one per series.
SERIES_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                  (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]


# The percentiles of each band that a preview's stretch maps to 0 and 255.
STRETCH_PERCENTILES = (2.0, 98.0)


def component_colours(means, input_dtype, channels=None, used=None, counts=None):
    """Return one RGB colour per component from its mean, in the input's units.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_channels)
        Component means in the units of the input pixels.
    input_dtype : numpy dtype
        uint8 means are used as they are; other means are stretched to 0..255 over the range of
        the chosen channels across components, or, with ``counts``, each channel over its
        :data:`STRETCH_PERCENTILES` in the picture.
    channels : list of int, optional
        Three channels to show as red, green and blue, or one to show as grey; the first three
        (or the first, with fewer than three channels) when None.
    used : ndarray of bool of shape (n_components,), optional
        The components the model uses (a Bayesian mixture's effective ones); only their means
        set the stretch, and each other component takes the colour of the used one nearest
        to it. All when None.
    counts : ndarray of shape (n_components,), optional
        The pixels labelled with each component: a picture painted with the means holds each
        mean that many times, so its percentiles are the means' percentiles so weighted.

    Returns
    -------
    ndarray of shape (n_components, 3), dtype uint8
    """
    means = np.asarray(means, dtype=np.float64)
    used = np.ones(len(means), dtype=bool) if used is None or not np.any(used) else used
    nearest = np.flatnonzero(used)[np.argmin(
        ((means[:, None] - means[used][None]) ** 2).sum(-1), axis=1)]
    means = means[nearest]  # a used component is its own nearest
    if channels is None:
        channels = [0, 1, 2] if means.shape[1] >= 3 else [0]
    shown = means[:, channels]
    if np.dtype(input_dtype) != np.uint8:
        low, high = (shown.min(), shown.max()) if counts is None else _percentiles(shown, counts)
        span = np.where(high > low, high - low, 1.0)
        shown = np.where(high > low, (shown - low) / span * 255, 128.0)
    if shown.shape[1] == 1:
        shown = np.repeat(shown, 3, axis=1)
    return np.clip(np.rint(shown), 0, 255).astype(np.uint8)


def label_colours(fitted, input_dtype, bands, counts):
    """The colour of each component: its mean in ``bands`` (a Bayesian mixture's nearest
    effective component's), stretched over the picture's percentiles (see
    :func:`component_colours`)."""
    means = fitted.model.means_
    if fitted.scaler is not None:
        means = fitted.scaler.inverse(means)
    return component_colours(means, input_dtype, bands, effective_mask(fitted.model), counts)


def _percentiles(values, counts):
    """Each column's :data:`STRETCH_PERCENTILES` over rows weighted by ``counts``: the lowest
    value whose weighted share reaches each percentile."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        return values.min(axis=0), values.max(axis=0)
    bounds = []
    for percentile in STRETCH_PERCENTILES:
        column = []
        for values_of_band in values.T:
            order = np.argsort(values_of_band, kind="stable")
            shares = np.cumsum(counts[order]) / counts.sum() * 100
            place = min(int(np.searchsorted(shares, percentile)), len(order) - 1)
            column.append(values_of_band[order][place])
        bounds.append(np.array(column))
    return bounds[0], bounds[1]


def colour_labels(labels, colours):
    """Return an RGB image of ``labels`` painted with ``colours``; other labels (no data) black.

    One look-up in a table of every label value: no mask or copy of the labels' size.
    """
    table = np.zeros((max(len(colours), int(labels.max(initial=0)) + 1), 3), dtype=np.uint8)
    table[:len(colours)] = np.asarray(colours, dtype=np.uint8)
    return table[labels]


def _segment(canvas, start, end, colour, width=2):
    """Draw a straight line of ``width`` pixels between two (x, y) points."""
    steps = int(max(abs(end[0] - start[0]), abs(end[1] - start[1]))) + 1
    xs = np.rint(np.linspace(start[0], end[0], steps)).astype(int)
    ys = np.rint(np.linspace(start[1], end[1], steps)).astype(int)
    for dx in range(width):
        for dy in range(width):
            _paint(canvas, xs + dx, ys + dy, colour)


def _paint(canvas, xs, ys, colour):
    inside = (xs >= 0) & (xs < canvas.shape[1]) & (ys >= 0) & (ys < canvas.shape[0])
    canvas[ys[inside], xs[inside]] = colour


def _marker(canvas, centre, colour, radius=3):
    x, y = int(round(centre[0])), int(round(centre[1]))
    ys, xs = np.mgrid[y - radius : y + radius + 1, x - radius : x + radius + 1]
    _paint(canvas, xs.ravel(), ys.ravel(), colour)


def _text(canvas, items):
    """Write ``(x, y, text, colour)`` items onto the canvas with Pillow's default font."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for x, y, text, colour in items:
        draw.text((x, y), text, fill=colour)
    canvas[...] = np.asarray(image)


def _scale(values, low_pixel, high_pixel, pad=0.0):
    """Return a function mapping values linearly onto [low_pixel, high_pixel], and its range."""
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        low, high = low - 1.0, high + 1.0
    margin = (high - low) * pad
    low, high = low - margin, high + margin
    return (lambda v: low_pixel + (v - low) / (high - low) * (high_pixel - low_pixel)), low, high


def line_plot(series, x_label, y_label, title, highlight=None, size=(640, 420)):
    """Return an RGB line plot of several series that share the x axis.

    Parameters
    ----------
    series : dict of str to (xs, ys)
        One line (with markers) per entry, named in the legend.
    x_label, y_label, title : str
    highlight : (x, y), optional
        A point to ring in black (e.g. the best model).
    size : (width, height), default=(640, 420)

    Returns
    -------
    ndarray of shape (height, width, 3), dtype uint8
    """
    width, height = size
    left, right, top, bottom = 80, width - 150, 40, height - 50
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    all_x = np.concatenate([np.asarray(xs, float) for xs, _ in series.values()])
    all_y = np.concatenate([np.asarray(ys, float) for _, ys in series.values()])
    to_x, _, _ = _scale(all_x, left + 10, right - 10)
    to_y, y_low, y_high = _scale(all_y, bottom, top, pad=0.05)
    texts = [(left, 12, title, BLACK), ((left + right) // 2 - 20, height - 20, x_label, BLACK),
             (8, 12, y_label, BLACK)]
    for value in np.linspace(y_low, y_high, 5):
        _segment(canvas, (left, to_y(value)), (right, to_y(value)), GREY, width=1)
        texts.append((8, int(to_y(value)) - 6, f"{value:.5g}", BLACK))
    for value in np.unique(all_x):
        texts.append((int(to_x(value)) - 3, bottom + 8, f"{value:g}", BLACK))
    for corner_a, corner_b in [((left, top), (right, top)), ((left, bottom), (right, bottom)),
                               ((left, top), (left, bottom)), ((right, top), (right, bottom))]:
        _segment(canvas, corner_a, corner_b, BLACK, width=1)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        points = [(to_x(x), to_y(y)) for x, y in zip(xs, ys)]
        for start, end in zip(points, points[1:]):
            _segment(canvas, start, end, colour)
        for point in points:
            _marker(canvas, point, colour)
        legend_y = top + 10 + 18 * i
        _segment(canvas, (right + 12, legend_y), (right + 32, legend_y), colour)
        texts.append((right + 38, legend_y - 6, str(name), BLACK))
    if highlight is not None:
        _ring(canvas, (to_x(highlight[0]), to_y(highlight[1])))
    _text(canvas, texts)
    return canvas


def _ring(canvas, centre, radius=7):
    angles = np.linspace(0, 2 * np.pi, 64)
    for r in (radius, radius + 1):
        xs = np.rint(centre[0] + r * np.cos(angles)).astype(int)
        ys = np.rint(centre[1] + r * np.sin(angles)).astype(int)
        _paint(canvas, xs, ys, BLACK)
