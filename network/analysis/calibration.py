"""Probabilities that mean what they say: temperature scaling (Guo et al., 2017).

A network is calibrated when, of the images it labels with 80 % confidence,
80 % are right. The lab's models output softmax probabilities, so their
logits are ``log(p)`` up to a per-image constant, which softmax ignores.
Temperature scaling divides those logits by one number ``T`` fitted to
minimise the negative log-likelihood on labelled images:

- ``T > 1`` softens an over-confident model (the lab CNN after many epochs);
- ``T < 1`` sharpens an under-confident one (the label-smoothed ResNet-9,
  whose right answers often carry only 9-19 %).

The predicted class never changes, so accuracy and top-5 stay the same; only
the confidence does. The expected calibration error (ECE) measures the gap:
images are put in 15 equal-width bins by their top probability, and the
bins' |accuracy - mean confidence| are averaged, weighted by their size
(scikit-learn has no ECE, so it is computed here).

The fitted temperature travels beside the model as ``calibration.json``, like
``class_names.json``; ``calibrate(model, val, model_path)`` fits and saves it
after training.

Usage:

    from network.analysis.calibration import (apply_temperature, expected_calibration_error,
                                      fit_temperature, reliability_diagram, temperature_fit)
    T = fit_temperature(val_probs, val_labels)
    fit = temperature_fit(val_probs, val_labels)   # also says why when T is at a bound
    calibrated = apply_temperature(test_probs, T)
    print(expected_calibration_error(test_probs, test_labels),
          expected_calibration_error(calibrated, test_labels))
    reliability_diagram(test_probs, calibrated, test_labels, Path("reliability.png"),
                        temperature=T)
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax

from network.analysis.metrics import cross_entropy
from network.core.errors import LabError
from network.core.files import file_digest, save_figure, write_json_atomic

BINS = 15
T_RANGE = (0.05, 20.0)
# Below 3x chance a model's confidence means nothing yet: it is told so plainly, without
# temperatures and ECEs that would only puzzle.
CHANCE_FACTOR = 3
# float32 softmax outputs can underflow to 0; the smallest normal float32 is the floor of
# the log-probabilities that temperature scaling divides. (The NLL reported is
# metrics.cross_entropy, the same measure as the test loss.)
_FLOOR = float(np.finfo(np.float32).tiny)


def _check(probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) == 0:
        raise LabError(f"expected (images, classes) probabilities, got shape {probs.shape}")
    if labels.shape != (len(probs),):
        raise LabError(f"{len(labels)} labels for {len(probs)} rows of probabilities")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise LabError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return probs, labels.astype(np.int64)


def _logits(probs):
    return np.log(np.maximum(probs, _FLOOR))


def _nll(logits, labels, temperature):
    """Mean negative log-likelihood of softmax(logits / T)."""
    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), labels]))


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature, and whether the search stopped at a bound of its range."""

    temperature: float
    images: int
    accuracy: float            # top-1 on the images fitted to
    classes: int
    bound: str | None = None   # "lower" or "upper" when the best temperature lies there

    @property
    def reason(self):
        """Why the fit stopped at a bound, in one sentence; None when it did not."""
        if self.bound is None:
            return None
        trend = "flatter" if self.bound == "upper" else "sharper"
        said = (f"the fit stopped at the {self.bound} bound of its range ({self.temperature:g}): "
                f"the {trend} the probabilities, the better they fit these {self.images} "
                f"images (top-1 {self.accuracy:.1%}")
        if self.bound == "upper":
            return (f"{said}, chance {1 / self.classes:.0%}); the model's confidence says "
                    "nothing about being right yet, so there is nothing to calibrate")
        return f"{said}); too few or too easy images to calibrate on"


def temperature_fit(probs, labels, bounds=T_RANGE, tolerance=1e-5):
    """The temperature in ``bounds`` that minimises the NLL of the labelled images, as a
    :class:`TemperatureFit` that says whether it lies at a bound.

    The NLL is convex in 1/T, hence unimodal in log T: a bounded scalar search
    on log T finds the minimum. A minimum at or beyond the range returns the
    nearer bound: for a model at chance the NLL keeps falling as T grows (the
    flattest probabilities fit best), for one right on every image as T shrinks.
    """
    probs, labels = _check(probs, labels)
    logits = _logits(probs)
    log_bounds = (math.log(bounds[0]), math.log(bounds[1]))
    result = minimize_scalar(lambda log_t: _nll(logits, labels, math.exp(log_t)),
                             bounds=log_bounds, method="bounded", options={"xatol": tolerance})
    temperature, bound = math.exp(result.x), None
    # The search never evaluates the bounds themselves: one that fits at least as
    # well as its best point means the minimum lies there or beyond.
    for name, value in (("upper", bounds[1]), ("lower", bounds[0])):
        if _nll(logits, labels, value) <= result.fun:
            temperature, bound = value, name
            break
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    return TemperatureFit(temperature, len(labels), accuracy, probs.shape[1], bound)


def fit_temperature(probs, labels, bounds=T_RANGE, tolerance=1e-5):
    """The fitted temperature alone (see :func:`temperature_fit`)."""
    return temperature_fit(probs, labels, bounds, tolerance).temperature


def apply_temperature(probs, temperature):
    """softmax(log(p) / T), row by row; float32 in, float32 out (else float64)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise LabError(f"temperature must be a positive number, got {temperature}")
    probs = np.asarray(probs)
    scaled = softmax(_logits(probs.astype(np.float64)) / temperature, axis=-1)
    return scaled.astype(np.float32 if probs.dtype == np.float32 else np.float64)


def bin_statistics(probs, labels, bins=BINS):
    """Per confidence bin (equal width on [0, 1]): image count, accuracy, mean confidence.

    A bin holds confidences in (lower, upper]; empty bins have accuracy and
    confidence NaN.
    """
    probs, labels = _check(probs, labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, correct, minlength=bins) / counts
        mean_confidence = np.bincount(which, confidence, minlength=bins) / counts
    return counts, accuracy, mean_confidence


def expected_calibration_error(probs, labels, bins=BINS):
    """Top-label ECE: the size-weighted mean |accuracy - confidence| over equal-width bins."""
    return _ece(*bin_statistics(probs, labels, bins))


def _ece(counts, accuracy, confidence):
    filled = counts > 0
    gaps = np.abs(accuracy[filled] - confidence[filled])
    return float(np.sum(counts[filled] * gaps) / counts.sum())


def cross_fitted(probs, labels, folds=2, seed=0):
    """Calibrate each image with a temperature fitted on the other folds.

    For scoring calibration on one labelled set without fitting and judging
    on the same images. Returns (calibrated probabilities, the folds'
    temperatures).
    """
    probs, labels = _check(probs, labels)
    if not 2 <= folds <= len(probs):
        raise LabError(f"cannot split {len(probs)} images into {folds} folds")
    fold = np.random.default_rng(seed).permutation(len(probs)) % folds
    calibrated = np.empty_like(probs)
    temperatures = []
    for k in range(folds):
        held_out = fold == k
        temperature = fit_temperature(probs[~held_out], labels[~held_out])
        calibrated[held_out] = apply_temperature(probs[held_out], temperature)
        temperatures.append(temperature)
    return calibrated, temperatures


def calibration_summary(probs, labels, path=None, folds=2, seed=0, show=False):
    """Everything an evaluation reports about calibration, in one call.

    The ECE and NLL after calibration are cross-fitted (each image calibrated
    with a temperature fitted on the other folds), so they are not judged on
    the images they were fitted to. ``temperature`` is fitted on all images,
    for ``save_temperature``. With ``path``, the reliability diagram (before
    vs cross-fitted) is drawn there.
    """
    probs, labels = _check(probs, labels)
    calibrated, fold_temperatures = cross_fitted(probs, labels, folds, seed)
    temperature = fit_temperature(probs, labels)
    drawn = reliability_bins(probs, calibrated, labels, temperature=temperature)
    if path is not None:
        plot_reliability(drawn, path, show=show)
    return {
        "images": int(len(labels)),
        "bins": BINS,
        "temperature": temperature,
        "fold_temperatures": fold_temperatures,
        "ece": expected_calibration_error(probs, labels),
        "ece_calibrated": expected_calibration_error(calibrated, labels),
        "nll": cross_entropy(probs, labels),
        "nll_calibrated": cross_entropy(calibrated, labels),
        "reliability": drawn,
    }


def reliability_diagram(probs_before, probs_after, labels, path, bins=BINS, temperature=None,
                        show=False):
    """Accuracy against confidence before and after calibration, with the diagonal.

    Draws ``plot_reliability`` from the probabilities and returns what it drew
    (``reliability_bins``), so that the lab report can draw it again in its language.
    """
    drawn = reliability_bins(probs_before, probs_after, labels, bins, temperature)
    plot_reliability(drawn, path, show=show)
    return drawn


def reliability_bins(probs_before, probs_after, labels, bins=BINS, temperature=None):
    """The reliability diagram's numbers, as JSON-ready lists (empty bins: None)."""
    def side(probs):
        counts, accuracy, confidence = bin_statistics(probs, labels, bins)
        return {"count": counts.tolist(), "ece": _ece(counts, accuracy, confidence),
                "accuracy": [None if np.isnan(a) else float(a) for a in accuracy],
                "confidence": [None if np.isnan(c) else float(c) for c in confidence]}

    return {"temperature": temperature, "before": side(probs_before), "after": side(probs_after)}


def plot_reliability(drawn, path, show=False, w=None):
    """The reliability diagram of ``reliability_bins``.

    Above: each non-empty bin's mean confidence and accuracy (on the diagonal
    means calibrated; above it under-confident, below it over-confident).
    Below: the share of images per bin, so sparse bins are seen for what they
    are. The legend gives both ECEs. Texts come from ``w`` (English by default).
    """
    import matplotlib.pyplot as plt

    from network.report.text import english

    w = w or english()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label=w("figure.reliability.perfect"))
    temperature = drawn.get("temperature")
    after = (w("figure.reliability.after_temperature", temperature=w.num(temperature, 2),
               ece="{ece}") if temperature is not None else w("figure.reliability.after",
                                                              ece="{ece}"))
    for key, label, colour in (("before", w("figure.reliability.before", ece="{ece}"),
                                "tab:red"), ("after", after, "tab:blue")):
        counts = np.asarray(drawn[key]["count"], dtype=np.float64)
        accuracy = np.array(drawn[key]["accuracy"], dtype=np.float64)   # None -> nan
        confidence = np.array(drawn[key]["confidence"], dtype=np.float64)
        filled = counts > 0
        top.plot(confidence[filled], accuracy[filled], "o-", color=colour,
                 label=label.format(ece=w.pct(drawn[key]["ece"])))
        bottom.stairs(counts / counts.sum(), np.linspace(0, 1, len(counts) + 1), color=colour,
                      linewidth=2)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.03)  # bins right every time stay whole on the top edge
    top.set_ylabel(w("figure.reliability.accuracy"), fontsize=13)
    top.set_title(w("figure.reliability.title"), fontsize=15)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=11)
    bottom.set_xlabel(w("figure.reliability.confidence"), fontsize=13)
    bottom.set_ylabel(w("figure.reliability.images"), fontsize=13)
    bottom.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: w.pct(v, 0)))
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, show)


# --- The temperature beside the model -------------------------------------------------

def calibration_path(model_path):
    """The temperature travels beside the model: ``<model folder>/calibration.json``."""
    return Path(model_path).with_name("calibration.json")


def save_temperature(model_path, temperature, **info):
    """Write ``calibration.json`` beside the model (atomically).

    ``info`` (e.g. ``fitted_on="validation"``, ``images=10000``, ECEs) is
    stored with it. When the model file exists, its SHA-256 is stored too.
    """
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise LabError(f"temperature must be a positive number, got {temperature!r}")
    payload = {"temperature": value, **info}
    if Path(model_path).is_file():
        payload["model_file"] = Path(model_path).name
        payload["model_sha256"] = file_digest(model_path, "sha256")
    write_json_atomic(calibration_path(model_path), payload)


def load_temperature(model_path):
    """The model's temperature: 1.0 (no change) without ``calibration.json``.

    ``LabError`` when the file is damaged or was fitted for another model file.
    """
    path = calibration_path(model_path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 1.0
    except OSError as err:
        raise LabError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        raise LabError(f"{path} is damaged (not JSON): calibrate again or delete it") from None
    temperature = payload.get("temperature") if isinstance(payload, dict) else None
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not (temperature > 0 and math.isfinite(temperature))):
        raise LabError(f"{path} is damaged (no positive temperature): calibrate again "
                       "or delete it")
    recorded = payload.get("model_sha256")
    if recorded and Path(model_path).is_file() and recorded != file_digest(model_path, "sha256"):
        raise LabError(f"{path} was fitted for another model file: calibrate again "
                       "or delete it")
    return float(temperature)


def near_chance(accuracy, classes):
    """Whether a top-1 accuracy is hardly better than guessing (below 3x chance)."""
    return accuracy < CHANCE_FACTOR / classes


def chance_sentence(accuracy, classes, on=""):
    """The one plain sentence for a model near chance, instead of calibration details;
    ``on`` says on which images, e.g. " on 40 held-out images"."""
    return (f"The model is hardly better than chance ({accuracy:.1%} right{on}, chance "
            f"{1 / classes:.0%}): train longer (more epochs, or all the training images) "
            "before its confidence means anything.")


def calibrate(model, val, model_path):
    """Fit the temperature that makes the saved model's probabilities honest on the
    hold-out images ``val`` (images, labels), save it beside the model and say so in
    one line. Returns it rounded, or None without a hold-out.

    A fit that stops at a bound of its range (one right on nearly every held-out
    image) is saved too, and the line says why. A model near chance on the
    hold-out gets one plain sentence instead (its temperature is saved all the same).
    """
    from network.analysis.metrics import predict
    from network.model_utils import model_images

    images, labels = val[0], val[1]
    if len(images) < 2:
        return None
    fit = temperature_fit(predict(model, model_images(model, images)), labels)
    save_temperature(model_path, fit.temperature, fitted_on="validation", images=len(images))
    line = f"Calibrated on {len(images)} held-out images: temperature {fit.temperature:.3f}"
    if near_chance(fit.accuracy, fit.classes):
        line = chance_sentence(fit.accuracy, fit.classes, f" on {len(images):,} held-out images")
    elif fit.bound is not None:
        line = f"{line}, but {fit.reason}"
    print(line)
    return round(fit.temperature, 4)
