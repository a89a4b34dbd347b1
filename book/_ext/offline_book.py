"""A tiny Sphinx extension that keeps the book offline: no page names a script on another host.

Jupyter Book 1 always loads ``sphinx_thebe`` (live code cells run on Binder). Even with
``launch_buttons.thebe: false`` it adds to every page an inline script naming thebe's
bundle on unpkg.com (loaded on demand) and its own loader. The book does not use thebe,
so this extension drops both scripts from every page.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _is_thebe(script: Any) -> bool:
    filename = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def drop_thebe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """``html-page-context`` handler: remove thebe's scripts from the page's script list."""
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe(s)]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", drop_thebe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
