"""A small Sphinx extension for the rendered book (listed in ``_config.yml``).

- **One copy of each script.** Jupyter Book 1.x's sphinx-thebe and sphinx-togglebutton register their inline
  configuration scripts on an event that fires twice per build, so every page carried two copies; the second
  ``const THEBE_JS_URL`` is a ``SyntaxError`` in the browser console. Duplicates (same file, same attributes,
  same inline body) are dropped when each page is rendered.
- **A theme mode.** Without one, the theme logs "Got invalid theme mode" to the console of every browser that has
  not visited the book before; pages get ``auto`` (follow the reader's system setting).
- **The book's stylesheet**, ``book.css``: long code lines wrap at the column's width instead of scrolling
  sideways, the Reproduction check's HTML table fits the column, and wide display math scrolls in its own box.
- **Downloads**: a chapter's download menu offers the notebook and its MyST-markdown text form
  (``text/<part>/<slug>.md``, copied into ``_sources/text/``), both served from the book itself.
- **The reproduction dashboard**: the ``{reproduction-dashboard}`` directive renders
  :func:`booktools.dashboard.markdown` (every claim of every chapter, read from the committed notebooks at
  build time) and makes the page depend on the notebooks, ``_build/timings.json`` and ``_build/bench.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

STATIC = Path(__file__).resolve().parent / "static"
ROOT = Path(__file__).resolve().parent.parent


def _key(asset: Any) -> tuple:
    attrs = getattr(asset, "attributes", {}) or {}
    # an inline script is registered once with filename None and once with "": the same script
    return (str(getattr(asset, "filename", asset) or ""), tuple(sorted((k, str(v)) for k, v in attrs.items())))


def dedupe(assets: list) -> list:
    """The assets in order, each (file, attributes, inline body) once."""
    seen: set = set()
    out = []
    for asset in assets:
        key = _key(asset)
        if key not in seen:
            seen.add(key)
            out.append(asset)
    return out


def _page_context(app, pagename, templatename, context, doctree) -> None:
    for name in ("script_files", "css_files"):
        if isinstance(context.get(name), list):
            context[name] = dedupe(context[name])
    if not context.get("default_mode"):  # else the theme logs "Got invalid theme mode" in every new browser
        context["default_mode"] = "auto"
    _add_text_download(pagename, context)


def _text_source(pagename: str) -> str | None:
    """``book/<part>/<slug>`` -> ``text/<part>/<slug>.md`` when that text form exists."""
    if not pagename.startswith("book/"):
        return None
    rel = "text/" + pagename.removeprefix("book/") + ".md"
    return rel if (ROOT / rel).is_file() else None


def _add_text_download(pagename: str, context: dict) -> None:
    """A chapter's download menu also offers its MyST-markdown text form (copied into _sources/text/)."""
    rel = _text_source(pagename)
    if rel is None or "pathto" not in context:
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].insert(1, {"type": "link", "url": f"{context['pathto']('_sources', 1)}/{rel}",
                                        "text": ".md", "icon": "fas fa-file-lines",
                                        "tooltip": "Download the text form (MyST markdown, jupytext)",
                                        "label": "download-text-form-button"})


def _copy_text_forms(app, exception) -> None:
    if exception is None and (ROOT / "text").is_dir():
        import shutil

        shutil.copytree(ROOT / "text", Path(app.outdir) / "_sources" / "text", dirs_exist_ok=True)


class ReproductionDashboard(SphinxDirective):
    """``{reproduction-dashboard}``: the dashboard tables, generated now from the committed notebooks."""

    has_content = False

    def run(self) -> list:
        from booktools import dashboard

        for dep in dashboard.dependencies():
            self.env.note_dependency(str(dep))
        container = nodes.container(classes=["book-dashboard"])
        text = dashboard.markdown(link_base=Path(self.env.docname).parent)
        self.state.nested_parse(StringList(text.splitlines(), source="reproduction-dashboard"),
                                self.content_offset, container)
        return [container]


def _add_static(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app) -> dict:
    app.connect("builder-inited", _add_static)
    app.connect("html-page-context", _page_context, priority=900)
    app.add_css_file("book.css")
    app.add_directive("reproduction-dashboard", ReproductionDashboard)
    app.connect("build-finished", _copy_text_forms)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
