"""The documents the code cites live in docs/ and every citation of them resolves.

Three checks over the repository's own files (tracked, or untracked and not ignored):
1. nothing points outside the repository (at the reference folder beside a checkout) or cites the old reference
   documents by their old names (SPEC, DATA.md, NOTEBOOKS.md, STYLE.md) instead of ``docs/*.md``;
2. every ``docs/<name>.md`` citation names an existing file and, when it gives a section (``§5.3``, ``§3c``,
   ``§3(b)3``, ``§5C``, ``§7-9``), a decision (``Decision 4``) or a style point (``docs/style.md 13``), that section,
   decision or point exists;
3. relative markdown links in the READMEs and notes point to files that exist.
Only the standard library is used.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SELF = Path(__file__).resolve()
DOC_NAMES = ("method", "data", "notebooks", "style")

SCANNED_SUFFIXES = {".py", ".md", ".ipynb", ".yaml", ".yml", ".toml", ".cfg", ".sh", ".txt"}
SCANNED_NAMES = {"Makefile"}
SCANNED_PATHS = {".ci/run"}  # the CI entry script has no suffix

# Check 1. OLD_CITATION is a superset of r"\b(SPEC(\.md)?\s*§|DATA\.md|NOTEBOOKS\.md|STYLE\.md)": it also catches
# "SPEC.md" without a section and "SPEC Decision 5" / "SPEC decisions".
OUTSIDE = re.compile(r"\.\./shared|/work/shared")
OLD_CITATION = re.compile(r"\b(SPEC\.md|SPEC\s*§|SPEC\s+[Dd]ecisions?\b|DATA\.md|NOTEBOOKS\.md|STYLE\.md)")

# Check 2. A citation is "docs/<name>.md" (optionally closed by a backtick) followed by zero or more references,
# each preceded by whitespace and/or one of , / & and.
DOC_CITE = re.compile(r"(?:(?<=\.\./)|(?<![\w./-]))docs/(?P<name>[\w-]+)\.md`?")  # not inside a URL
REF_SEP = re.compile(r"\s*(?:,|/|&|\band\b)?\s*")
SECTION_REF = re.compile(
    r"§\s?(?P<sec>\d+(?:\.\d+)*)"  # §5, §5.3
    r"(?:\s*[-–]\s*(?P<sec_end>\d+(?:\.\d+)*))?"  # §7-9 (a range)
    r"(?P<sub>\([A-Za-z]\)|[A-Za-z](?![\w]))?"  # §3c, §3(c), §5C
    r"(?P<item>\d+)?"  # §3(b)3: item 3 of (b)
)
DECISION_REF = re.compile(r"(?P<word>[Dd]ecisions?)\b(?:\s+(?P<num>\d+)\b)?")
POINT_REF = re.compile(r"(?P<num>\d+)\b(?![.,]\d)")  # docs/style.md 13 (style points only)

# Check 3.
LINKED_FILES = ("README.md", "data/README.md", "paper_figures/README.md", "bench/NOTES.md")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s|$)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


# ---------------------------------------------------------------------------------------------------------------
# helpers: files
# ---------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def repo_files() -> tuple[Path, ...]:
    """Tracked and untracked-but-not-ignored files that exist, relative to ROOT."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode("utf-8", "replace")
    paths = sorted({Path(p) for p in out.split("\0") if p})
    return tuple(p for p in paths if (ROOT / p).is_file())


def scanned_files() -> list[Path]:
    """The text files checks 1 and 2 read (this test file excluded: it spells out the patterns)."""
    return [p for p in repo_files()
            if (p.suffix in SCANNED_SUFFIXES or p.name in SCANNED_NAMES or p.as_posix() in SCANNED_PATHS)
            and (ROOT / p).resolve() != SELF]


def read_lines(path: Path) -> list[str]:
    return (ROOT / path).read_text(encoding="utf-8", errors="replace").splitlines()


def grep(pattern: re.Pattern, files: list[Path]) -> list[str]:
    """'file:line: text' for every line of ``files`` that ``pattern`` matches."""
    return [f"{p}:{i}: {line.strip()[:160]}" for p in files for i, line in enumerate(read_lines(p), 1)
            if pattern.search(line)]


# ---------------------------------------------------------------------------------------------------------------
# helpers: the structure of a document
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Section:
    key: str  # "5", "5.3", "3(c)", or the heading text for unnumbered headings
    level: int
    title: str
    body: list[str] = field(default_factory=list)  # every line up to the next heading of the same or higher level


def prose_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    out, fenced = [], False
    for i, line in enumerate(lines, 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((i, line))
    return out


@lru_cache(maxsize=None)
def doc_sections(name: str) -> tuple[Section, ...]:
    """Headings of docs/<name>.md. "## 3." -> key "3"; "### (c) ..." under "## 3." -> key "3(c)"."""
    sections: list[Section] = []
    open_: list[Section] = []
    major = None
    for _, line in prose_lines((DOCS / f"{name}.md").read_text(encoding="utf-8").splitlines()):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if m is None:
            for s in open_:
                s.body.append(line)
            continue
        level, title = len(m.group(1)), m.group(2)
        if (num := re.match(r"^(\d+(?:\.\d+)*)\.?(?:\s|$)", title)) is not None:
            key = num.group(1)
            if level <= 2:
                major = key
        elif (letter := re.match(r"^\(([a-z])\)", title, re.I)) is not None and major is not None:
            key = f"{major}({letter.group(1).lower()})"
        else:
            key = title
            if level <= 2:
                major = None
        open_ = [s for s in open_ if s.level < level]
        section = Section(key, level, title)
        sections.append(section)
        open_.append(section)
    return tuple(sections)


def find_section(name: str, key: str) -> Section | None:
    return next((s for s in doc_sections(name) if s.key == key), None)


def has_item(body: list[str], num: str, indented: bool = False) -> bool:
    """A numbered list item ``num.`` (at the start of a line unless ``indented``)."""
    indent = r"\s*" if indented else ""
    pattern = re.compile(rf"^{indent}{re.escape(num)}\.\s")
    return any(pattern.match(line) for line in body)


def has_label(body: list[str], letter: str) -> bool:
    """A bold option label such as ``- **C: ...`` or ``**C (...)``."""
    pattern = re.compile(rf"^\s*(?:[-*]\s+)?\*\*{re.escape(letter)}\b", re.I)
    return any(pattern.match(line) for line in body)


def style_point_exists(num: str) -> bool:
    house = next((s for s in doc_sections("style") if s.title.lower().startswith("house style")), None)
    return house is not None and has_item(house.body, num)


def decision_exists(name: str, num: str | None) -> bool:
    decisions = next((s for s in doc_sections(name) if s.title.lower().startswith("decisions")), None)
    return decisions is not None and (num is None or has_item(decisions.body, num))


def section_exists(name: str, sec: str, sub: str | None, item: str | None) -> bool:
    """§<sec><sub><item>: a numbered heading, then a lettered subsection or option label, then a list item."""
    if name == "style":  # style has no numbered headings: §13 means point 13
        return sub is None and item is None and style_point_exists(sec)
    section = find_section(name, sec)
    if section is None:
        return False
    if sub is not None:
        letter = sub.strip("()")
        lettered = find_section(name, f"{sec}({letter.lower()})")
        if lettered is not None:
            section = lettered
        elif not has_label(section.body, letter):
            return False
    return item is None or has_item(section.body, item, indented=True)


def section_range(start: str, end: str | None) -> list[str]:
    """§7-9 -> 7, 8, 9; a range of dotted numbers is checked at its two ends."""
    if end is None:
        return [start]
    if start.isdigit() and end.isdigit() and int(start) <= int(end):
        return [str(n) for n in range(int(start), int(end) + 1)]
    return [start, end]


def parse_refs(name: str, tail: str) -> list[tuple[str, tuple]]:
    """The references that follow a ``docs/<name>.md`` citation: ('section', (sec, sub, item)), ('decision',
    (num,)) or ('point', (num,))."""
    refs, pos = [], 0
    while True:
        sep = REF_SEP.match(tail, pos)
        at = sep.end()
        if sep.group(0) == "" and refs:
            break  # references after the first need a separator (space, comma, slash, and)
        if (m := SECTION_REF.match(tail, at)) is not None:
            for sec in section_range(m["sec"], m["sec_end"]):
                refs.append(("section", (sec, m["sub"], m["item"])))
        elif (m := DECISION_REF.match(tail, at)) is not None:
            refs.append(("decision", (m["num"],)))
        elif name == "style" and (m := POINT_REF.match(tail, at)) is not None and at > pos:
            refs.append(("point", (m["num"],)))
        else:
            break
        pos = m.end()
    return refs


def resolve(name: str, kind: str, args: tuple) -> bool:
    if kind == "section":
        return section_exists(name, *args)
    if kind == "decision":
        return decision_exists(name, *args)
    return style_point_exists(*args)


def bad_citations(text: str) -> list[str]:
    """What does not resolve in one line: '<citation>: <why>'."""
    bad = []
    for m in DOC_CITE.finditer(text):
        name = m["name"]
        if not (DOCS / f"{name}.md").is_file():
            bad.append(f"docs/{name}.md: no such file")
            continue
        for kind, args in parse_refs(name, text[m.end():]):
            if not resolve(name, kind, args):
                shown = "".join(a for a in args if a)
                bad.append(f"docs/{name}.md {kind} {shown}: not found")
    return bad


# ---------------------------------------------------------------------------------------------------------------
# helpers: links
# ---------------------------------------------------------------------------------------------------------------
def link_targets(path: Path) -> list[tuple[int, str]]:
    """(line, target) of the inline and reference-style links of a markdown file, code excluded."""
    out = []
    for i, line in prose_lines(read_lines(path)):
        line = INLINE_CODE.sub("", line)
        out += [(i, m["target"]) for m in INLINE_LINK.finditer(line)]
        if (m := REF_LINK.match(line)) is not None:
            out.append((i, m["target"]))
    return out


def broken_links(path: Path) -> list[str]:
    bad = []
    for i, target in link_targets(path):
        if SCHEME.match(target) or target.startswith("#"):
            continue
        rel = unquote(target.split("#", 1)[0].split("?", 1)[0])
        dest = ROOT / rel.lstrip("/") if rel.startswith("/") else (ROOT / path).parent / rel
        if not dest.exists():
            bad.append(f"{path}:{i}: ({target}) -> {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
    return bad


def linked_markdown() -> list[Path]:
    return [Path(p) for p in LINKED_FILES if (ROOT / p).is_file()] + sorted(
        p.relative_to(ROOT) for p in DOCS.glob("*.md"))


# ---------------------------------------------------------------------------------------------------------------
# check 1
# ---------------------------------------------------------------------------------------------------------------
def test_no_paths_outside_the_repository():
    hits = grep(OUTSIDE, scanned_files())
    assert not hits, f"{len(hits)} line(s) point outside the repository:\n" + "\n".join(hits)


def test_no_citations_of_the_old_document_names():
    hits = grep(OLD_CITATION, scanned_files())
    assert not hits, (f"{len(hits)} line(s) cite SPEC / DATA.md / NOTEBOOKS.md / STYLE.md; cite docs/method.md, "
                      "docs/data.md, docs/notebooks.md, docs/style.md instead:\n" + "\n".join(hits))


# ---------------------------------------------------------------------------------------------------------------
# check 2
# ---------------------------------------------------------------------------------------------------------------
def test_docs_exist_and_are_indexed():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for name in DOC_NAMES:
        assert (DOCS / f"{name}.md").is_file(), f"docs/{name}.md is missing"
        assert f"({name}.md)" in index, f"docs/README.md:1: does not link {name}.md"


def test_doc_citations_resolve():
    bad = [f"{p}:{i}: {why}" for p in scanned_files() for i, line in enumerate(read_lines(p), 1)
           for why in bad_citations(line)]
    assert not bad, f"{len(bad)} citation(s) of docs/ do not resolve:\n" + "\n".join(bad)


def test_section_references_inside_each_doc_resolve():
    """A bare "§5.3" inside docs/<name>.md refers to <name>.md itself."""
    bad = []
    for name in DOC_NAMES:
        for i, line in prose_lines((DOCS / f"{name}.md").read_text(encoding="utf-8").splitlines()):
            for m in SECTION_REF.finditer(line):
                if "docs/" in line[max(0, m.start() - 40):m.start()]:
                    continue  # part of a citation of another doc, checked above
                for sec in section_range(m["sec"], m["sec_end"]):
                    if not section_exists(name, sec, m["sub"], m["item"]):
                        bad.append(f"docs/{name}.md:{i}: {m.group(0)}")
    assert not bad, f"{len(bad)} section reference(s) do not resolve:\n" + "\n".join(bad)


@pytest.mark.parametrize("text", [
    "docs/method.md §5.3", "docs/method.md §5.4.", "docs/method.md §8, §9", "docs/method.md §4 and §7",
    "docs/method.md §7-9", "docs/method.md Decision 4", "(docs/method.md §5.3 / Decision 1)",
    "docs/method.md decisions", "`docs/method.md` §14", "docs/data.md §3c", "docs/data.md §3(c): x",
    "docs/data.md §3(b)3: y", "docs/data.md §1.5", "docs/data.md Decisions", "docs/notebooks.md §5C",
    "docs/notebooks.md §11", "docs/style.md 13", "docs/style.md 12 / docs/notebooks.md", "docs/style.md 3)",
    "docs/data.md: 2 s", "https://example.org/docs/other.md", "[m](../docs/method.md)",
])
def test_resolver_accepts(text):
    assert bad_citations(text) == []


@pytest.mark.parametrize("text", [
    "docs/method.md §15", "docs/method.md §5.5", "docs/method.md §8, §16", "docs/method.md §12-15",
    "docs/method.md Decision 6", "docs/data.md §3d", "docs/data.md §3(b)5", "docs/data.md §1.6",
    "docs/notebooks.md §5D", "docs/notebooks.md §12", "docs/style.md 16", "docs/style.md §0", "docs/spec.md §1",
    "(../docs/method.md §20)",
])
def test_resolver_rejects(text):
    assert bad_citations(text), f"{text!r} should not resolve"


# ---------------------------------------------------------------------------------------------------------------
# check 3
# ---------------------------------------------------------------------------------------------------------------
def test_relative_links_exist():
    bad = [b for p in linked_markdown() for b in broken_links(p)]
    assert not bad, f"{len(bad)} broken relative link(s):\n" + "\n".join(bad)


def test_link_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a) [url](https://example.org/x.md) [anchor](#top) ![img](missing.png)\n"
                    "```\n[in code](nowhere.md)\n```\n[ref]: there.md\n")
    bad = broken_links(page)
    assert len(bad) == 1 and "missing.png" in bad[0], bad
