"""MkDocs hook: the site's home page is README.md, the user's manual.

README.md links to ``docs/PAGE.md`` and the pages link back to ``../README.md`` and to
``../reports/FILE``, so every link works where the Markdown is read as files (GitHub, the
package's long description). On the site the README becomes ``index.md`` beside the
pages, and the report figures it and the pages show are copied to ``reports/``; the
links are rewritten to match. GitHub needs a pipe inside a code span of a table row
escaped (``\\|``), Python-Markdown reads it literally there, so it is unescaped. Nothing
else in the text changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

REPOSITORY = Path(__file__).resolve().parent.parent
HOME = "index.md"
CODE_SPAN = re.compile(r"`[^`\n]*`")


def table_code_pipes(markdown: str) -> str:
    """``\\|`` inside the code spans of table rows made a plain ``|``."""
    def unescape(span: re.Match[str]) -> str:
        return span.group(0).replace("\\|", "|")

    return "\n".join(
        CODE_SPAN.sub(unescape, line) if line.lstrip().startswith("|") else line
        for line in markdown.split("\n")
    )


def readme_as_home(readme: str) -> str:
    """The README's Markdown with its links into ``docs/`` made relative to the site root."""
    return table_code_pipes(readme.replace("](docs/", "]("))


def page_links_on_site(markdown: str) -> str:
    """A docs page's Markdown with its links out of ``docs/`` pointed at the site's copies."""
    markdown = markdown.replace("](../README.md", f"]({HOME}")
    markdown = markdown.replace("](../reports/", "](reports/")
    return table_code_pipes(markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, HOME, content=readme_as_home(readme)))
    for figure in sorted((REPOSITORY / "reports").glob("*.png")):
        files.append(File.generated(config, f"reports/{figure.name}", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri == HOME:
        return markdown
    return page_links_on_site(markdown)
