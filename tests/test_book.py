"""The rendered book: it builds with warnings as errors, works offline, and reads well in a browser.

One session fixture builds the book (``jupyter-book build <repo> -W --keep-going --all``
into ``_build/``); the tests then check the HTML (nothing loaded from another host,
MathJax served locally, reader buttons, every internal link resolves, solutions current)
and open every page in headless Chromium (no console errors, math typeset, images loaded,
code cells present), saving a full-page screenshot of each in ``_build/screenshots/``.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest
import yaml

import browser
from offline_scan import external_resources_in_css, external_resources_in_html

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
BUILD_TIMEOUT_S = 600
# The alt text _config.yml gives notebook figures that do not describe themselves.
GENERIC_ALT = CONFIG["sphinx"]["config"]["nb_render_image_options"]["alt"]

pytestmark = pytest.mark.book


def toc_pages() -> list[str]:
    """Every document of the book in reading order,
    e.g. ``book/intro``, ``book/01_tokenization``."""
    pages = [TOC["root"]]
    for part in TOC.get("parts", [{"chapters": TOC.get("chapters", [])}]):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


PAGES = toc_pages()
CHAPTER_PAGES = [
    page
    for part in TOC["parts"]
    if part.get("numbered")
    for page in (c["file"] for c in part["chapters"])
]


def source_of(page: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{page}{suffix}").exists():
            return ROOT / f"{page}{suffix}"
    raise FileNotFoundError(f"{page} is in _toc.yml but neither {page}.ipynb nor {page}.md exists")


_CODE = re.compile(r"(^|\n)(`{3,}|~{3,}).*?\n\2|`[^`\n]+`", re.DOTALL)
_MATH = re.compile(r"\$\$.+?\$\$|\$[^\s$][^$\n]*?\$|\{math\}|\\begin\{", re.DOTALL)


def markdown_has_math(text: str) -> bool:
    """Whether MyST markdown contains math ($...$, $$...$$, {math}, \\begin{...}) outside code."""
    return bool(_MATH.search(_CODE.sub(" ", text)))


def page_has_math(page: str) -> bool:
    path = source_of(page)
    if path.suffix == ".md":
        return markdown_has_math(path.read_text(encoding="utf-8"))
    notebook = nbformat.read(path, as_version=4)
    return any(
        markdown_has_math(cell.source) for cell in notebook.cells if cell.cell_type == "markdown"
    )


def html_of(page: str) -> str:
    return (HTML / f"{page}.html").read_text(encoding="utf-8")


# --- the offline scanner, on small strings (no build needed) ---------------------------------


def test_scanner_flags_an_external_script() -> None:
    page = (
        "<html><head><script "
        'src="https://cdn.example.org/lib.js"></script></head><body></body></html>'
    )
    assert external_resources_in_html(page) == ["<script src> loads https://cdn.example.org/lib.js"]


@pytest.mark.parametrize(
    ("snippet", "flagged"),
    [
        ('<script src="../_static/mathjax/tex-chtml.js"></script>', False),
        ('<script src="//cdn.example.org/require.min.js"></script>', True),
        ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Lato">', True),
        ('<link rel="preload" as="font" href="http://example.org/f.woff2">', True),
        ('<link rel="shortcut icon" href="https://example.org/favicon.ico">', True),
        ('<link rel="stylesheet" href="../_static/custom.css">', False),
        ('<a href="https://github.com/your-org/sydsgpt">source</a>', False),
        ('<link rel="canonical" href="https://example.org/book/">', False),
        ('<img src="https://example.org/plot.png" alt="plot">', True),
        ('<img src="../_images/plot.png" alt="plot">', False),
        ("<style>@font-face { src: url('https://example.org/f.woff2'); }</style>", True),
        ('<div style="background: url(https://example.org/bg.png)"></div>', True),
        (
            "<script>var s = document.createElement('script'); s.src = "
            "'https://unpkg.com/x@1/dist/x.js';</script>",
            True,
        ),
        (
            '<script type="text/x-thebe-config">{"binderOptions": {"binderUrl": '
            '"https://mybinder.org"}}</script>',
            False,
        ),
    ],
)
def test_scanner_cases(snippet: str, flagged: bool) -> None:
    assert bool(external_resources_in_html(snippet)) is flagged, external_resources_in_html(snippet)


def test_css_scanner_flags_external_fonts_and_imports() -> None:
    css = (
        '@import "https://fonts.googleapis.com/css2?family=Inter";\n'
        "@font-face { src: url(https://example.org/f.woff2) format('woff2'), "
        "url(../webfonts/fa.woff2); }\n"
        ".x { background: url('data:image/png;base64,AAAA'); }"
    )
    assert external_resources_in_css(css, "a.css") == [
        "a.css: CSS loads https://fonts.googleapis.com/css2?family=Inter",
        "a.css: CSS loads https://example.org/f.woff2",
    ]


def test_math_detection_ignores_code() -> None:
    assert markdown_has_math("The loss is $L = -\\log p$.")
    assert markdown_has_math("$$\nx^2\n$$")
    assert not markdown_has_math("Run `echo $HOME` and\n```bash\nexport A=$B$C\n```\n")


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "book").glob("*.ipynb")))
def test_every_figure_describes_itself_in_its_alt_text(notebook: str) -> None:
    # Readers with a screen reader get the cell's alt text instead of the picture.
    nb = nbformat.read(ROOT / "book" / notebook, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(
            "image/png" in out.get("data", {}) for out in cell.outputs
        ):
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt.split()) >= 8, (
                f"{notebook} cell {index}: a figure without a descriptive alt text ({alt!r})"
            )


def test_printed_tables_are_marked_so_they_keep_their_columns() -> None:
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from sydsgpt_book import mark_text_tables
    finally:
        sys.path.pop(0)
    from docutils import nodes
    from docutils.utils import new_document

    document = new_document("page")
    table = nodes.literal_block(
        text="setup  tokens_s\n-----  --------\nplain  830.6", classes=["output", "stream"]
    )
    prose = nodes.literal_block(
        text="Hint: a long line -- not a table", classes=["output", "stream"]
    )
    code = nodes.literal_block(text="-----  --------", classes=["python"])
    document += [table, prose, code]
    mark_text_tables(None, document, "page")
    assert [("text-table" in block["classes"]) for block in (table, prose, code)] == [
        True,
        False,
        False,
    ]


# --- the build ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Build the whole book once, from scratch, with warnings as errors; returns ``_build/html``."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(ROOT), "-W", "--keep-going", "--all"]
    t0 = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=ROOT
    )
    log = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # no terminal colours
    if result.returncode != 0:
        problems = [
            line for line in log.splitlines() if re.search(r"WARNING|ERROR|Error|Traceback", line)
        ]
        pytest.fail(
            f"`{' '.join(command)}` failed (exit {result.returncode}); warnings are errors.\n"
            + "\n".join(problems[:40] or log.splitlines()[-40:]),
            pytrace=False,
        )
    print(f"book built in {time.perf_counter() - t0:.1f}s")
    return HTML


def test_every_page_of_the_toc_is_built(built_book: Path) -> None:
    missing = [page for page in PAGES if not (built_book / f"{page}.html").exists()]
    assert not missing, f"pages in _toc.yml with no HTML: {missing}"
    assert (built_book / "index.html").exists()
    assert (built_book / "search.html").exists() and (built_book / "searchindex.js").exists(), (
        "search is missing"
    )


def test_no_page_loads_anything_from_another_host(built_book: Path) -> None:
    findings = []
    for path in sorted(built_book.rglob("*.html")):
        findings += [
            f"{path.relative_to(built_book)}: {f}"
            for f in external_resources_in_html(path.read_text(encoding="utf-8"))
        ]
    for path in sorted(built_book.rglob("*.css")):
        findings += external_resources_in_css(
            path.read_text(encoding="utf-8", errors="replace"), str(path.relative_to(built_book))
        )
    assert not findings, (
        "the book must work offline, but these load from another host:\n" + "\n".join(findings[:30])
    )


@pytest.mark.parametrize("page", PAGES)
def test_math_is_served_from_the_book_itself(built_book: Path, page: str) -> None:
    if not page_has_math(page):
        pytest.skip(f"{page} has no math")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html_of(page))
    assert scripts, f"{page} has math but loads no MathJax"
    for src in scripts:
        local = (built_book / page).parent / src.split("?")[0]
        assert local.resolve().is_file(), (
            f"{page} loads MathJax from {src}, which is not in the build"
        )
    fonts = list(
        (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob(
            "*.woff"
        )
    )
    assert fonts, "MathJax's fonts are missing from _static/mathjax"


@pytest.mark.parametrize("page", [p for p in PAGES if p != TOC["root"]])
def test_reader_buttons_come_from_the_one_repository_url(built_book: Path, page: str) -> None:
    page_html = html_of(page)
    repo = CONFIG["repository"]
    url, branch = repo["url"].rstrip("/"), repo["branch"]
    org_repo = urlparse(url).path.strip("/")
    path = f"{repo.get('path_to_book', '').strip('/')}/{page}.ipynb".lstrip("/")
    launch = CONFIG["launch_buttons"]
    expected = {
        "repository button": f'href="{url}"',
        "Binder button": (
            f'href="{launch["binderhub_url"].rstrip("/")}/v2/gh/{org_repo}/{branch}'
            f'?urlpath=lab/tree/{path}"'
        ),
        "Colab button": (
            f'href="{launch["colab_url"].rstrip("/")}/github/{org_repo}/blob/{branch}/{path}"'
        ),
        "download button": f'href="../_sources/{page}.ipynb"',
        "copy buttons on code": "copybutton.js",
    }
    missing = [name for name, snippet in expected.items() if snippet not in page_html]
    assert not missing, f"{page} lacks {missing}"
    assert (built_book / "_sources" / f"{page}.ipynb").is_file(), (
        "the downloadable notebook is not in the build"
    )


def test_chapters_are_numbered_in_the_navigation(built_book: Path) -> None:
    nav = html_of(TOC["root"])
    for number, page in enumerate(CHAPTER_PAGES, start=1):
        target = Path(page).name + ".html"
        assert re.search(rf'href="{re.escape(target)}">{number}\. ', nav), (
            f"chapter {number} ({page}) is not numbered {number}."
        )


@pytest.mark.parametrize("number", range(1, len(CHAPTER_PAGES) + 1))
def test_chapter_titles_carry_their_number(built_book: Path, number: int) -> None:
    """custom.css hides the section number in front of chapter titles: the title must say it."""
    page = CHAPTER_PAGES[number - 1]
    h1 = re.search(
        r'<h1><span class="section-number">([^<]*)</span>([^<]*)<a class="headerlink"',
        html_of(page),
    )
    assert h1, f"{page}: no numbered title (is the part still `numbered: true`?)"
    assert h1.group(1).strip() == f"{number}.", (
        f"{page} is numbered {h1.group(1)!r}, expected {number}."
    )
    title = html.unescape(h1.group(2))
    assert title.startswith(f"Chapter {number}: "), (
        f"{page}: title {title!r} should start with 'Chapter {number}: '"
    )
    nav_title = next(
        c.get("title") for part in TOC["parts"] for c in part["chapters"] if c["file"] == page
    )
    assert title == f"Chapter {number}: {nav_title}", (
        f"{page}: the page title {title!r} and its navigation title {nav_title!r} in _toc.yml "
        "differ; update _toc.yml"
    )


class _LinksAndIds(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _parse(path: Path) -> _LinksAndIds:
    parser = _LinksAndIds()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_internal_link_resolves(built_book: Path) -> None:
    """Cross-references between chapters (and every other
    internal link) lead to a page and anchor that exist."""
    broken, parsed = [], {}
    for page in PAGES:
        source = built_book / f"{page}.html"
        for href in _parse(source).links:
            if urlparse(href).scheme or href.startswith(("//", "mailto:")):
                continue
            target_url = urlparse(urljoin(source.as_uri(), href))
            target = Path(unquote(target_url.path))
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page}: {href} (no such file)")
            elif target_url.fragment and target.suffix == ".html":
                if target not in parsed:  # parse each page once (setdefault would parse every time)
                    parsed[target] = _parse(target).ids
                ids = parsed[target]
                if unquote(target_url.fragment) not in ids:
                    broken.append(f"{page}: {href} (no anchor #{target_url.fragment})")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_intro_links_every_chapter(built_book: Path) -> None:
    links = set(_parse(built_book / f"{TOC['root']}.html").links)
    missing = [
        page
        for page in PAGES[1:]
        if not any(link.split("#")[0] == Path(page).name + ".html" for link in links)
    ]
    assert not missing, f"the intro does not link to {missing}"


def test_solutions_page_shows_every_registered_exercise(built_book: Path) -> None:
    from sydsgpt.exercises import exercises_in_chapter

    text = html.unescape(html_of("book/solutions"))
    last = 0
    for chapter in range(1, len(CHAPTER_PAGES) + 1):
        for exercise in exercises_in_chapter(chapter):
            feedback = text.find(f"Exercise {exercise.key} ({exercise.stars}): {exercise.title}")
            assert feedback >= 0, (
                f"exercise {exercise.key} is registered but not on the Solutions page (or its "
                "title changed); re-execute the page: .ci/execute-notebooks book/solutions.ipynb"
            )
            heading = text.find(f'id="exercise-{exercise.key.replace(".", "-")}"')
            assert last < heading < feedback, (
                f"exercise {exercise.key}: its heading and check output are out of order"
            )
            last = feedback


# --- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    path = browser.find_chromium()
    reason = browser.MISSING_HELP.format(candidates=", ".join(browser.CHROMIUM_CANDIDATES))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the browser test must run: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set, but Python Playwright is not installed (pip install playwright)",
                pytrace=False,
            )
        pytest.skip("Python Playwright is not installed (pip install playwright)")
    return path


@pytest.fixture(scope="session")
def browser_context(chromium: str):
    """One headless Chromium (empty temporary profile) for all the browser tests."""
    with browser.chromium_context(chromium) as context:
        yield context


@pytest.fixture(scope="session")
def book_url(built_book: Path) -> str:
    """The built book served on 127.0.0.1 (a free port)."""
    with browser.serve_directory(built_book) as base_url:
        yield base_url


def test_browser_check_catches_what_a_reader_would_see(browser_context, tmp_path: Path) -> None:
    """The browser harness itself: a broken page must produce
    problems (a check that cannot fail is useless)."""
    (tmp_path / "bad.html").write_text(
        "<html><body><p>hi</p>"
        '<script src="https://cdn.example.org/lib.js"></script>'
        '<img src="missing.png" alt="a plot">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    # Code blocks in a 600 px column that scrolls, as the theme's does (a cell input and a
    # show_source output too wide for it, one that fits, and a printed table that may scroll).
    long_input = ("x = " + "1 + " * 40)[:150]
    long_source = ("def f(): return " + "2 * " * 40)[:120]
    (tmp_path / "code.html").write_text(
        "<html><head><style>article { width: 600px; font: 14px monospace; }"
        " pre { overflow: auto; }</style></head><body><article>"
        f'<div class="cell"><div class="cell_input"><pre>short = 1\n{long_input}</pre></div>'
        '<div class="cell_output"><div class="output text_html"><div class="highlight">'
        f"<pre>{long_source}</pre></div></div></div></div>"
        '<div class="cell"><div class="cell_input"><pre>fits = True</pre></div>'
        '<div class="cell_output"><div class="output stream text-table">'
        f"<pre>{'column ' * 40}</pre></div></div></div>"
        "</article></body></html>",
        encoding="utf-8",
    )
    with browser.serve_directory(tmp_path) as base_url:
        tab, problems = browser.open_page(browser_context, f"{base_url}bad.html")
        broken = tab.evaluate(browser.BROKEN_IMAGES)
        tab.close()
        tab, _ = browser.open_page(browser_context, f"{base_url}code.html")
        code_overflow = tab.evaluate(browser.CODE_OVERFLOW)
        tab.close()
    assert problems.blocked_requests == ["request to another host: https://cdn.example.org/lib.js"]
    assert any("boom" in line for line in problems.console_errors)
    assert any("undefinedFunction" in line for line in problems.page_errors)
    assert any("404" in line and "missing.png" in line for line in problems.failed_requests)
    assert broken == ["missing.png"]
    # Only the two code blocks that are too wide; the fitting one and the printed table not.
    assert [(c["kind"], c["chars"], c["line"]) for c in code_overflow] == [
        ("cell input", 150, long_input[:60]),
        ("show_source output", 120, long_source[:60]),
    ]


@pytest.mark.parametrize("page", PAGES)
def test_page_in_a_real_browser(browser_context, book_url: str, page: str) -> None:
    tab, problems = browser.open_page(browser_context, f"{book_url}{page}.html")
    try:
        mathjax = tab.evaluate(browser.WAIT_FOR_MATHJAX)
        broken_images = tab.evaluate(browser.BROKEN_IMAGES)
        math_count = tab.locator("mjx-container").count()
        inputs, outputs = (
            tab.locator("div.cell_input").count(),
            tab.locator("div.cell_output").count(),
        )
        no_alt = tab.evaluate(browser.IMAGES_WITHOUT_ALT)
        generic_alt = tab.evaluate(
            "alt => Array.from(document.images).filter(i => i.alt === alt).length", GENERIC_ALT
        )
        overflow = tab.evaluate(browser.PAGE_OVERFLOW_PX)
        code_overflow = tab.evaluate(browser.CODE_OVERFLOW)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # The first screen (a whole page takes about a second more per page):
        # SYDSGPT_FULL_SCREENSHOTS=1 saves whole pages to look at.
        full = os.environ.get("SYDSGPT_FULL_SCREENSHOTS") == "1"
        tab.screenshot(path=str(SCREENSHOTS / f"{Path(page).name}.png"), full_page=full)
    finally:
        tab.close()

    assert not problems.all(), f"{page}:\n" + "\n".join(problems.all())
    if page_has_math(page):
        assert mathjax == "typeset", f"{page}: MathJax did not typeset ({mathjax})"
        assert math_count > 0, f"{page} has math in its source but no rendered math (mjx-container)"
    assert not broken_images, f"{page}: images that did not load: {broken_images}"
    assert not no_alt, f"{page}: images without a text alternative: {no_alt}"
    assert not generic_alt, (
        f"{page}: {generic_alt} figure(s) have only the generic alt text {GENERIC_ALT!r}; describe "
        "each plot "
        'with the cell metadata {"mystnb": {"image": {"alt": "..."}}}'
    )
    if source_of(page).suffix == ".ipynb":
        assert inputs > 0 and outputs > 0, (
            f"{page}: {inputs} code cells and {outputs} outputs rendered"
        )
    assert overflow <= 1, f"{page} is {overflow}px wider than the window: something overflows"
    assert not code_overflow, (
        f"{page}: {len(code_overflow)} code block(s) scroll sideways in a 1280 px wide window "
        "(book/_static/custom.css sizes the column and the code font so that ~100 characters "
        "fit; notebook code lines are held to 88):\n"
        + "\n".join(
            f"  {c['kind']}, widest line {c['chars']} characters ({c['overflow_px']}px too wide): "
            f"{c['line']!r}"
            for c in code_overflow
        )
    )
