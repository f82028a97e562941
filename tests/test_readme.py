"""README.md starts with the two set-up commands a newcomer runs (`make run`, `make
test`), and they are what the Makefile and CI run. (CI itself runs both, in that
order, on a fresh clone.)"""

from __future__ import annotations

import re

from conftest import REPO


def test_the_readme_starts_with_make_run_and_make_test():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-2:] == ["make run", "make test"], "CI runs the README's two commands"
