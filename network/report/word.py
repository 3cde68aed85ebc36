"""Write the lab report (a ``document.Report``) as a Word file with python-docx.

The same sections, sentences, tables and figures as the HTML page, on A4 with
the page's margins: a title page, each part of the manual's list on a new
page, headings kept with what follows, figures at their printed width (their
text is 9 pt or more there) with numbered captions, table rows never split.
Collapsed parts of the page (the full per-class table) stay out: they are in
the output folder's CSV files.

Usage:

    from network.report.word import write_docx
    write_docx(report, Path("reports/report.docx"))
"""

import io

from docx import Document
from docx.enum.section import WD_ORIENT
from docx.enum.table import WD_ROW_HEIGHT_RULE, WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Pt, RGBColor

from network.core.files import atomic_path
from network.report import style
from network.report.document import KEEP_ROWS, Cell, lead_length

FONT, MONO = "Times New Roman", "Courier New"
TEXT_WIDTH_CM = style.PRINT_WIDTH_CM
LANGUAGE_TAGS = {"en": "en-GB", "uk": "uk-UA"}
COLOURS = {kind: RGBColor(*rgb) for kind, rgb in style.COLOURS.items()}
MARKS = {kind: f"{mark} " for kind, mark in style.MARKS.items()}
# The per-class table's best and worst classes, as on the page.
HIGHLIGHTS = {"top": "E3F2E3", "bottom": "F8E1DF"}


def write_docx(report, path):
    """``report`` as a .docx file at ``path`` (written atomically)."""
    doc = Document()
    setup_page(doc, report.lang)
    title_page(doc, report)
    for section in report.sections:
        add_section(doc, section, level=1)
    footer_line(doc, report)
    doc.core_properties.title = report.title
    doc.core_properties.author = ""
    with atomic_path(path) as tmp:
        doc.save(str(tmp))


def setup_page(doc, lang):
    page = doc.sections[0]
    page.orientation = WD_ORIENT.PORTRAIT
    page.page_width, page.page_height = (Cm(cm) for cm in style.PAGE_CM)
    for side, cm in style.MARGINS_CM.items():
        setattr(page, f"{side}_margin", Cm(cm))
    normal = doc.styles["Normal"]
    normal.font.name, normal.font.size = FONT, Pt(12)
    fonts = normal.element.get_or_add_rPr().get_or_add_rFonts()
    fonts.set(qn("w:eastAsia"), FONT)
    language = OxmlElement("w:lang")
    language.set(qn("w:val"), LANGUAGE_TAGS[lang])  # spelling is checked in the report's language
    normal.element.get_or_add_rPr().append(language)
    normal.paragraph_format.space_after = Pt(4)
    for name, size in (("Title", 20), ("Heading 1", 15), ("Heading 2", 13), ("Heading 3", 12),
                       ("Caption", 10)):
        text_style = doc.styles[name]
        text_style.font.name, text_style.font.size = FONT, Pt(size)
        fonts = text_style.element.get_or_add_rPr().get_or_add_rFonts()
        for theme in ("w:asciiTheme", "w:hAnsiTheme", "w:eastAsiaTheme", "w:cstheme"):
            fonts.attrib.pop(qn(theme), None)  # the theme's font would win over FONT
        text_style.font.color.rgb = RGBColor(0, 0, 0)   # dark on white, as printed
        text_style.font.italic = False
    doc.styles["Heading 1"].paragraph_format.page_break_before = True


def title_page(doc, report):
    block = report.title_block
    for line in block["institution"]:
        doc.add_paragraph(line).alignment = WD_ALIGN_PARAGRAPH.CENTER
    heading = doc.add_paragraph(block["heading"], style="Title")
    heading.alignment = WD_ALIGN_PARAGRAPH.CENTER
    heading.paragraph_format.space_before = Pt(60)
    topic = doc.add_paragraph()
    topic.alignment = WD_ALIGN_PARAGRAPH.CENTER
    topic.add_run(block["topic"]).font.size = Pt(15)
    table = doc.add_table(rows=0, cols=2)
    for label, value in block["rows"]:
        cells = table.add_row().cells
        cells[0].text, cells[1].text = label, value
        cells[0].paragraphs[0].runs[0].bold = True
    set_widths(table, [4.0, TEXT_WIDTH_CM - 4.0])
    aim = doc.add_paragraph()
    aim.paragraph_format.space_before = Pt(18)
    aim.add_run(f"{block['aim_label']}: ").bold = True
    aim.add_run(block["aim"])
    doc.add_paragraph(report.contents_label).runs[0].bold = True
    for section in report.sections:
        doc.add_paragraph(section.title)
        for child in section.children:
            doc.add_paragraph(child.title).paragraph_format.left_indent = Cm(0.8)
    place = doc.add_paragraph(block["place"])
    place.alignment = WD_ALIGN_PARAGRAPH.CENTER
    place.paragraph_format.space_before = Pt(24)


def footer_line(doc, report):
    """Where the report came from, in small print after the last section."""
    meta = doc.add_paragraph(report.meta)
    meta.paragraph_format.space_before = Pt(18)
    meta.runs[0].font.size = Pt(9)


def add_section(doc, section, level):
    doc.add_heading(section.title, level=level)
    # The heading, its introduction and first figure or table stay on one page.
    lead = lead_length(section.blocks)
    add_blocks(doc, section.blocks[:lead], level, keep=True)
    add_blocks(doc, section.blocks[lead:], level)
    for child in section.children:
        add_section(doc, child, level + 1)


def add_blocks(doc, blocks, level, keep=False):
    for block in blocks:
        if block.kind == "para":
            add_para(doc, block.content, block.cls).paragraph_format.keep_with_next = keep
        elif block.kind == "items":
            for item in block.items:
                style = "List Number" if block.ordered else "List Bullet"
                add_para(doc, item, style=style).paragraph_format.keep_with_next = keep
        elif block.kind == "pre":
            add_console(doc, block)
        elif block.kind == "figure":
            add_figure(doc, block)
        elif block.kind == "table":
            add_table(doc, block)
        elif block.kind == "cards":
            add_cards(doc, block)
        elif block.kind == "group":
            if block.title and block.heading:
                doc.add_heading(block.title, level=min(level + 1, 3))
            elif block.title:
                lead = doc.add_paragraph()
                lead.add_run(block.title).bold = True
                lead.paragraph_format.keep_with_next = True
            add_blocks(doc, block.blocks, level + 1, keep=block.cls == "own")
        # "details" (collapsed on the page) stays out: the CSV files hold it.


def add_para(doc, content, cls="", style=None):
    paragraph = doc.add_paragraph(style=style)
    for text, kind in content:
        run = paragraph.add_run(MARKS.get(kind, "") + text)
        run.bold = kind == "b" or cls == "draft"
        run.italic = cls in ("note", "draft")
        if kind == "code":
            run.font.name, run.font.size = MONO, Pt(10)
        if kind in COLOURS:
            run.font.color.rgb = COLOURS[kind]
    return paragraph


def add_console(doc, block):
    """Terminal text: monospace, line by line, as the console showed it."""
    paragraph = doc.add_paragraph()
    paragraph.paragraph_format.left_indent = Cm(0.3)
    lines = block.text.split("\n")
    for i, line in enumerate(lines):
        run = paragraph.add_run(line)
        run.font.name, run.font.size = MONO, Pt(7.5)
        if i < len(lines) - 1:
            run.add_break()
    if block.caption:
        doc.add_paragraph(block.caption, style="Caption")


def add_figure(doc, block):
    doc.add_picture(io.BytesIO(block.png), width=Cm(min(block.width_cm, TEXT_WIDTH_CM)))
    picture = doc.paragraphs[-1]
    picture.alignment = WD_ALIGN_PARAGRAPH.CENTER
    picture.paragraph_format.keep_with_next = True   # the caption stays with its figure
    if block.caption:
        doc.add_paragraph(block.caption, style="Caption")


def add_cards(doc, block):
    table = doc.add_table(rows=2, cols=len(block.items))
    table.style = "Table Grid"
    for i, (value, label) in enumerate(block.items):
        top, bottom = table.rows[0].cells[i], table.rows[1].cells[i]
        top.text, bottom.text = value, label
        top.paragraphs[0].runs[0].bold = True
        top.paragraphs[0].runs[0].font.size = Pt(14)
        bottom.paragraphs[0].runs[0].font.size = Pt(9)
    keep_rows(table, together=True)


def add_table(doc, block):
    if block.caption:
        caption = doc.add_paragraph(block.caption, style="Caption")
        caption.paragraph_format.keep_with_next = True
    matrix = "matrix" in block.cls
    rows = [([] if r.head is None else [Cell(r.head, "text")]) + r.cells for r in block.rows]
    table = doc.add_table(rows=0, cols=len(rows[0]) if rows else len(block.head))
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    size = Pt(6.5 if matrix else 9)
    if block.head:
        row = add_row(table, block.head, size, bold=True)
        mark_header(row)
        if matrix:   # twenty superclass names read bottom to top, in a tall first row
            row.height, row.height_rule = Cm(4.4), WD_ROW_HEIGHT_RULE.AT_LEAST
            narrow_cells(table)
            for cell in row.cells[1:]:
                vertical(cell)
    for record, cells in zip(block.rows, rows):
        add_row(table, cells, size, bold=record.cls == "best", first_bold=record.head is not None)
    set_widths(table, column_widths(block.head, rows, matrix))
    # Every class's accuracy (34 rows of three) fits one page: it is read as a whole.
    keep_rows(table, together=len(table.rows) <= KEEP_ROWS + 1 or "accuracy" in block.cls)
    doc.add_paragraph().paragraph_format.space_after = Pt(2)  # two tables never touch


def column_widths(head, rows, matrix):
    """Widths in cm filling the text width: a matrix's first column for the names, the
    others alike; else in proportion to each column's longest text (within limits)."""
    columns = len(rows[0]) if rows else len(head)
    if matrix:   # names, the counts, and the recall ("12,3 %")
        return [3.2] + [(TEXT_WIDTH_CM - 4.5) / (columns - 2)] * (columns - 2) + [1.3]
    # A header may wrap between its words, not inside one.
    lengths = [max([6] + [min(len(r[i].text), 36) for r in rows]
                   + ([max(map(len, head[i].text.split() or [""])) + 1] if head else []))
               for i in range(columns)]
    return [TEXT_WIDTH_CM * n / sum(lengths) for n in lengths]


def add_row(table, cells, size, bold=False, first_bold=False):
    row = table.add_row()
    for i, (cell, spec) in enumerate(zip(row.cells, cells)):
        paragraph = cell.paragraphs[0]
        run = paragraph.add_run(spec.text)
        run.font.size, run.bold = size, bold or (first_bold and i == 0)
        paragraph.alignment = (WD_ALIGN_PARAGRAPH.LEFT if "text" in spec.cls
                               else WD_ALIGN_PARAGRAPH.CENTER if "cell" in spec.cls
                               else WD_ALIGN_PARAGRAPH.RIGHT)
        paragraph.paragraph_format.space_after = Pt(0)
        if spec.shade is not None:
            fill(cell, "".join(f"{c:02X}" for c in style.matrix_rgb(spec.shade)))
            if spec.shade > style.WHITE_TEXT_ABOVE:
                run.font.color.rgb = RGBColor(0xFF, 0xFF, 0xFF)
        for mark, colour in HIGHLIGHTS.items():
            if mark in spec.cls.split():
                fill(cell, colour)
                run.bold = run.bold or mark == "top"
    return row


def narrow_cells(table, cm=0.05):
    """Small left and right cell margins, so three digits fit a matrix's narrow columns."""
    margins = OxmlElement("w:tblCellMar")
    for side in ("left", "right"):
        margin = OxmlElement(f"w:{side}")
        margin.set(qn("w:w"), str(round(cm * 567)))   # twentieths of a point
        margin.set(qn("w:type"), "dxa")
        margins.append(margin)
    table._tbl.tblPr.append(margins)


def fill(cell, colour):
    """The cell's background, ``colour`` as RRGGBB."""
    shading = OxmlElement("w:shd")
    shading.set(qn("w:val"), "clear")
    shading.set(qn("w:color"), "auto")
    shading.set(qn("w:fill"), colour)
    cell._tc.get_or_add_tcPr().append(shading)


def vertical(cell):
    """Header text read bottom to top, so twenty superclass names fit the page's width."""
    direction = OxmlElement("w:textDirection")
    direction.set(qn("w:val"), "btLr")
    cell._tc.get_or_add_tcPr().append(direction)


def mark_header(row):
    """Repeat the header row on every page the table spans."""
    header = OxmlElement("w:tblHeader")
    header.set(qn("w:val"), "true")
    row._tr.get_or_add_trPr().append(header)


def keep_rows(table, together=False):
    """No row split across two pages; with ``together``, no page end inside the table."""
    for i, row in enumerate(table.rows):
        split = OxmlElement("w:cantSplit")
        split.set(qn("w:val"), "true")
        row._tr.get_or_add_trPr().append(split)
        if together and i < len(table.rows) - 1:
            for cell in row.cells:
                for paragraph in cell.paragraphs:
                    paragraph.paragraph_format.keep_with_next = True


def set_widths(table, widths_cm):
    """Fixed column widths, in the table grid (LibreOffice) and in every cell (Word)."""
    table.autofit = False
    for column, width in zip(table.columns, widths_cm):
        column.width = Cm(width)
    for row in table.rows:
        for cell, width in zip(row.cells, widths_cm):
            cell.width = Cm(width)
