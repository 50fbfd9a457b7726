"""The README and the pages under ``docs/``: every relative link resolves, every page is in
the site's navigation, and the MkDocs site builds with ``--strict``.

Links are checked as GitHub resolves them (a path relative to the file, an anchor made from
a heading by GitHub's rule), so they work where the Markdown is read as files; the site
build (skipped where MkDocs is not installed: ``pip install -e ".[docs]"``) checks them as
MkDocs resolves them, with ``docs/hooks.py`` turning the README into the site's home page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
MARKDOWN = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The Markdown without fenced code blocks and code spans, where links are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed,
    each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        found.add(anchor if count == 0 else f"{anchor}-{count}")
        seen[anchor] = count + 1
    return found


def relative_links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file that are not URLs."""
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not SCHEME.match(t) and not t.startswith("//")]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        if target.startswith("/"):
            broken.append(f"{target}: an absolute path; write it relative to {path.name}")
            continue
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_link_checker_finds_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## The section\n\n"
        "[fine](#the-section) [gone](missing.md) [bad anchor](#no-such-section)\n\n"
        "`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n",
        encoding="utf-8",
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "#no-such-section"]


def test_github_anchor_rule() -> None:
    assert github_anchor("Gate your model in your own repository") == (
        "gate-your-model-in-your-own-repository"
    )
    assert github_anchor("Cross-check: torchmil's implementations") == (
        "cross-check-torchmils-implementations"
    )
    assert github_anchor("`--mil-model` and D = 16") == "--mil-model-and-d--16"


def test_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for t in LINK.findall(prose(readme))}
    missing = [p.name for p in DOCS.glob("*.md") if f"docs/{p.name}" not in linked]
    assert missing == [], "pages the README's documentation list does not link"


def test_every_page_is_in_the_nav() -> None:
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:") :]
    in_nav = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {p.name for p in DOCS.glob("*.md")} | {"index.md"}
    assert pages - in_nav == set(), "pages missing from mkdocs.yml's nav"
    assert in_nav - pages == set(), "nav entries without a page"


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason='MkDocs is not installed: pip install -e ".[docs]"')
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-4000:]
    home = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Gate your model in your own repository" in home
    assert 'href="verdict-rule/' in home
    assert "<code>--mil-device=auto|cpu|cuda</code>" in home  # GitHub's \| unescaped
    assert (tmp_path / "reports" / "compliance.png").is_file()
