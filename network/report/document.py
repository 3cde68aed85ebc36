"""The lab report as plain data, written out as HTML (a Jinja template) or Word (python-docx).

One model for both forms keeps them alike: the same sections, sentences,
tables and figures, in the same order. Each block has a ``kind`` that the
writers switch on. Text is plain (never markup), so the HTML template's
autoescaping covers every class and file name; a paragraph is a list of
``(text, style)`` runs, style "" (plain), "b" (bold), "code", "ok" or "bad".

Usage:

    from network.report.document import Figure, Para, Section
    section = Section("curves", "Training curves", [Para.of("Loss per epoch."),
                                                    Figure(png, "curves", "Caption", 16.5)])
"""

from dataclasses import dataclass, field


def runs(*parts):
    """Runs from strings (plain) and ``(text, style)`` pairs."""
    return [part if isinstance(part, tuple) else (str(part), "") for part in parts]


@dataclass
class Para:
    content: list                   # [(text, style), ...]
    cls: str = ""                   # "note", "draft", "lead"
    kind = "para"

    @classmethod
    def of(cls, *parts, style=""):
        return cls(runs(*parts), style)


@dataclass
class Items:
    items: list                     # one list of runs per item
    ordered: bool = False
    kind = "items"


@dataclass
class Pre:
    """Terminal text (a console log)."""
    text: str
    caption: str = ""
    kind = "pre"


@dataclass
class Figure:
    png: bytes
    alt: str
    caption: str
    width_cm: float                 # as printed: every figure's text is >= 9 pt at this width
    kind = "figure"


@dataclass
class Cell:
    text: str
    cls: str = ""                   # "text" (left-aligned), "cell", "diag", "bar", "col"
    shade: float | None = None      # 0..1: a matrix cell's background
    bar: float | None = None        # 0..1: a bar drawn left of the number
    title: str | None = None        # tooltip


@dataclass
class Row:
    cells: list
    cls: str = ""                   # "best": the highlighted row
    head: str | None = None         # a row header cell (th) before the cells


@dataclass
class Table:
    head: list | None               # header cells, or None (a key-value table)
    rows: list
    cls: str = ""
    id: str = ""
    caption: str = ""
    kind = "table"


@dataclass
class Cards:
    """Headline figures: (value, label) pairs."""
    items: list
    kind = "cards"


@dataclass
class Group:
    """A titled block inside a section (one own image), not listed in the contents."""
    title: str
    blocks: list
    cls: str = ""
    heading: bool = True            # False: the title is a bold first line, not a heading
    kind = "group"


@dataclass
class Details:
    """Shown on request in the HTML page (collapsed), left out of print and Word."""
    summary: str
    blocks: list
    kind = "details"


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)
    children: list = field(default_factory=list)
    kind = "section"


KEEP_ROWS, KEEP_LINES = 25, 40    # tables and logs short enough to keep with their heading


def lead_length(blocks):
    """How many of a section's first blocks stay on one page with its heading: the
    paragraphs and lists before the first figure, table or log, and that one too when
    it fits a page (a long table or log may start on the heading's page and go on)."""
    for i, block in enumerate(blocks):
        if block.kind in ("para", "items"):
            continue
        short = (block.kind in ("figure", "cards")
                 or (block.kind == "table" and len(block.rows) <= KEEP_ROWS)
                 or (block.kind == "pre" and block.text.count("\n") < KEEP_LINES))
        return i + 1 if short else i
    return len(blocks)


@dataclass
class Report:
    lang: str
    title: str                      # the page's title
    title_block: dict               # heading, topic, rows [(label, value)], aim_label, aim
    contents_label: str
    meta: str
    sections: list
