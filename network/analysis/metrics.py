"""Metrics, tables and figures shared by the training, evaluation and test scripts.

Every figure is saved as PNG (atomically) and shown only when asked. Its texts
come from the report's catalogues (``network/report/locale``): the scripts draw
them in English, and make_report draws its own copies in the report's language
by passing ``w=Words("uk")`` and the class names as the report shows them.

Usage:

    from network.analysis.metrics import plot_history
    plot_history(history, Path("reports/training_curves.png"))              # English
    plot_history(history, Path("curves_uk.png"), w=Words("uk"))             # Ukrainian
"""

import math
import textwrap

import numpy as np
import pandas as pd

from network.core.files import save_figure
from network.report.style import MARKS, MATRIX_RGB, WHITE_TEXT_ABOVE, hex_colour
from network.report.text import english


def predict(model, images, batch_size=256):
    """Class probabilities for images in the form the model takes
    (``model_utils.model_images``), as a float32 array."""
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(probs, dtype=np.float32)


def predict_flip_averaged(model, images, batch_size=256, probs=None):
    """Test-time flip averaging: the mean of the probabilities of each image and of its
    mirror image (``probs``: those of the images, when already predicted)."""
    probs = predict(model, images, batch_size) if probs is None else probs
    return (probs + predict(model, images[:, :, ::-1, :], batch_size)) / 2


# The smallest probability a cross-entropy counts: Keras's epsilon, where its own loss
# clips, so the test loss reported and the training curves' loss measure the same thing.
PROBABILITY_FLOOR = 1e-7


def cross_entropy(probs, labels):
    """Mean cross-entropy (negative log-likelihood) of the true classes ``labels``.

    The one definition behind every loss the lab reports: the test loss, and the
    NLL before and after calibration. A true-class probability below
    ``PROBABILITY_FLOOR`` counts as the floor, so one image given 0 cannot make the
    mean infinite.
    """
    probs = np.asarray(probs, dtype=np.float64)
    picked = probs[np.arange(len(probs)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0))))


def evaluate_probabilities(probs, y_true, coarse_true, fine_to_coarse):
    """Top-1, top-5 and superclass accuracy and cross-entropy of predictions.

    A prediction counts for the superclass accuracy when its fine class lies in
    the true image's superclass.
    """
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    y_true = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    return {
        "images": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "loss": cross_entropy(probs, y_true),
        "top5_accuracy": float(top_k_accuracy_score(y_true, probs, k=5,
                                                    labels=np.arange(probs.shape[1]))),
        "superclass_accuracy": float(np.mean(np.asarray(fine_to_coarse)[pred] == coarse_true)),
    }


def superclass_matrix(y_true, y_pred, fine_to_coarse, num_superclasses):
    """The 20 x 20 confusion matrix of the true and predicted classes' superclasses."""
    from sklearn.metrics import confusion_matrix

    mapping = np.asarray(fine_to_coarse)
    return confusion_matrix(mapping[np.asarray(y_true)], mapping[np.asarray(y_pred)],
                            labels=np.arange(num_superclasses))


def most_confused_pairs(cm, k=10):
    """The ``k`` unordered class pairs with the most mistakes, both directions summed.

    Returns (a, b, a predicted as b, b predicted as a) tuples, most mistakes
    first, each turned so that a -> b is the more frequent direction; pairs
    never confused are left out.
    """
    both = np.triu(cm + cm.T, k=1)
    a, b = np.nonzero(both)
    order = np.lexsort((b, a, -both[a, b]))[:k]  # most first, then by class index
    pairs = []
    for i, j in zip(a[order].tolist(), b[order].tolist()):
        if cm[j, i] > cm[i, j]:
            i, j = j, i
        pairs.append((i, j, int(cm[i, j]), int(cm[j, i])))
    return pairs


def per_class_scores(y_true, y_pred, names, fine_to_coarse, coarse_names):
    """Precision, recall, F1 and test images of every class, worst F1 first."""
    from sklearn.metrics import precision_recall_fscore_support

    scores = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(len(names)),
                                             zero_division=0)
    rows = [{"name": name, "superclass": coarse_names[fine_to_coarse[i]], "precision": p,
             "recall": r, "f1": f1, "support": int(n)}
            for i, (name, p, r, f1, n) in enumerate(zip(names, *scores))]
    return sorted(rows, key=lambda r: (r["f1"], r["recall"], r["name"]))


def load_history(csv_path):
    """Read history.csv, keeping the last row of any epoch a resumed run repeated.

    Only reads: training writes the cleaned table back itself.

    Keras's CSVLogger adds empty ``val_*`` columns to a run without validation
    (and a meaningless ``val_epoch_time_s``); those are dropped, so the file
    and the curves show only what was measured.
    """
    history = pd.read_csv(csv_path)
    empty = [c for c in history if c.startswith("val_") and history[c].isna().all()]
    history = history.drop(columns=[*empty, "val_epoch_time_s"], errors="ignore")
    history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
    return history.reset_index(drop=True)


def epoch_numbers(history):
    """The epochs counted from 1, whether history.csv counts from 0 (Keras) or from 1."""
    epochs = history["epoch"].astype(int)
    return epochs + 1 if epochs.min() == 0 else epochs


def has_validation(history):
    return "val_loss" in history and history["val_loss"].notna().any()


def wrap_lines(text, width):
    """Each line of ``text`` wrapped at ``width`` characters: long class names (in any
    language) take two lines instead of running into the next image's title."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def plot_history(history, path, show=False, w=None):
    """Loss and accuracy (in %) per epoch, training vs validation, side by side.

    Drawn at the width of a printed A4 page (6.6 in), so its text stays at 9 pt
    or more on paper.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    w = w or english()
    epochs = epoch_numbers(history)
    fig, axes = plt.subplots(1, 2, figsize=(6.6, 3.1))
    for ax, metric, scale in ((axes[0], "loss", 1), (axes[1], "accuracy", 100)):
        # clip_on=False: a line at 0 % stays visible on the axis.
        ax.plot(epochs, history[metric] * scale, "o-", label=w(f"figure.curves.training_{metric}"),
                clip_on=False)
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"] * scale, "o-",
                    label=w(f"figure.curves.validation_{metric}"), clip_on=False)
        ax.set_xlabel(w("figure.curves.epoch"), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5"
        if len(epochs) == 1:  # one point: a tick at it, not a zoomed axis of fractions
            ax.set_xticks(list(epochs), list(map(str, epochs)))
        ax.set_ylabel(w(f"figure.curves.{metric}"), fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    # A chance-level model sits near 1 %: start the axis at 0 so it does not look like 100.
    axes[1].set_ylim(bottom=0)
    fig.suptitle(w("figure.curves.title" if has_validation(history)
                   else "figure.curves.title_no_validation"), fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, show)


def plot_confusion_matrix(cm, names, coarse_names, fine_to_coarse, path, show=False, cols=4,
                          block=(3.0, 3.1), title_size=15, w=None):
    """The confusion matrix as one block per superclass, so every class name is legible.

    A 100 x 100 matrix at page width leaves a few pixels per class. Each block
    shows the classes of one superclass against each other, plus an
    "elsewhere" column for predictions outside the superclass (the report's
    superclass matrix and confused pairs tell where those went). Shades are
    shares of the true class's test images; numbers are image counts.

    ``cols`` blocks of ``block`` (width, height) inches per row: the lab report
    prints a few superclasses at a time, 3 blocks to a 6.6-inch row, so the
    10 pt labels stay 10 pt on paper.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    w = w or english()
    # White to the report's blue, as the superclass matrix's cells on the page and in Word.
    shades = LinearSegmentedColormap.from_list("shares", ["#ffffff", hex_colour(MATRIX_RGB)])
    cm = np.asarray(cm)
    fine_to_coarse = np.asarray(fine_to_coarse)
    totals = cm.sum(axis=1)
    rows = math.ceil(len(coarse_names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(block[0] * cols, block[1] * rows),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(coarse_names):]:
        ax.axis("off")
    for ax, (coarse, coarse_name) in zip(axes.flat, enumerate(coarse_names)):
        members = np.flatnonzero(fine_to_coarse == coarse)
        block = cm[np.ix_(members, members)]
        counts = np.column_stack([block, totals[members] - block.sum(axis=1)])
        shares = counts / np.maximum(totals[members], 1)[:, None]
        image = ax.imshow(shares, cmap=shades, vmin=0, vmax=1, aspect="auto")
        for (i, j), count in np.ndenumerate(counts):
            if count:
                ax.text(j, i, count, ha="center", va="center", fontsize=9,
                        color="white" if shares[i, j] > WHITE_TEXT_ABOVE else "black")
        labels = [names[m] for m in members]
        ax.set_yticks(range(len(members)), labels, fontsize=10)
        ax.set_xticks(range(len(members) + 1), [*labels, w("figure.confusion.elsewhere")],
                      fontsize=10, rotation=40, ha="right", rotation_mode="anchor")
        # Long names take two lines, so narrow blocks' titles do not run into each other.
        ax.set_title(textwrap.fill(coarse_name.replace("_", " "), 20 if cols < 4 else 40),
                     fontsize=11, fontweight="bold")
    fig.colorbar(image, ax=axes, location="bottom", shrink=0.5, aspect=40, pad=0.01,
                 label=w("figure.confusion.scale"))
    if title_size:  # None: the figure's caption says it
        fig.suptitle(w("figure.confusion.title"), fontsize=title_size)
    save_figure(fig, path, show)


def plot_test_samples(images, true_names, pred_names, path, show=False, w=None):
    """A grid of images titled with true and predicted names.

    Right and wrong differ by a mark, the word and the frame's style, not by
    colour alone (red and green look alike to many people).
    """
    import matplotlib.pyplot as plt

    w = w or english()
    cols = 4
    rows = math.ceil(len(images) / cols)
    # The width of a printed A4 page: the 9 pt titles stay 9 pt on paper.
    fig, axes = plt.subplots(rows, cols, figsize=(6.6, 2.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred in zip(axes.flat, images, true_names, pred_names):
        right = true == pred
        color = "green" if right else "red"
        ax.axis("on")
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color=color, linewidth=2.5, linestyle="-" if right else (0, (2, 1.5)))
        verdict = (f"{MARKS['ok']} {w('figure.samples.right')}" if right
                   else f"{MARKS['bad']} {w('figure.samples.wrong')}")
        ax.set_title(wrap_lines(w("figure.samples.label", verdict=verdict, true=true,
                                  predicted=pred), 24), fontsize=9, color=color)
    fig.suptitle(w("figure.samples.title"), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # keep the first row's titles off the suptitle
    save_figure(fig, path, show)
