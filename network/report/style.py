"""The report's shared look: one place for what the HTML page, the Word file and the
figures must agree on.

The page (A4 and its margins, hence the 17 cm that figures are drawn for), the
shade of the confusion matrices and the share above which their numbers turn
white, and the marks and colours of right and wrong. ``html.render`` hands
these to the template (``report.css`` reads them as variables), ``word.py``
and the figures read them from here.

Usage:

    from network.report import style
    style.PRINT_WIDTH_CM                      # 17.0
    style.MARKS["ok"]                         # "✓"
    style.matrix_rgb(0.4)                     # (143, 187, 225): BLUE at 40 % over white
"""

PAGE_CM = (21.0, 29.7)                        # A4, portrait
# Wider on the left for binding, as the university's rules for written work ask.
MARGINS_CM = {"top": 2.0, "right": 1.5, "bottom": 2.0, "left": 2.5}
PRINT_WIDTH_CM = PAGE_CM[0] - MARGINS_CM["left"] - MARGINS_CM["right"]   # figures' width

MATRIX_RGB = (31, 119, 180)                   # the confusion matrices' shade (matplotlib's blue)
WHITE_TEXT_ABOVE = 0.55                       # a cell this dark gets white numbers
MARKS = {"ok": "\u2713", "bad": "\u2717"}     # right and wrong, never by colour alone
COLOURS = {"ok": (0x21, 0x7A, 0x21), "bad": (0xB3, 0x26, 0x1E)}


def matrix_rgb(share):
    """The shade of a matrix cell holding ``share`` (0..1): MATRIX_RGB over white."""
    return tuple(round(255 + (c - 255) * share) for c in MATRIX_RGB)


def hex_colour(rgb):
    return "#" + "".join(f"{c:02x}" for c in rgb)


def css_margins():
    """The @page margin shorthand: top, right, bottom, left."""
    return " ".join(f"{MARGINS_CM[side] * 10:g}mm" for side in ("top", "right", "bottom", "left"))
