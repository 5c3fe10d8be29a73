"""The documentation holds together: the README stays short, every relative link and anchor resolves, and
the README's test command is the one CI runs."""

import re
import unicodedata
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, ROOT / "assets" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks and the YAML front matter, inline code removed."""
    lines, in_fence = [], False
    body = text.split("\n")
    if body and body[0] == "---":  # front matter (the Space config): not Markdown
        end = body.index("---", 1) if "---" in body[1:] else 0
        body = body[end + 1 :]
    for line in body:
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        lines.append("" if in_fence else line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The targets of the file's Markdown links and images that point inside the repository."""
    targets = []
    for line in prose_lines(path.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                targets.append(target)
    return targets


def broken_links(path: Path) -> list[str]:
    """The file's relative links whose file, or whose #anchor in a Markdown file, does not exist."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


def test_the_readme_fits_in_200_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), broken_links(page)


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in relative_links(README)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def test_the_readme_test_command_is_the_one_ci_runs():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    command = ci_lines[-1]  # .ci/run ends with the README's test command, verbatim
    assert "pytest" in command
    assert command in README.read_text().splitlines(), f"README.md must show CI's test command exactly: {command}"


def test_the_checker_finds_broken_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## `python -m x` options: the rest\n\n## Twice\n\n## Twice\n")
    (tmp_path / "figure.png").write_bytes(b"")
    readme = tmp_path / "README.md"
    readme.write_text(
        "---\nlicense_link: gone.md\n---\n"
        "![fig](figure.png) [ok](docs/page.md#python--m-x-options-the-rest) [again](docs/page.md#twice-1)\n"
        "[web](https://example.org/x) [self](#top) `[code](gone.md)`\n\n"
        "```\n[fenced](gone.md)\n# not a heading\n```\n\n"
        "# Top\n[missing](docs/gone.md) [bad anchor](docs/page.md#nowhere) [fence](#not-a-heading)\n"
    )
    assert broken_links(readme) == [
        "docs/gone.md (no such file)",
        "docs/page.md#nowhere (no heading with that anchor)",
        "#not-a-heading (no heading with that anchor)",
    ]
