"""The README's and docs' links: every relative link names a file of the repository, and every
#anchor a heading of that file, slugged as GitHub does. The links are written by hand."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "reports").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_slug(heading):
    """GitHub's anchor for a Markdown heading: lower case, markup and punctuation dropped (letters,
    digits, '_', '-' and spaces kept), spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = github_slug(line.lstrip("#"))
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_github_slug_on_known_headings():
    assert github_slug("The loop on one H200 (2026-12-04)") == "the-loop-on-one-h200-2026-12-04"
    assert github_slug("2-core CPU (before the batched pipeline)") == "2-core-cpu-before-the-batched-pipeline"
    assert github_slug("`make bench`: 40.3 min, ≤ 120") == "make-bench-403-min--120"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, "\n".join(broken)
