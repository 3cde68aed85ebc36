"""Metrics, tables and figures shared by the training, evaluation and test scripts.

Every figure is saved as PNG (atomically) and shown only when asked.
"""

import numpy as np
import pandas as pd

from network.cli import save_figure


def predict(model, images, batch_size=256):
    """Class probabilities for float images in [0, 1], as a float32 array."""
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(probs, dtype=np.float32)


def evaluate_probabilities(probs, y_true, coarse_true, fine_to_coarse):
    """Top-1, top-5 and superclass accuracy and cross-entropy of predictions.

    A prediction counts for the superclass accuracy when its fine class lies in
    the true image's superclass.
    """
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    y_true = np.asarray(y_true)
    pred = probs.argmax(axis=1)
    picked = probs[np.arange(len(y_true)), y_true]
    return {
        "images": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "loss": float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))),
        "top5_accuracy": float(top_k_accuracy_score(y_true, probs, k=5,
                                                    labels=np.arange(probs.shape[1]))),
        "superclass_accuracy": float(np.mean(np.asarray(fine_to_coarse)[pred] == coarse_true)),
    }


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
    return history


def plot_history(history, path, show=False):
    """Loss and accuracy, training vs validation, side by side (the manual's figure)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = history["epoch"] + 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, history[metric], "o-", label=f"Training {title.lower()}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "o-", label=f"Validation {title.lower()}")
        ax.set_xlabel("Epoch", fontsize=13)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5"
        ax.set_ylabel(title, fontsize=13)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Loss and accuracy during training", fontsize=15)
    save_figure(fig, path, show)


def plot_confusion_matrix(cm, names, path, title="Confusion matrix", show=False):
    """A class-by-class confusion matrix (rows: true class, columns: predicted)."""
    import matplotlib.pyplot as plt

    n = len(names)
    size = max(6, 0.17 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=6 if n > 30 else 9)
    ax.set_yticks(range(n), names, fontsize=6 if n > 30 else 9)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    save_figure(fig, path, show)


def plot_test_samples(images, true_names, pred_names, path, show=False):
    """A grid of images titled with true and predicted names (green right, red wrong)."""
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred in zip(axes.flat, images, true_names, pred_names):
        ax.imshow(image)
        ax.set_title(f"True: {true}\nPredicted: {pred}", fontsize=11,
                     color="green" if true == pred else "red")
    fig.suptitle("Images with true and predicted labels", fontsize=16)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # keep the first row's titles off the suptitle
    save_figure(fig, path, show)


def plot_top5(image, names, probs, path, title, show=False):
    """The image beside a horizontal bar chart of its five most likely classes."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4),
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    left.imshow(image)
    left.set_title(title, fontsize=11)
    left.axis("off")
    positions = np.arange(len(names))[::-1]
    bars = right.barh(positions, probs, color="tab:blue")
    right.set_yticks(positions, names, fontsize=11)
    right.set_xlim(0, 1)
    right.set_xlabel("Probability")
    right.bar_label(bars, labels=[f"{p:.1%}" for p in probs], padding=3)
    for side in ("top", "right"):
        right.spines[side].set_visible(False)
    right.set_title("Top-5 prediction", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path, show)
