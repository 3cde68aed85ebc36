"""Write the lab report (a ``report.document.Report``) as one self-contained HTML page.

The page is rendered from ``templates/report.html.j2`` with ``report.css`` inlined and the
figures embedded, so it opens in any browser, prints on A4 and is handed in as one file.
Both templates read the report's shared look (``report.style``) as ``style``.

Usage:

    from network.report.html import render
    write_text_atomic(Path("reports/report.html"), render(report))
"""

import base64
from pathlib import Path

from network.report import style
from network.report.document import lead_length

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render(report):
    """The whole page as a string: templates/report.html.j2 with autoescaping."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["data_uri"] = lambda png: ("data:image/png;base64,"
                                           + base64.b64encode(png).decode("ascii"))
    env.globals["lead_length"] = lead_length
    # The page geometry, the matrices' shade and the marks, shared with the Word writer.
    return env.get_template("report.html.j2").render(report=report, style=style)
