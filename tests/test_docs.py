"""The documentation's shape: a short README, relative links that resolve on GitHub, and no
repository-external data path outside the README's set-up command.

Pure text checks (no TensorFlow), so they run in well under a second.
"""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 300
SHARED = "../shared"

# [text](target) and ![alt](target); the target ends at the first space or ")".
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def prose_lines(text: str):
    """(line number, line, inside a fenced code block) for every line of `text`."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            yield number, line, True
            continue
        yield number, line, fenced


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, markup and punctuation dropped (letters, marks,
    digits, '_', '-' and spaces kept), spaces to '-'."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = text.strip().lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 ... suffixes for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for _, line, fenced in prose_lines(path.read_text(encoding="utf-8")):
        match = None if fenced else HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        result.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return result


def links(path: Path):
    """(line number, target) of every markdown link outside code."""
    for number, line, fenced in prose_lines(path.read_text(encoding="utf-8")):
        if fenced:
            continue
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def test_slug_rules():
    assert github_slug("Radius ablation (`--protocol radius`, quick protocol, seed 0)") == \
        "radius-ablation---protocol-radius-quick-protocol-seed-0"
    assert github_slug("EPC's chart switches") == "epcs-chart-switches"
    assert github_slug("The boundary variant (∂D) and its point-free limit") == \
        "the-boundary-variant-d-and-its-point-free-limit"
    assert github_slug("Training: `train.py` in brief") == "training-trainpy-in-brief"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"method.md", "results.md", "training.md", "deployment.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            broken.append(f"{page.name}:{number}: {target} (absolute; GitHub needs a relative path)")
            continue
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{page.name}:{number}: {target} (no such file)")
            continue
        if ROOT not in linked.parents and linked != ROOT:
            broken.append(f"{page.name}:{number}: {target} (outside the repository)")
            continue
        if fragment:
            if linked.suffix != ".md":
                broken.append(f"{page.name}:{number}: {target} (anchor into a non-markdown file)")
            elif fragment not in anchors(linked):
                broken.append(f"{page.name}:{number}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_no_external_data_path_outside_the_set_up_command():
    """The library knows no repository paths; only the README's set-up command may point the user
    at a data folder next to the checkout."""
    for page in DOCS:
        assert SHARED not in page.read_text(encoding="utf-8"), f"{page.name} mentions {SHARED}"
    section, offending, in_set_up_block = None, [], 0
    for number, line, fenced in prose_lines(README.read_text(encoding="utf-8")):
        heading = None if fenced else HEADING.match(line)
        if heading:
            section = github_slug(heading.group(2))
        if SHARED in line:
            if fenced and section == "set-up" and not FENCE.match(line):
                in_set_up_block += 1
            else:
                offending.append(f"README.md:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)
    assert in_set_up_block <= 1


def test_readme_has_the_two_set_up_commands_and_python_versions():
    text = README.read_text(encoding="utf-8")
    set_up = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = set_up.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pip install -e ." in commands[0] and "python train.py" in commands[0]
    assert "python -m pytest -q" in commands[1]
    assert re.search(r"Python 3\.10", set_up)


def test_results_summary_is_the_validation_selected_confirmation():
    """The README's results table is issue #27's confirmation (checked against the stored runs by
    `test_readme_confirmation_tables_are_the_stored_runs`), not a test-selected table."""
    text = README.read_text(encoding="utf-8")
    start = "<!-- results-summary: validation-selected confirmation runs (issue #27) -->"
    assert text.count(start) == 1 and text.count("<!-- /results-summary -->") == 1
    block = text.split(start, 1)[1].split("<!-- /results-summary -->", 1)[0]
    assert "\n| quick-val: " in block


def test_readme_confirmation_tables_are_the_stored_runs():
    """A validation-selected table in the README (a line `| <protocol>: ...`) is exactly what
    `python benchmarks/selection.py --protocol <protocol> --markdown` prints from the committed runs."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy
    import selection

    lines = README.read_text(encoding="utf-8").splitlines()
    for protocol in selection.SETTINGS:
        starts = [i for i, line in enumerate(lines) if line.startswith(f"| {protocol}: ")]
        if not starts:
            continue
        table = selection.markdown_table(accuracy.load(protocol)).splitlines()
        assert lines[starts[0]:starts[0] + len(table)] == table, protocol
        assert not lines[starts[0] + len(table)].startswith("|"), f"{protocol}: rows the stored runs do not have"
