"""The report's catalogues (network/report/locale/*.json) and the Ukrainian class names."""

import json
import os
import pickle
import re
import string
from pathlib import Path

import pytest

from network.report import text as report_text
from network.report.text import LANGUAGES, ClassNames, Words, catalogue, plural_form

ROOT = Path(__file__).resolve().parent.parent
# The official CIFAR-100 names (the data set's meta file), in label order.
FINE_TEXT = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge
bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
train trout tulip turtle wardrobe whale willow_tree wolf woman worm"""
COARSE_TEXT = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2"""
FINE, COARSE = FINE_TEXT.split(), COARSE_TEXT.split()
# Keys the code builds from parts (f"setting.{key}", ...): each family must be complete.
BUILT_KEYS = (["caption.figure", "caption.table", "conclusions.manual_above",
               "conclusions.manual_below", "conclusions.manual_equal"]
              + [f"ordinal.{n}" for n in range(1, 6)]
              + [f"how.subject.{form}" for form in ("both", "all", "some")]
              + [f"how.object.{form}" for form in ("none", "both", "all", "some")])


def placeholders(entry):
    forms = entry.values() if isinstance(entry, dict) else [entry]
    return {name for text in forms for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogues_have_the_same_keys_and_placeholders():
    en, uk = catalogue("en"), catalogue("uk")
    assert sorted(set(en) - set(uk)) == [], "missing in uk.json"
    assert sorted(set(uk) - set(en)) == [], "missing in en.json"
    for key in en:
        # A plural's "one" form may say "a class" instead of "{count} classes".
        assert placeholders(en[key]) - {"count"} == placeholders(uk[key]) - {"count"}, key
        for lang in LANGUAGES:
            entry = catalogue(lang)[key]
            if isinstance(entry, dict):
                assert set(entry) == set(report_text.PLURAL_FORMS[lang]), (lang, key)


def test_every_key_the_report_uses_is_in_the_catalogue():
    used = set(BUILT_KEYS)
    for module in ("report/builder", "report/conclusions", "report/text", "analysis/metrics",
                   "analysis/explain", "analysis/calibration"):
        source = (ROOT / "network" / f"{module}.py").read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bw\(\s*["']([a-z0-9_.]+)["']""", source))
        used |= set(re.findall(r"""self\(\s*["']([a-z0-9_.]+)["']""", source))
    assert len(used) > 100
    assert sorted(used - set(catalogue("en"))) == []


def test_setting_labels_cover_the_recipe_fields():
    from network.training.recipes import RECIPES

    fields = set(vars(next(iter(RECIPES.values()))))
    shown = fields - {"name", "mixed_precision", "rungs"}  # the report hides these
    assert sorted(f for f in shown if f"setting.{f}" not in catalogue("en")) == []


def test_a_key_given_twice_is_an_error(tmp_path):
    path = tmp_path / "xx.json"
    path.write_text('{"a": "one", "b": "two", "a": "three"}', encoding="utf-8")
    with pytest.raises(ValueError, match="a given more than once"):
        report_text.read_catalogue(path)


@pytest.mark.parametrize("count, form", [(0, "many"), (1, "one"), (2, "few"), (4, "few"),
                                         (5, "many"), (11, "many"), (12, "many"),
                                         (21, "one"), (22, "few"), (111, "many"), (1001, "one")])
def test_ukrainian_plural_forms(count, form):
    assert plural_form("uk", count) == form


def test_plurals_and_numbers_in_each_language():
    en, uk = Words("en"), Words("uk")
    assert en("history.ran", count=1, recipe="lab", images="4,900").endswith("ran 1 epoch.")
    assert en("history.ran", count=3, recipe="lab", images="4,900").endswith("ran 3 epochs.")
    assert uk("history.ran", count=1, recipe="lab", images="4 900").endswith("1 епоху.")
    assert uk("history.ran", count=3, recipe="lab", images="4 900").endswith("3 епохи.")
    assert uk("history.ran", count=25, recipe="lab", images="4 900").endswith("25 епох.")
    assert (en.pct(0.5754, 2), uk.pct(0.5754, 2)) == ("57.54%", "57,54\u00a0%")
    assert (en.int(10000), uk.int(10000)) == ("10,000", "10\u00a0000")
    assert (en.num(1.625, 2), uk.num(1.625, 2)) == ("1.62", "1,62")
    assert (en.value(True), uk.value(False), uk.value(0.0002)) == ("yes", "ні", "0,0002")
    assert uk.duration(3725) == "1 год 2 хв" and en.duration(65) == "1 min 5 s"


def official_names():
    """The names from the real meta file when $CIFAR100_DIR has it, else the list above."""
    meta = Path(os.environ.get("CIFAR100_DIR", "/nonexistent"), "meta")
    if not meta.is_file():
        return FINE, COARSE
    with meta.open("rb") as f:
        names = pickle.load(f, encoding="latin1")
    return names["fine_label_names"], names["coarse_label_names"]


def test_every_class_and_superclass_has_exactly_one_ukrainian_name():
    fine, coarse = official_names()
    assert len(fine) == 100 and len(coarse) == 20
    table = report_text.read_catalogue(report_text.LOCALE / "class_names_uk.json")
    assert sorted(table["classes"]) == sorted(fine)
    assert sorted(table["superclasses"]) == sorted(coarse)
    for kind in ("classes", "superclasses"):
        names = list(table[kind].values())
        assert len(set(names)) == len(names), f"two {kind} share a Ukrainian name"
        assert all(re.fullmatch(r"[а-щьюяєіїґ' ,0-9-]+", n) for n in names), kind


def test_class_names_shown_in_each_language():
    uk, en = ClassNames("uk"), ClassNames("en")
    assert uk.show("aquarium_fish") == "акваріумна рибка"
    assert uk.show("large_carnivores") == "великі хижаки"  # as the manual names it
    assert uk.with_official("apple") == "яблуко (apple)"
    assert uk.show("fine_07") == "fine_07"                 # not in the table: as it is
    assert en.show("apple") == en.with_official("apple") == "apple"


def test_catalogue_files_are_plain_json():
    for lang in LANGUAGES:
        text = (report_text.LOCALE / f"{lang}.json").read_text(encoding="utf-8")
        assert isinstance(json.loads(text), dict)
        assert "<" not in text, "markup in a catalogue: the template escapes it anyway"
