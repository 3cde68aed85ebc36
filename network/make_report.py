"""Write the lab report the manual asks for: an HTML page, and a Word file with --docx.

Gathers the latest training run (``history.csv``, ``train_summary.json``,
``logs/train_model.log``), the evaluation (``metrics.json``,
``test_predictions.csv`` and its figures) and the recognition of your own
images (the last ``test_model`` run, in ``predictions/``) from the output
folder into ``report.html``, in the order of the manual's report
requirements: the procedure, training (log, results, curves), evaluation
(accuracy and loss, accuracy per class, 16 random test images, further
analyses), own images, and a draft of the conclusions, with the model's
summary and the full training log in an appendix. ``--lang uk`` writes it in
Ukrainian (``--class-names`` picks the class names' language apart), figures
included: the report draws its own copies of them in its language, while the
PNG files the scripts saved stay English. ``--student``, ``--group``,
``--teacher``, ``--university``, ``--department`` and ``--city`` fill in the
title page; they can also be kept in ``report.toml`` in the project folder
(see ``report/settings.py``), the options overriding it.

Steps whose outputs are missing or older than the model run first
(``--refresh`` runs them anyway). Your own images are those of the last
``test_model`` run; ``img/`` is recognised only when there is none, and
``--images`` recognises other photos instead. Without a training run in the
output folder, the report says what is missing and how to add it.

The page is rendered from ``templates/report.html.j2`` (with ``report.css``
inlined and the figures embedded), so it opens in any browser, prints on A4
(or to PDF) and can be handed in as one file; ``--docx`` also writes
``report.docx`` with the same sections for Word.

Usage:

    python -m network.make_report
    python -m network.make_report --lang uk --docx --student "Ім'я Прізвище" --group "КН-24"
    python -m network.make_report --images my_photos/ --refresh
    python -m network.make_report --quick        # the quick try's report, reports/quick/
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python network/make_report.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from network import PROJECT_ROOT
from network.core import cli, runtime
from network.core.console_log import logged
from network.core.files import write_text_atomic
from network.report.gather import gather, load_training_run
from network.report.refresh import refresh_outputs
from network.report.settings import SETTINGS_FILE, read_settings
from network.report.text import LANGUAGES

REPORT_NAME = "report.html"
DOCX_NAME = "report.docx"
SETTINGS_PATH = PROJECT_ROOT / SETTINGS_FILE   # the title page's details, if kept in a file


def parse_args(argv=None):
    # The shared options state their defaults in their help already.
    parser = argparse.ArgumentParser(prog="make_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path,
                        help="recognise these image files or folders for the report "
                             "(default: the images of the last test_model run, or img/ "
                             "when there is none)")
    parser.add_argument("--refresh", action="store_true",
                        help="run the evaluation and the image recognition again even "
                             "when their outputs exist")
    parser.add_argument("--tta", action="store_true",
                        help="when the evaluation runs, also report flip test-time "
                             "augmentation")
    report = parser.add_argument_group("the report")
    report.add_argument("--lang", choices=LANGUAGES, default="en",
                        help="language of the report (default: en)")
    report.add_argument("--class-names", choices=LANGUAGES,
                        help="language of the class names in the report (default: as "
                             "--lang); CSV files and figures keep the official English names")
    report.add_argument("--docx", action="store_true",
                        help=f"also write {DOCX_NAME} (Word) with the same sections")
    for option, what in (("student", "your name"), ("group", "your group"),
                         ("teacher", "the teacher who checks the work"),
                         ("university", "the university"), ("department", "the department"),
                         ("city", "the city"),
                         ("topic", "the topic (default: the manual's)"),
                         ("aim", "the aim (default: the manual's)")):
        report.add_argument(f"--{option}", metavar="TEXT",
                            help=f"title page: {what} (default: from {SETTINGS_FILE}, else "
                                 "left blank)")
    cli.add_common_arguments(parser, show=False, quick=True)
    # A report is written, not looked at: figures of the steps it runs show only when asked.
    parser.add_argument("--show", action=argparse.BooleanOptionalAction, default=False,
                        help="show the figures of the evaluation and recognition it runs "
                             "(default: no); the report never needs a display")
    args = parser.parse_args(argv)
    args.class_names = args.class_names or args.lang
    # The settings file fills in what the command line left out.
    for key, value in read_settings(SETTINGS_PATH).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cli.apply_quick(args)  # --quick: the quick run's report, in reports/quick/ (apart)
    cli.ensure_writable_dir(parser, args.output_dir, "output folder")
    return args


def training_command(args):
    """The training command that fits this machine and writes to this output folder."""
    command = cli.train_command(args.quick)
    if args.output_dir.resolve() != cli.default_paths(args.quick)[1].resolve():
        command += f" --output-dir {cli.display_path(args.output_dir)}"
    return command


@logged("make_report", parse_args)
def main(argv=None):
    runtime.setup_backend_env()
    args = parse_args(argv)  # --help and wrong options answer before the slow imports below
    cli.require_model_file(args.model_path)
    cli.setup_matplotlib(args.show)
    training, missing = load_training_run(args.output_dir)
    runtime.start()

    from network.report.builder import build_report
    from network.report.html import render
    from network.report.text import ClassNames, Words

    checked = refresh_outputs(args)
    words, names = Words(args.lang), ClassNames(args.class_names)
    run = gather(args, argv, training, missing, checked, words, names)
    report = build_report(run, words, names)
    path = args.output_dir / REPORT_NAME
    write_text_atomic(path, render(report))
    metrics = run["metrics"]
    print(f"Test accuracy {metrics['accuracy']:.1%} (top-5 {metrics['top5_accuracy']:.1%}, "
          f"superclass {metrics['superclass_accuracy']:.1%}) on "
          f"{cli.plural(metrics['images'], 'image')}; "
          f"{cli.plural(len(run['own']), 'own image')} in the report")
    if missing:
        print(f"No training run in {cli.display_path(args.output_dir)} ({', '.join(missing)} "
              f"missing): {training_command(args)} adds one (the report says how)")
    print(f"Report written to {path} (open it in any browser, or print it to PDF)")
    if args.docx:
        from network.report.word import write_docx

        write_docx(report, args.output_dir / DOCX_NAME)
        print(f"Word version written to {args.output_dir / DOCX_NAME}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
