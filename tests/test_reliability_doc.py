"""RELIABILITY.md is a table of promises, each naming the tests that prove it by file
and full name: every named test exists (a `def test_…` in the pytest file, an `fn` in
the Rust file), and no promise names none."""

from __future__ import annotations

import re

from conftest import REPO

DOC = REPO / "RELIABILITY.md"


def promises() -> list[list[str]]:
    """The cells of each row of the "Promises" table."""
    section = DOC.read_text().split("\n## Promises\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, rule, *body = rows
    assert header.startswith("| promise | holds when | not guaranteed | proven by |"), header
    return [[cell.strip() for cell in row.strip()[1:-1].split("|")] for row in body]


def test_every_promise_names_tests_that_exist():
    rows = promises()
    assert len(rows) >= 20, len(rows)
    for cells in rows:
        assert len(cells) == 4, cells
        promise, holds, _, proof = cells
        assert holds, f"a promise without its conditions: {promise}"
        named = re.findall(r"`([\w./-]+)::(\w+)`", proof)
        assert named, f"a promise no test proves: {promise}"
        assert len(named) == proof.count("::"), f"a test named in another form: {proof}"
        for path, name in named:
            file = REPO / path
            assert file.is_file(), f"{path} does not exist ({promise})"
            # A pytest test, or a Rust function marked as a test (#[test], #[tokio::test(..)]).
            pattern = (rf"^def {name}\(" if path.endswith(".py")
                       else rf"#\[(?:tokio::)?test[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*(?:pub )?(?:async )?fn {name}\(")
            assert re.search(pattern, file.read_text(), re.M), f"{path} has no test {name} ({promise})"
