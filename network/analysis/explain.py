"""Where the network looks, and which of its mistakes it is most sure of.

Occlusion sensitivity (Zeiler & Fergus, 2014): a grey patch is slid over the
image, and wherever hiding the pixels lowers the probability of the class the
most, the network was looking there. It was chosen over Grad-CAM because

- it is easy to explain: "cover this part and the model is less sure";
- it needs only forward passes, so it works unchanged on the TensorFlow, JAX
  and PyTorch backends (Keras 3 has no backend-neutral gradient call) and for
  any model, the lab's Sequential CNN as well as the ResNet-9;
- it is cheap at 32x32: all 169 occluded copies (8x8 patch, stride 2) plus the
  original go through the network as one batch, in one ``predict`` call.

The heat map has the input's size and averages the overlapping patches: the
drop of the class's probability when each region is hidden (or, normalised,
scaled to [0, 1]). The chart draws it on a colour scale from 0 to the class's
probability, the most that hiding can take away, so a strong colour always
means a large drop; a model that no region moves (one at chance, every class
about 1 %) gets "nothing to show" instead of a scale stretched over noise.

The second half works from the per-image test predictions: the wrong answers
given with the highest confidence, a grid of them, and how many stay within
the true class's superclass.

Usage:

    from network.analysis.explain import occlusion_map, plot_explained_top5
    heat = occlusion_map(model, x[0], class_index=int(probs[0].argmax()))
    plot_explained_top5(photo, heat, top_names, top_probs, Path("cat_top5.png"), "cat.jpg")

    from network.analysis.explain import confident_mistakes, plot_confident_mistakes
    worst = confident_mistakes(y_true, y_pred, confidence, k=16)
    plot_confident_mistakes(images, worst, y_true, y_pred, confidence, names, path)
"""

import math

import numpy as np

from network.core.errors import LabError
from network.core.files import save_figure
from network.report.text import english

PATCH = 8
STRIDE = 2
COLORMAP = "jet"  # as in the keras.io Grad-CAM example: red is where the model looks
MIN_DROP = 0.01   # a heat map whose largest drop is below 1 percentage point shows nothing
# The charts are drawn wider than a printed A4 page's 6.7 inches (sharper on paper): their
# text is sized so that, shrunk to the page, it stays at 9 pt or more.
TOP5_SIZE, TOP5_FONT = (10.5, 4.2), 16
GRID_WIDTH, GRID_FONT = 10, 14


# --- Occlusion sensitivity -----------------------------------------------------------

def _starts(size, patch, stride):
    """Patch origins along one axis; the last one touches the border, so every pixel is covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.array(starts)


def occlusion_masks(height, width, patch=PATCH, stride=STRIDE):
    """Boolean masks (positions, height, width), True where each patch covers the image."""
    if not 1 <= patch <= min(height, width) or stride < 1:
        raise LabError(f"occlusion patch {patch} with stride {stride} does not fit a "
                       f"{height}x{width} image")
    rows, cols = _starts(height, patch, stride), _starts(width, patch, stride)
    top, left = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    r, c = np.arange(height), np.arange(width)
    in_rows = (r >= top[:, None]) & (r < top[:, None] + patch)      # (positions, height)
    in_cols = (c >= left[:, None]) & (c < left[:, None] + patch)    # (positions, width)
    return in_rows[:, :, None] & in_cols[:, None, :]


def occlusion_map(model, image, class_index, patch=PATCH, stride=STRIDE, fill=None,
                  normalize=True):
    """Occlusion-sensitivity heat map of one image for one class.

    ``image`` is a uint8 (height, width, 3) image, given to the model in the
    form it takes (``model_utils.model_images``), or a float one in [0, 1]
    given as it is. Each patch is filled with ``fill`` (default: the CIFAR-100
    mean colour, which carries no evidence for any class). All occluded copies and the
    original are predicted as one batch. Returns a float32 (height, width)
    map: the mean drop of the class's probability over the patches covering
    each pixel, clipped at 0 (hiding distractors may raise it) and, with
    ``normalize``, divided by its maximum. A model that ignores every region
    gets an all-zero map.
    """
    from network.model_utils import CIFAR100_MEAN, model_images

    image = np.asarray(image)
    pixels = image.dtype == np.uint8
    if not pixels:
        image = image.astype(np.float32)
    if image.ndim != 3:
        raise LabError(f"expected one (height, width, channels) image, got shape {image.shape}")
    if fill is None:
        fill = np.round(np.multiply(CIFAR100_MEAN, 255)) if pixels else CIFAR100_MEAN
    masks = occlusion_masks(image.shape[0], image.shape[1], patch, stride)
    fill = np.broadcast_to(np.asarray(fill, dtype=image.dtype), image.shape[-1:])
    occluded = np.where(masks[..., None], fill, image)          # (positions, h, w, c)
    batch = np.concatenate([image[None], occluded])
    if pixels:
        batch = model_images(model, batch)
    probs = predict_fixed(model, batch, len(batch))
    drops = probs[0, class_index] - probs[1:, class_index]
    # Each pixel gets the mean drop of the patches that covered it.
    cover = masks.reshape(len(masks), -1).astype(np.float32)
    heat = (drops.astype(np.float32) @ cover) / cover.sum(axis=0)
    heat = np.maximum(heat, 0).reshape(image.shape[:2])
    if normalize and heat.max() > 0:
        heat /= heat.max()
    return heat.astype(np.float32)


def occlusion_batch_size(height=32, width=32, patch=PATCH, stride=STRIDE):
    """Rows of one occlusion batch: every occluded copy and the original (170 at 32x32)."""
    return len(occlusion_masks(height, width, patch, stride)) + 1


def predict_fixed(model, batch, rows):
    """``model.predict`` in batches of exactly ``rows`` images, the last one padded.

    TensorFlow traces the predict function again for every new batch shape (and
    warns about it); a script that predicts a few photos and then each one's
    occlusion batch keeps to one shape this way.
    """
    batch = np.asarray(batch)
    padding = -len(batch) % rows
    if padding:
        batch = np.concatenate([batch, np.repeat(batch[:1], padding, axis=0)])
    probs = np.asarray(model.predict(batch, batch_size=rows, verbose=0), dtype=np.float32)
    return probs[:len(probs) - padding]


def overlay_heatmap(image, heat, alpha=0.45, colormap=COLORMAP, vmax=1.0):
    """The photo (RGB uint8, any size) with the heat map blended over it, as RGB uint8.

    The map's colours run from 0 to ``vmax`` (above it, the top colour). The
    32x32 map is upsampled smoothly to the photo's size, so a large photo gets
    a soft overlay rather than 32x32 blocks.
    """
    import cv2
    import matplotlib

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise LabError(f"expected an RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    colours = matplotlib.colormaps[colormap](np.clip(heat / vmax, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255 + alpha * colours
    return np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8)


def plot_explained_top5(image, heat, names, probs, path, title, show=False, w=None):
    """Photo | heat map with its colour scale | top-5 bar chart, in one PNG.

    ``heat`` is ``occlusion_map(..., normalize=False)`` for the first class
    (``names[0]``): the drop of its probability when each region is hidden.
    Its colour scale runs from 0 to that class's probability, in percentage
    points; when no region lowers it by ``MIN_DROP``, the middle panel says
    there is nothing to show. ``title`` is shown as given (a file name); the other
    texts come from ``w`` (a report catalogue, English by default).
    """
    import matplotlib.pyplot as plt

    w = w or english()
    with plt.rc_context({"font.size": TOP5_FONT}):  # tick labels too
        fig = plt.figure(figsize=TOP5_SIZE, layout="constrained")
        grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.5], height_ratios=[1, 0.06])
        photo, overlay = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        photo.imshow(image)
        photo.set_title(_shorten(title, 24), fontsize=TOP5_FONT)
        _draw_heat(fig, overlay, fig.add_subplot(grid[1, 1]), image, heat, names[0],
                   float(probs[0]), w)
        for ax in (photo, overlay):
            ax.axis("off")
        fig.add_subplot(grid[1, 0]).axis("off")
        _draw_top5(fig.add_subplot(grid[:, 2]), names, probs, w)
        save_figure(fig, path, show)


def _shorten(text, width):
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _draw_heat(fig, ax, scale_ax, image, heat, name, top_prob, w):
    """The overlay and its colour scale (drop of ``name``'s probability, in points)."""
    import matplotlib
    from matplotlib.cm import ScalarMappable

    heat = np.asarray(heat, dtype=np.float32)
    vmax = max(top_prob, 1e-6)
    scale = ScalarMappable(matplotlib.colors.Normalize(0, vmax * 100), COLORMAP)
    bar = fig.colorbar(scale, cax=scale_ax, orientation="horizontal")
    bar.set_label(w("figure.top5.drop"), fontsize=TOP5_FONT)
    bar.locator = matplotlib.ticker.MaxNLocator(4)
    bar.update_ticks()
    if heat.max() < MIN_DROP:
        faded = (np.asarray(image, dtype=np.float32) * 0.35 + 255 * 0.65).astype(np.uint8)
        ax.imshow(faded)
        ax.text(0.5, 0.5, w("figure.top5.nothing", count=round(MIN_DROP * 100)),
                transform=ax.transAxes, ha="center", va="center", fontsize=TOP5_FONT)
    else:
        ax.imshow(overlay_heatmap(image, heat, vmax=vmax))
    ax.set_title(w("figure.top5.where", name=_shorten(name, 18)), fontsize=TOP5_FONT)


def _draw_top5(chart, names, probs, w):
    """Horizontal bars in %, the axis matching the labels."""
    positions = np.arange(len(names))[::-1]
    bars = chart.barh(positions, np.asarray(probs) * 100, color="tab:blue")
    chart.set_yticks(positions, names, fontsize=TOP5_FONT)
    chart.set_xlim(0, 100)
    chart.set_xlabel(w("figure.top5.probability"), fontsize=TOP5_FONT)
    chart.bar_label(bars, labels=[w.pct(p) for p in probs], padding=3, fontsize=TOP5_FONT)
    for side in ("top", "right"):
        chart.spines[side].set_visible(False)
    chart.set_title(w("figure.top5.title"), fontsize=TOP5_FONT)


# --- Confident mistakes --------------------------------------------------------------

def confident_mistakes(y_true, y_pred, confidence, k=16):
    """Indices of the ``k`` wrong predictions with the highest confidence, most confident first.

    ``confidence`` is the probability of the predicted class. Ties keep the
    images' order, so the result is reproducible. Fewer than ``k`` mistakes
    give them all.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confidence = np.asarray(confidence, dtype=np.float64)
    if not len(y_true) == len(y_pred) == len(confidence):
        raise LabError(f"{len(y_true)} true labels, {len(y_pred)} predictions and "
                       f"{len(confidence)} confidences do not match")
    wrong = np.flatnonzero(y_true != y_pred)
    order = np.argsort(-confidence[wrong], kind="stable")
    return wrong[order][:k]


def plot_confident_mistakes(images, indices, y_true, y_pred, confidence, names, path,
                            show=False, w=None):
    """A 4-column grid of the given test images with true class, prediction and its probability.

    ``images``, ``y_true``, ``y_pred`` and ``confidence`` are indexed by ``indices``.
    """
    import matplotlib.pyplot as plt

    from network.analysis.metrics import wrap_lines

    w = w or english()
    cols = 4
    rows = max(1, math.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(GRID_WIDTH, 3.2 * rows), squeeze=False,
                             layout="constrained")  # titles never run into the row above
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        ax.imshow(images[i])
        label = w("figure.mistakes.label", true=names[y_true[i]], predicted=names[y_pred[i]],
                  probability=w.pct(confidence[i]))
        ax.set_title(wrap_lines(label, 22), fontsize=GRID_FONT, color="red")
    if len(indices) == 0:
        axes[0, 0].text(0, 0.5, w("figure.mistakes.none"), fontsize=GRID_FONT)
    fig.suptitle(w("figure.mistakes.title"), fontsize=GRID_FONT + 2)
    save_figure(fig, path, show)


def mistakes_summary(y_true, y_pred, indices, fine_to_coarse):
    """How the given mistakes relate to the superclasses.

    Returns ``mistakes`` (count), ``same_superclass`` (how many predicted a
    class of the true class's superclass), ``same_superclass_share`` and
    ``chance_share``: the share a wrong class drawn at random would give
    (4 of the 99 other classes on CIFAR-100), for comparison.
    """
    mapping = np.asarray(fine_to_coarse)
    true, pred = np.asarray(y_true)[indices], np.asarray(y_pred)[indices]
    same = int(np.sum(mapping[true] == mapping[pred]))
    # Siblings of each true class among the other classes, averaged over the mistakes.
    sizes = np.bincount(mapping, minlength=mapping.max() + 1)
    chance = (sizes[mapping[true]] - 1) / (len(mapping) - 1)
    count = len(true)
    return {"mistakes": count, "same_superclass": same,
            "same_superclass_share": same / count if count else 0.0,
            "chance_share": float(chance.mean()) if count else 0.0}

