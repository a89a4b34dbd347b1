"""Find what a built HTML page would load from another host (scripts, styles, fonts, images).

The book must work offline: a page may *link* to other sites in its prose (``<a href>``),
but it must not *load* anything from them. :func:`external_resources_in_html` and
:func:`external_resources_in_css` return one human-readable finding per offending URL.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# An absolute URL to another host: http(s)://..., or protocol-relative //host/...
_EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
# <link rel=...> values whose href the browser fetches (or connects to) by itself.
_LOADING_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "icon",
    "shortcut",
    "apple-touch-icon",
    "mask-icon",
    "manifest",
}
# Elements whose src/data/poster attribute the browser fetches on page load.
_LOADING_ATTRS = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "source": ("src", "srcset"),
    "track": ("src",),
    "input": ("src",),
}
# url(...) and @import "..." in CSS (stylesheets, <style> blocks, style="" attributes).
_CSS_URL = re.compile(
    r"""url\(\s*(['"]?)(?P<url>[^'")]+)\1\s*\)|@import\s+(['"])(?P<imp>[^'"]+)\3""", re.IGNORECASE
)
# A script or stylesheet URL written inside an inline <script>: a loader that injects it.
_INLINE_SCRIPT_URL = re.compile(
    r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}/[^\s'"`)]*\.(?:m?js|css|woff2?|ttf|otf)\b""", re.IGNORECASE
)
# Inline script types that are data, not code, and load nothing by themselves.
_DATA_SCRIPT_TYPES = {"application/json", "text/x-thebe-config", "application/ld+json"}


def _is_external(url: str) -> bool:
    return bool(_EXTERNAL.match(url))


def external_resources_in_css(css: str, where: str = "<style>") -> list[str]:
    """Findings for every external ``url(...)`` / ``@import`` in a piece of CSS."""
    findings = []
    for match in _CSS_URL.finditer(css):
        url = match.group("url") or match.group("imp")
        if _is_external(url):
            findings.append(f"{where}: CSS loads {url.strip()}")
    return findings


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.findings: list[str] = []
        self._in: str | None = None  # "script" or "style" while inside an inline one
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        for attr in _LOADING_ATTRS.get(tag, ()):
            for url in _urls(a.get(attr, ""), srcset=attr == "srcset"):
                if _is_external(url):
                    self.findings.append(f"<{tag} {attr}> loads {url}")
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            if rels & _LOADING_RELS and _is_external(a.get("href", "")):
                self.findings.append(f"<link rel={a.get('rel')}> loads {a['href']}")
        if "style" in a:
            self.findings += external_resources_in_css(a["style"], where=f"<{tag} style>")
        if (
            tag == "script"
            and not a.get("src")
            and a.get("type", "").lower() not in _DATA_SCRIPT_TYPES
        ):
            self._in, self._text = "script", []
        elif tag == "style":
            self._in, self._text = "style", []

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != self._in:
            return
        text = "".join(self._text)
        if tag == "style":
            self.findings += external_resources_in_css(text)
        else:
            self.findings += [
                f"inline <script> loads {m.group(0)}" for m in _INLINE_SCRIPT_URL.finditer(text)
            ]
        self._in = None


def _urls(value: str, srcset: bool) -> list[str]:
    if not value:
        return []
    if not srcset:
        return [value]
    return [part.split()[0] for part in value.split(",") if part.strip()]


def external_resources_in_html(html: str) -> list[str]:
    """Findings for everything in ``html`` that the browser would fetch from another host.

    ``<a href>`` links are not resources and are never reported.
    """
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return scanner.findings
