"""Shell completion in bash, as the main help documents it: `eval "$(_LAG_EXPORTER_COMPLETE=
bash_source lag-exporter)"`, then what bash's Tab would ask for (COMP_WORDS, COMP_CWORD and the
registered completion function), in a non-interactive bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # where pip put the lag-exporter command


def complete(*words: str) -> list[str]:
    """What Tab offers after `words` (the last one being completed)."""
    quoted = " ".join(f"'{word}'" for word in words)
    program = f"""
set -e
eval "$(_LAG_EXPORTER_COMPLETE=bash_source lag-exporter)"
function=$(complete -p lag-exporter | sed -n 's/.*-F \\([^ ]*\\) lag-exporter$/\\1/p')
COMP_WORDS=({quoted})
COMP_CWORD={len(words) - 1}
"$function" lag-exporter
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    assert shutil.which("bash")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True,
                          text=True, timeout=30, check=False,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(("words", "offered"), [
    (("lag-exporter", "wa"), ["watch"]),
    (("lag-exporter", "t"), ["top"]),
    (("lag-exporter", ""), ["check-config", "snapshot", "top", "watch"]),
    (("lag-exporter", "top", "--fr"), ["--from"]),
    (("lag-exporter", "snapshot", "--format", ""), ["table", "tsv", "json"]),
])
def test_tab_completes_commands_options_and_choices(words: tuple[str, ...],
                                                    offered: list[str]) -> None:
    assert complete(*words) == offered
