"""The project documents itself: every link in the README and docs resolves inside the repository, and no
document points at a path outside it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_refers_to_the_shared_folder(doc):
    text = doc.read_text(encoding="utf-8")
    assert not re.search(r"\.\./shared|shared/spec|PEERS\.md|ETC\.md", text), \
        f"{doc.name} refers to files a user of the package does not have"


def test_user_facing_messages_do_not_cite_the_spec():
    src = ROOT / "src" / "etcdiff"
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in src.rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if '"""' not in line and re.search(r"""["'][^"']*\b(the spec|PEERS\.md|ETC\.md)""", line)
    ]
    assert not offenders, "messages that cite a document users do not have: " + ", ".join(offenders)


def test_no_source_file_cites_a_document_outside_the_repository():
    src = ROOT / "src" / "etcdiff"
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in [*src.rglob("*.py"), *src.rglob("*.txt")]
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"PEERS(-2026)?\.md|ETC\.md|\.\./shared|shared/spec|\bspec ``", line)
    ]
    assert not offenders, "docstrings or comments that cite files users do not have: " + ", ".join(offenders)
