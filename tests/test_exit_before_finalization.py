"""The launch wrapper of the multi-process tests runs a script as `python SCRIPT` would and keeps its outcome."""

import subprocess
import sys

import pytest

from utils import EXIT_BEFORE_FINALIZATION

SCRIPT = """
import sys
import helper_next_to_the_script
print(__name__, sys.argv[1:], sys.argv[0].endswith("script.py"), flush=False)
ending = sys.argv[1]
if ending == "raise":
    raise ValueError("broken")
if ending != "return":
    sys.exit(int(ending) if ending.isdigit() else ending)
"""


@pytest.mark.parametrize(
    ("ending", "code", "stderr"),
    [("return", 0, ""), ("0", 0, ""), ("3", 3, ""), ("raise", 1, "ValueError: broken"), ("message", 1, "message")],
)
def test_script_outcome_is_kept(tmp_path, ending, code, stderr):
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "helper_next_to_the_script.py").write_text("")
    command = [sys.executable, EXIT_BEFORE_FINALIZATION, str(tmp_path / "script.py"), ending, "--flag"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert result.stdout == f"__main__ ['{ending}', '--flag'] True\n"  # unflushed output is not lost
    assert stderr in result.stderr
