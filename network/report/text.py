"""The report's words in English and Ukrainian, and the class names in both.

Every heading, caption, table header and sentence that the report generates
comes from one catalogue per language, ``network/report/locale/<lang>.json``: a map
from key to text with ``{name}`` placeholders, or, for a text that depends on
a count, a map from plural form to text ("one"/"other" in English,
"one"/"few"/"many" in Ukrainian). JSON rather than gettext: a student or
teacher can correct a phrase in any editor, nothing needs compiling (gettext's
.mo files), and a test compares the catalogues key by key.

``class_names_uk.json`` holds the Ukrainian names of the 100 classes and 20
superclasses; CSV files and figures keep the official English names.

Usage:

    from network.report.text import ClassNames, Words
    w = Words("uk")
    w("evaluation.title")                    # a heading
    w("own.intro", count=3)                  # "... 3 власні зображення."
    w.pct(0.5754)                            # "57,5 %"
    names = ClassNames("uk")
    names.show("apple")                      # "яблуко"
"""

import json
from functools import cache
from pathlib import Path

LOCALE = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "uk")
PLURAL_FORMS = {"en": ("one", "other"), "uk": ("one", "few", "many")}
NBSP = "\u00a0"


def read_catalogue(path):
    """A JSON object from ``path``; a key given twice is an error, not silently the last."""
    def unique(pairs):
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"{path.name}: {', '.join(repeated)} given more than once")
        return dict(pairs)

    return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique)


@cache
def catalogue(lang):
    return read_catalogue(LOCALE / f"{lang}.json")


def plural_form(lang, count):
    """CLDR's plural category of a whole number: English one/other, Ukrainian one/few/many."""
    count = abs(int(count))
    if lang == "en":
        return "one" if count == 1 else "other"
    if count % 10 == 1 and count % 100 != 11:
        return "one"
    if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
        return "few"
    return "many"


class Words:
    """The catalogue of one language, with its way of writing numbers."""

    def __init__(self, lang):
        self.lang = lang
        self.texts = catalogue(lang)

    def __call__(self, key, count=None, **fields):
        text = self.texts[key]
        if isinstance(text, dict):
            text = text[plural_form(self.lang, count)]
        if count is not None:
            fields["count"] = self.int(count)
        return text.format(**fields)

    def has(self, key):
        return key in self.texts

    # Ukrainian writes a decimal comma, a space before %, and spaces between thousands.
    def num(self, value, digits=2):
        text = f"{value:.{digits}f}"
        return text.replace(".", ",") if self.lang == "uk" else text

    def pct(self, value, digits=1):
        if self.lang == "uk":
            return f"{self.num(value * 100, digits)}{NBSP}%"
        return f"{value:.{digits}%}"

    def int(self, value):
        text = f"{int(value):,}"
        return text.replace(",", NBSP) if self.lang == "uk" else text

    def points(self, value):
        """A difference of two shares, in percentage points."""
        return self("unit.points", value=self.num(abs(value) * 100, 1))

    def duration(self, seconds):
        minutes, secs = divmod(round(seconds), 60)
        if minutes >= 60:
            return self("unit.hours_minutes", hours=minutes // 60, minutes=minutes % 60)
        if minutes:
            return self("unit.minutes_seconds", minutes=minutes, seconds=secs)
        return self("unit.seconds", seconds=secs)

    def value(self, value):
        """A setting for a table: lists joined, floats short, yes/no in words."""
        if isinstance(value, bool):
            return self("word.yes" if value else "word.no")
        if isinstance(value, int):
            return self.int(value)
        if isinstance(value, float):
            text = f"{value:.6g}"
            return text.replace(".", ",") if self.lang == "uk" else text
        if isinstance(value, (list, tuple)):
            return ", ".join(self.value(v) for v in value)
        return str(value)


def english():
    """The English catalogue: the figures' words when no report language is given."""
    return Words("en")


@cache
def ukrainian_names():
    table = read_catalogue(LOCALE / "class_names_uk.json")
    return {**table["classes"], **table["superclasses"]}


class ClassNames:
    """Class and superclass names as the report shows them: the official English names,
    or their Ukrainian translations (a name the table lacks stays as it is)."""

    def __init__(self, lang):
        self.lang = lang
        self.table = ukrainian_names() if lang == "uk" else {}

    def show(self, name):
        return self.table.get(name, name)

    def with_official(self, name):
        """``яблуко (apple)``: the translation with the name the CSV files and figures use."""
        shown = self.show(name)
        return shown if shown == name else f"{shown} ({name})"
