"""Run the evaluation and the recognition of your own images where their outputs are
missing or older than the model, so that the report always describes the model given.

Usage:

    from network.report.refresh import refresh_outputs
    checked = refresh_outputs(args)   # make_report's options; returns the images checked
"""

import contextlib
import io
import json
from pathlib import Path

from network import PROJECT_ROOT
from network.core.errors import LabError
from network.report.gather import (
    CHART_DATA,
    FIGURE_DATA,
    PREDICTIONS,
    read_predictions,
    readable_images,
)

EVALUATION_FILES = ("metrics.json", "test_predictions.csv", "confusion_matrix.png",
                    "test_samples.png", "confident_mistakes.png", "reliability_diagram.png",
                    FIGURE_DATA)
DEFAULT_IMAGES = PROJECT_ROOT / "img"


def is_stale(path, model_path):
    """An output is stale when it is missing or older than the model it describes."""
    if not path.is_file():
        return True
    return model_path.is_file() and path.stat().st_mtime < model_path.stat().st_mtime


def evaluation_needed(args):
    """Why the evaluation must run (a short reason), or None when its outputs are usable."""
    out = args.output_dir
    for name in EVALUATION_FILES:
        if is_stale(out / name, args.model_path):
            return f"{name} is missing or older than {args.model_path.name}"
    try:
        metrics = json.loads((out / "metrics.json").read_text())
        evaluated = Path(metrics["model_path"])
        float(metrics["accuracy"]), int(metrics["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return "metrics.json is damaged"
    if "reliability" not in metrics.get("calibration", {}):
        return "metrics.json was written by an older evaluate_model"
    if evaluated.resolve() != args.model_path.resolve():
        return f"metrics.json describes another model ({evaluated})"
    return None


def recognition_needed(args, evaluated):
    """(images, message) when the own images must be recognised, else (None, None).

    The images are those given with --images, else those of the last test_model
    run (predictions.csv), else img/. predictions.csv does not name its model,
    so a model evaluated anew is recognised anew.
    """
    csv = args.output_dir / PREDICTIONS
    recorded = read_predictions(csv)
    if args.images:
        images, what = args.images, "the images given with --images"
    elif recorded:
        images, what = [Path(file) for file in recorded], "the images of the last test_model run"
    else:
        images, what = [DEFAULT_IMAGES], "the images in img/"
    if recorded is None:
        why = f"{csv} {'cannot be read' if csv.exists() else 'does not exist yet'}"
    elif args.images and ({p.resolve() for p in readable_images(images)[0]}
                          != {Path(file).resolve() for file in recorded}):
        why = "the last test_model run had other images"
    elif evaluated:
        why = "the model was evaluated anew"
    elif any(is_stale(path, args.model_path)
             for path in [csv, args.output_dir / CHART_DATA,
                          *(r["chart"] for r in recorded.values())]):
        why = "its results are missing or older than the model"
    else:
        return None, None
    return images, f"Recognising {what} ({why})"


def run_step(main, args, options):
    """Run another script on this report's model and folder, keeping its terminal output
    (the 100-class table, every top-5 list) out of the way: the report holds it, and the
    script saves it in its own log."""
    common = ["--model-path", str(args.model_path), "--output-dir", str(args.output_dir),
              "--show" if args.show else "--no-show"]
    with contextlib.redirect_stdout(io.StringIO()):
        main(common + options)


def refresh_outputs(args):
    """Run the evaluation and the recognition where needed; return the images checked."""
    from network import evaluate_model, test_model

    evaluate = "--refresh" if args.refresh else evaluation_needed(args)
    if evaluate:
        print(f"Evaluating {args.model_path} on the test images ({evaluate})")
        options = ["--data-dir", str(args.data_dir), "--seed", str(args.seed)]
        options += ["--allow-md5-mismatch"] * args.allow_md5_mismatch + ["--tta"] * args.tta
        run_step(evaluate_model.main, args, options)
    images, message = recognition_needed(args, evaluate)
    if images:
        print(message)
        try:
            run_step(test_model.main, args, ["--", *map(str, images)])
        except LabError as err:
            raise LabError(f"recognising your own images failed: {err} (give photos with "
                           "--images)") from None
    return images or args.images
