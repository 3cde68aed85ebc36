"""The report's own copies of the figures, drawn in the report's language.

The scripts save their figures in English (``reports/*.png``,
``predictions/*_top5.png``): they are the scripts' output, read beside their
English terminal text. The report draws the figures it embeds again, from
what the scripts left for it, with every text from the report's catalogue
(``locale/<lang>.json``) and the class names as ``--class-names`` says:

- the training curves from ``history.csv``;
- the confusion matrix in parts, from ``test_predictions.csv``;
- the 16 random test images and the most confident mistakes from
  ``figure_data.npz``, the reliability diagram from ``metrics.json``;
- each own photo's chart from ``predictions/charts.npz``.

Drawing takes seconds on a CPU, so each copy is kept in ``.report-figures/``
under a digest of everything it shows and of its words: a report made again
(with your name added, say) reuses them, and another evaluation or language
never does.

Usage:

    from network.report.figures import FigureCache
    cache = FigureCache(Path("reports"), Words("uk"), ClassNames("uk"))
    png = cache.draw("curves", history.to_csv(), lambda path, w, names: plot_history(...))
    cache.prune()   # drop the copies this report did not use
"""

import hashlib
import json

import numpy as np

FOLDER = ".report-figures"


class FigureCache:
    """Figures drawn in one language into ``out/.report-figures``, each drawn once."""

    def __init__(self, out, w, names):
        self.folder, self.w, self.names = out / FOLDER, w, names
        self.used = set()
        # The words a figure may show: a corrected phrase or name draws it again.
        words = {k: v for k, v in w.texts.items() if k.startswith("figure.")}
        self.language = json.dumps([w.lang, names.lang, words, names.table], sort_keys=True)

    def draw(self, kind, content, draw):
        """The PNG bytes of figure ``kind`` showing ``content`` (text or bytes):
        ``draw(path, w, names)`` runs only when no copy of it is kept yet."""
        digest = hashlib.sha256()
        for part in (kind, self.language, content):
            digest.update(part if isinstance(part, bytes) else str(part).encode())
        path = self.folder / f"{kind}-{digest.hexdigest()[:16]}.png"
        if not path.is_file():
            self.folder.mkdir(exist_ok=True)
            draw(path, self.w, self.names)
        self.used.add(path.name)
        return path.read_bytes()

    def prune(self):
        """Remove the copies this report did not use (another evaluation's, language's)."""
        for path in self.folder.glob("*.png"):
            if path.name not in self.used:
                path.unlink(missing_ok=True)


def array_bytes(*arrays):
    """The arrays' bytes, shapes and types: a digest of what a figure shows."""
    return b"".join(np.ascontiguousarray(a).tobytes() + str((a.shape, a.dtype)).encode()
                    for a in map(np.asarray, arrays))


def training_curves(cache, history):
    from network.analysis.metrics import plot_history

    return cache.draw("curves", history.to_csv(index=False),
                      lambda path, w, names: plot_history(history, path, w=w))


def confusion_part(cache, cm, names, coarse_names, local, first):
    """The confusion matrix's superclasses ``coarse_names`` (``local`` maps every fine
    class to one of them, or -1 for the others' "elsewhere"), 3 blocks to a row."""
    from network.analysis.metrics import plot_confusion_matrix

    def draw(path, w, shown):
        plot_confusion_matrix(cm, [shown.show(n) for n in names],
                              [shown.show(c) for c in coarse_names], local, path, cols=3,
                              block=(2.2, 2.2), title_size=None, w=w)

    content = json.dumps([np.asarray(cm).tolist(), names, coarse_names,
                          np.asarray(local).tolist()])
    return cache.draw(f"confusion-{first}", content, draw)


def test_samples(cache, data, names):
    from network.analysis.metrics import plot_test_samples

    images, true, predicted = (data[k] for k in ("samples_images", "samples_true",
                                                 "samples_predicted"))

    def draw(path, w, shown):
        plot_test_samples(images, [shown.show(names[i]) for i in true],
                          [shown.show(names[i]) for i in predicted], path, w=w)

    return cache.draw("samples", array_bytes(images, true, predicted) + str(names).encode(), draw)


def confident_mistakes(cache, data, names):
    from network.analysis.explain import plot_confident_mistakes

    arrays = [data[k] for k in ("mistakes_images", "mistakes_true", "mistakes_predicted",
                                "mistakes_confidence")]

    def draw(path, w, shown):
        images, true, predicted, confidence = arrays
        plot_confident_mistakes(images, np.arange(len(true)), true, predicted, confidence,
                                [shown.show(n) for n in names], path, w=w)

    return cache.draw("mistakes", array_bytes(*arrays) + str(names).encode(), draw)


def reliability(cache, drawn):
    from network.analysis.calibration import plot_reliability

    return cache.draw("reliability", json.dumps(drawn, sort_keys=True),
                      lambda path, w, names: plot_reliability(drawn, path, w=w))


def own_chart(cache, name, image, heat, top):
    """One own photo's chart: the photo, where the network sees its first class, the top 5."""
    from network.analysis.explain import plot_explained_top5

    def draw(path, w, shown):
        plot_explained_top5(image, heat, [shown.show(c) for c, _ in top],
                            np.array([p for _, p in top]), path, title=name, w=w)

    return cache.draw("own", array_bytes(image, heat) + json.dumps([name, top]).encode(), draw)
