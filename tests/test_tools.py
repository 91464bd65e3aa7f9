"""tools/*.py run the dmpn of the checkout they are in, whichever python runs them (another
clone's venv has its own editable install of dmpn, which would otherwise win)."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")))


@pytest.mark.parametrize("tool", TOOLS, ids=os.path.basename)
def test_tool_imports_the_dmpn_beside_it(tmp_path, tool):
    (tmp_path / "tools").mkdir()
    shutil.copy(tool, tmp_path / "tools")
    # A stand-in dmpn beside the copied tool that says it was imported, and stops the tool there.
    (tmp_path / "dmpn").mkdir()
    (tmp_path / "dmpn" / "__init__.py").write_text(
        "print('dmpn beside the tool')\nraise SystemExit(0)\n")
    res = subprocess.run([sys.executable, str(tmp_path / "tools" / os.path.basename(tool))],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.stdout == "dmpn beside the tool\n", res.stderr[-2000:]
