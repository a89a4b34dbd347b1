"""Two small HTML fixes for the SydsGPT book (a local Sphinx extension, see _config.yml).

1. Keep the book offline: Jupyter Book 1 always loads ``sphinx_thebe`` (live code cells run
   on Binder). Even with ``launch_buttons.thebe: false`` it adds to every page an inline
   script naming thebe's bundle on unpkg.com (loaded on demand) and its loader. The book
   does not use thebe, so both scripts are dropped from every page.
2. Printed text tables keep their columns: custom.css wraps long printed lines, which
   would break a table's rows. An output with a table's rule line (``-----  ---``, as
   ``sydsgpt.bench.common.format_table`` prints) gets the class ``text-table``, which
   custom.css leaves unwrapped (it scrolls sideways when too wide).
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

TABLE_RULE = re.compile(r"^ *-{3,}(?: +-{3,})+ *$", re.MULTILINE)


def _is_thebe(script: Any) -> bool:
    filename = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def drop_thebe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """``html-page-context`` handler: remove thebe's scripts from the page's script list."""
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe(s)]


def mark_text_tables(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved`` handler: add ``text-table`` to printed outputs that hold a table."""
    for block in doctree.findall(nodes.literal_block):
        if "output" in block["classes"] and TABLE_RULE.search(block.astext()):
            block["classes"].append("text-table")


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", drop_thebe_scripts, priority=900)
    app.connect("doctree-resolved", mark_text_tables)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
