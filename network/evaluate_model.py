"""Evaluate a trained model on the 10,000 CIFAR-100 test images.

Prints the headline figures (accuracy, loss, top-5 and superclass accuracy)
and saves, in the output folder (default ``reports/``):
- ``metrics.json``: test accuracy, loss, top-5 accuracy and superclass
  accuracy (a prediction counts when its class lies in the true superclass);
  with ``--tta`` also the same for test-time flip averaging, reported apart;
- ``classification_report.txt`` / ``.csv``: precision, recall and F1 per class
  with the real class names (``--print-report`` also prints it);
- ``confusion_matrix.png``: the confusion matrix, one block per superclass;
- ``test_predictions.csv``: each test image's true and predicted class and
  the (calibrated) probability of the prediction;
- ``test_samples.png``: 16 distinct random test images titled with their true
  and predicted classes, each marked right or wrong;
- ``confident_mistakes.png``: the 16 wrong predictions made with the highest
  confidence;
- ``reliability_diagram.png``: accuracy against confidence before and after
  calibration (the temperature saved beside the model by training), with the
  expected calibration error (ECE) of each (its numbers are in metrics.json);
- ``figure_data.npz``: the 32 test images of the two grids with their labels, so
  that make_report draws its own copies of the figures in the report's language
  (the PNG files here stay English);
- ``logs/evaluate_model.log``: what it printed, for the lab report.

Usage:

    python -m network.evaluate_model
    python -m network.evaluate_model --quick       # the quick try's model, in reports/quick/
    python -m network.evaluate_model --model-path models/best_model.h5 --subset 1000 --tta
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/evaluate_model.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from network.core import cli, runtime
from network.core.console_log import logged
from network.core.errors import LabError
from network.core.files import write_json_atomic, write_text_atomic
from network.data_utils import NUM_CLASSES, load_cifar100

NUM_SAMPLES = 16
FIGURE_DATA = "figure_data.npz"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="evaluate_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=cli.positive_int,
                        help="evaluate on only the first N test images")
    parser.add_argument("--batch-size", type=cli.positive_int, default=256,
                        help="prediction batch size (default: 256)")
    parser.add_argument("--tta", action="store_true",
                        help="also report test-time augmentation (average with the "
                             "horizontally flipped image)")
    parser.add_argument("--print-report", action="store_true",
                        help="also print the per-class report (100 rows; it is always "
                             "saved in classification_report.txt)")
    cli.add_common_arguments(parser, quick=True)
    args = parser.parse_args(argv)
    cli.apply_quick(args)  # --quick: the quick run's model, and its outputs apart
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    return args


def classification_tables(y_true, y_pred, names):
    """The per-class report as text and as a DataFrame."""
    import pandas as pd
    from sklearn.metrics import classification_report

    labels = np.arange(len(names))
    kwargs = {"labels": labels, "target_names": names, "zero_division": 0}
    text = classification_report(y_true, y_pred, digits=3, **kwargs)
    table = pd.DataFrame(classification_report(y_true, y_pred, output_dict=True, **kwargs))
    return text, table.transpose()


def pick_samples(count, seed, k=NUM_SAMPLES):
    """Indices of ``min(k, count)`` distinct random images out of ``count``.

    The manual drew with replacement, so its grid could show an image twice.
    """
    return np.random.default_rng(seed).choice(count, size=min(k, count), replace=False)


# What each output file holds, for the closing summary.
OUTPUTS = (
    ("metrics.json", "accuracy, loss, top-5 and superclass accuracy"),
    ("classification_report.txt/.csv", "precision, recall and F1 per class (--print-report)"),
    ("test_predictions.csv", "each test image's true and predicted class"),
    ("confusion_matrix.png", "the confusion matrix, one block per superclass"),
    ("test_samples.png", f"{NUM_SAMPLES} random test images, true and predicted class"),
    ("confident_mistakes.png", f"the {NUM_SAMPLES} most confident wrong predictions"),
    ("reliability_diagram.png", "calibration: accuracy against confidence, before/after"),
    ("figure_data.npz", "the images the figures show, for the lab report's own copies"),
)


def print_summary(metrics, out):
    """The headline figures and where the files are."""
    print(f"Accuracy: {metrics['accuracy']:.2%}  Loss: {metrics['loss']:.4f}  "
          f"Top-5 accuracy: {metrics['top5_accuracy']:.2%}  "
          f"Superclass accuracy: {metrics['superclass_accuracy']:.2%}")
    if "tta" in metrics:
        tta = metrics["tta"]
        print(f"With flip TTA: accuracy {tta['accuracy']:.2%}, top-5 {tta['top5_accuracy']:.2%}")
    from network.analysis.calibration import chance_sentence, near_chance

    cal = metrics["calibration"]
    if near_chance(metrics["accuracy"], NUM_CLASSES):  # its ECE would only puzzle
        print(chance_sentence(metrics["accuracy"], NUM_CLASSES))
    else:
        print(f"Calibration error (ECE): {cal['ece']:.1%} as trained, "
              f"{cal['ece_calibrated']:.1%} with temperature {cal['temperature']:.2f} "
              f"({cal['fitted_on']})")
    print(f"Saved in {cli.display_path(out)}:")
    width = max(len(name) for name, _ in OUTPUTS)
    for name, what in OUTPUTS:
        print(f"  {name:<{width}}  {what}")


def calibrate(probs, labels, args, out, show):
    """Calibrated probabilities and the calibration figures, with the reliability diagram.

    The temperature is the one training fitted on held-out images and saved
    beside the model. A model saved without one (trained with no hold-out) is
    scored with a temperature cross-fitted on the test images instead: each
    half calibrated with the other half's fit, so no image judges its own fit.
    """
    from network.analysis.calibration import (
        apply_temperature,
        calibration_path,
        calibration_summary,
        expected_calibration_error,
        load_temperature,
        reliability_diagram,
    )

    figure = out / "reliability_diagram.png"
    if calibration_path(args.model_path).is_file():
        temperature = load_temperature(args.model_path)
        calibrated = apply_temperature(probs, temperature)
        drawn = reliability_diagram(probs, calibrated, labels, figure, temperature=temperature,
                                    show=show)
        return calibrated, {"temperature": temperature, "fitted_on": "held-out training images",
                            "ece": expected_calibration_error(probs, labels),
                            "ece_calibrated": expected_calibration_error(calibrated, labels),
                            "reliability": drawn}
    if len(labels) < 2:
        raise LabError("calibration needs at least 2 test images: raise --subset")
    summary = calibration_summary(probs, labels, figure, seed=args.seed, show=show)
    return (apply_temperature(probs, summary["temperature"]),
            {**summary, "fitted_on": "the test images, cross-fitted (no saved temperature)"})


def score(model, images, labels, coarse, fine_to_coarse, args):
    """Class probabilities of the images and the metrics (with --tta, flip-averaged too)."""
    from network.analysis.metrics import evaluate_probabilities, predict, predict_flip_averaged
    from network.model_utils import model_images

    x = model_images(model, images)  # uint8 for ResNet-9, scaled floats for the lab CNN
    probs = predict(model, x, args.batch_size)
    metrics = evaluate_probabilities(probs, labels, coarse, fine_to_coarse)
    if args.tta:
        metrics["tta"] = evaluate_probabilities(
            predict_flip_averaged(model, x, args.batch_size, probs), labels, coarse,
            fine_to_coarse)
    metrics["model_path"] = str(args.model_path)
    return probs, metrics


def save_tables(labels, predicted, confidence, names, out):
    """The per-class report (.txt/.csv) and each image's prediction; returns the report text."""
    import pandas as pd

    report_text, report_table = classification_tables(labels, predicted, names)
    write_text_atomic(out / "classification_report.txt", report_text)
    write_text_atomic(out / "classification_report.csv",
                          report_table.to_csv(index_label="class"))
    # Each image's true and predicted class, so the lab report needs no second pass.
    table = pd.DataFrame({"image": np.arange(len(labels)), "true": labels,
                          "predicted": predicted, "confidence": confidence.round(6)})
    write_text_atomic(out / "test_predictions.csv", table.to_csv(index=False))
    return report_text


def save_figure_data(path, images, labels, predicted, chosen, worst, confidence):
    """The test images and labels that test_samples.png and confident_mistakes.png show, so
    that make_report can draw them again in the report's language without the data set."""
    from network.core.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, samples_images=images[chosen], samples_true=labels[chosen],
                            samples_predicted=predicted[chosen], mistakes_images=images[worst],
                            mistakes_true=labels[worst], mistakes_predicted=predicted[worst],
                            mistakes_confidence=confidence[worst])


def save_figures(images, labels, predicted, data, args, show):
    """The confusion matrix and the random test images; returns the images' indices."""
    from sklearn.metrics import confusion_matrix

    from network.analysis.metrics import plot_confusion_matrix, plot_test_samples

    names, out = data.fine_names, args.output_dir
    cm = confusion_matrix(labels, predicted, labels=np.arange(len(names)))
    plot_confusion_matrix(cm, names, data.coarse_names, data.fine_to_coarse,
                          out / "confusion_matrix.png", show=show)
    chosen = pick_samples(len(labels), args.seed)
    plot_test_samples(images[chosen], [names[i] for i in labels[chosen]],
                      [names[i] for i in predicted[chosen]], out / "test_samples.png", show=show)
    return chosen


@logged("evaluate_model", parse_args)  # what it prints also goes to logs/evaluate_model.log
def main(argv=None):
    runtime.setup_backend_env()
    args = parse_args(argv)
    # Paths and data first, before the slow Keras import: mistakes are answered at once.
    cli.require_model_file(args.model_path)
    data = load_cifar100(args.data_dir, allow_md5_mismatch=args.allow_md5_mismatch)
    count = len(data.x_test) if args.subset is None else args.subset
    if count > len(data.x_test):
        raise LabError(f"--subset {count} is larger than the {len(data.x_test)} test images")
    show = cli.setup_matplotlib(args.show)
    runtime.start()

    from network.analysis.explain import (
        confident_mistakes,
        mistakes_summary,
        plot_confident_mistakes,
    )
    from network.model_utils import load_model

    model = load_model(args.model_path)
    images, labels = data.x_test[:count], data.y_test[:count]
    out = args.output_dir
    print(f"Evaluating {cli.display_path(args.model_path)} on "
          f"{cli.plural(count, 'test image')}")
    probs, metrics = score(model, images, labels, data.coarse_test[:count],
                           data.fine_to_coarse, args)

    calibrated, metrics["calibration"] = calibrate(probs, labels, args, out, show)
    predicted = probs.argmax(axis=1)
    confidence = calibrated.max(axis=1)
    worst = confident_mistakes(labels, predicted, confidence, k=NUM_SAMPLES)
    plot_confident_mistakes(images[worst], np.arange(len(worst)), labels[worst],
                            predicted[worst], confidence[worst], data.fine_names,
                            out / "confident_mistakes.png", show=show)
    metrics["confident_mistakes"] = mistakes_summary(labels, predicted, worst,
                                                     data.fine_to_coarse)
    write_json_atomic(out / "metrics.json", metrics)
    report_text = save_tables(labels, predicted, confidence, data.fine_names, out)
    chosen = save_figures(images, labels, predicted, data, args, show)
    save_figure_data(out / FIGURE_DATA, images, labels, predicted, chosen, worst, confidence)

    if args.print_report:
        print(report_text)
    print_summary(metrics, out)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
