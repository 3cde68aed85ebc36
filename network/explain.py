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

The heat map has the input's size, averages the overlapping patches and is
scaled to [0, 1] (1: the region whose hiding costs the most probability).

The second half works from the per-image test predictions: the wrong answers
given with the highest confidence, a grid of them, and how many stay within
the true class's superclass.

Usage:

    from network.explain import occlusion_map, plot_explained_top5
    heat = occlusion_map(model, x[0], class_index=int(probs[0].argmax()))
    plot_explained_top5(photo, heat, top_names, top_probs, Path("cat_top5.png"), "cat.jpg")

    from network.explain import confident_mistakes, plot_confident_mistakes
    worst = confident_mistakes(y_true, y_pred, confidence, k=16)
    plot_confident_mistakes(images, worst, y_true, y_pred, confidence, names, path)
"""

import numpy as np

from network.errors import LabError
from network.files import save_figure

PATCH = 8
STRIDE = 2
COLORMAP = "jet"  # as in the keras.io Grad-CAM example: red is where the model looks


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
    probs = np.asarray(model.predict(batch, batch_size=len(batch), verbose=0))
    drops = probs[0, class_index] - probs[1:, class_index]
    # Each pixel gets the mean drop of the patches that covered it.
    cover = masks.reshape(len(masks), -1).astype(np.float32)
    heat = (drops.astype(np.float32) @ cover) / cover.sum(axis=0)
    heat = np.maximum(heat, 0).reshape(image.shape[:2])
    if normalize and heat.max() > 0:
        heat /= heat.max()
    return heat.astype(np.float32)


def overlay_heatmap(image, heat, alpha=0.45, colormap=COLORMAP):
    """The photo (RGB uint8, any size) with the heat map blended over it, as RGB uint8.

    The 32x32 map is upsampled smoothly to the photo's size, so a large photo
    gets a soft overlay rather than 32x32 blocks.
    """
    import cv2
    import matplotlib

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise LabError(f"expected an RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255 + alpha * colours
    return np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8)


def plot_explained_top5(image, heat, names, probs, path, title, show=False):
    """Photo | heat-map overlay | top-5 bar chart, in one PNG.

    The bar chart shows the five most likely classes; the middle panel shows
    where the network found its first class (``names[0]``).
    """
    import matplotlib.pyplot as plt

    fig, (photo, overlay, chart) = plt.subplots(1, 3, figsize=(13, 4),
                                                gridspec_kw={"width_ratios": [1, 1, 1.4]})
    photo.imshow(image)
    photo.set_title(title, fontsize=11)
    overlay.imshow(overlay_heatmap(image, heat))
    overlay.set_title(f"Where it sees {names[0]}", fontsize=11)
    for ax in (photo, overlay):
        ax.axis("off")
    positions = np.arange(len(names))[::-1]
    bars = chart.barh(positions, probs, color="tab:blue")
    chart.set_yticks(positions, names, fontsize=11)
    chart.set_xlim(0, 1)
    chart.set_xlabel("Probability")
    chart.bar_label(bars, labels=[f"{p:.1%}" for p in probs], padding=3)
    for side in ("top", "right"):
        chart.spines[side].set_visible(False)
    chart.set_title("Top-5 prediction", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path, show)


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
                            show=False):
    """A 4-column grid of the given test images with true class, prediction and its probability."""
    import matplotlib.pyplot as plt

    cols = 4
    rows = max(1, -(-len(indices) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        ax.imshow(images[i])
        ax.set_title(f"True: {names[y_true[i]]}\nPredicted: {names[y_pred[i]]} "
                     f"({confidence[i]:.1%})", fontsize=11, color="red")
    if len(indices) == 0:
        axes[0, 0].text(0, 0.5, "No wrong predictions", fontsize=13)
    fig.suptitle("The most confident mistakes", fontsize=16)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # keep the first row's titles off the suptitle
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


def mistakes_sentence(summary):
    """One sentence for the report from ``mistakes_summary``."""
    count = summary["mistakes"]
    if not count:
        return "The model made no mistakes on these test images."
    return (f"In {summary['same_superclass']} of the {count} most confident mistakes "
            f"({summary['same_superclass_share']:.0%}), the predicted class lies in the true "
            f"class's superclass; a wrong class drawn at random would in "
            f"{summary['chance_share']:.0%}.")
