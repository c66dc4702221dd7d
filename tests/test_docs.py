"""The docs cannot drift from the results: every table of numbers in README.md and docs/ is what
benchmarks/tables.py renders from the committed results files, and the README stays short."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import tables  # noqa: E402


def test_every_table_in_the_docs_is_what_its_results_file_renders():
    assert tables.run(check=True) == []


def test_the_check_catches_a_number_typed_by_hand_and_an_unknown_table(tmp_path):
    for page in tables.pages():
        dest = tmp_path / page.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, dest)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    block = tables.BLOCK.search(text)
    assert block is not None, "the README shows no rendered table"
    digit = next(i for i in range(block.start("body"), block.end("body")) if text[i].isdigit())
    tampered = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:]
    readme.write_text(tampered + "\n<!-- table no.such: x -->\n| 1 |\n<!-- end no.such -->\n")
    problems = tables.run(check=True, root=tmp_path)
    assert any(f"table {block['name']} differs" in p for p in problems), problems
    assert any("unknown table no.such" in p for p in problems), problems
    tables.run(check=False, root=tmp_path)  # re-rendering repairs the number (the unknown block stays)
    assert [p for p in tables.run(check=True, root=tmp_path) if "differs" in p] == []


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250
