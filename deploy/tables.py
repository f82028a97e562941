"""Writes the Glue tables of deploy/cloudformation/appflow-export.yaml again from the
code: the lines between its `# BEGIN appflow-export schema ...` and `# END` markers
become what the BEGIN line's command prints, run by the command given (the binary, or
how to run it). `make templates` runs it; tests/test_deploy.py fails when the
template and the command differ.

    python3 deploy/tables.py cargo run -q -p appflow-export --
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).parent / "cloudformation" / "appflow-export.yaml"
BLOCK = re.compile(r"(?P<begin>  # BEGIN (?P<command>appflow-export schema [^\n]*)\n)(?P<body>.*?)(?P<end>  # END [^\n]*\n)", re.S)


def main(program: list[str]) -> None:
    text = TEMPLATE.read_text()
    block = BLOCK.search(text)
    if block is None:
        sys.exit(f"{TEMPLATE}: no BEGIN/END markers")
    args = shlex.split(block["command"])[1:]
    tables = subprocess.run([*program, *args], check=True, capture_output=True, text=True).stdout
    TEMPLATE.write_text(text[:block.start("body")] + tables + text[block.end("body"):])


if __name__ == "__main__":
    main(sys.argv[1:] or ["cargo", "run", "-q", "-p", "appflow-export", "--"])
