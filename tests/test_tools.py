"""tools/*.py started by any python3 (dmpn/venv.py): they re-run themselves under the repository's
.venv, or say in one line that the set-up has to run first."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

TOOLS = sorted(p.name for p in (ROOT / "tools").glob("*.py"))
# A python3 outside the venv: the system's (without numpy, as a user's PATH finds it), else the
# interpreter the venv was made from.
SYSTEM_PYTHON = next(p for p in ("/usr/bin/python3", os.path.realpath(sys.executable)) if os.path.exists(p))
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}


def test_the_system_python_is_not_the_venv():
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                         text=True, env=CLEAN_ENV).stdout.strip()
    assert not os.path.samefile(out, ROOT / ".venv")


@pytest.mark.parametrize("tool", TOOLS)
def test_help_works_from_any_python3(tool, tmp_path):
    if not (ROOT / ".venv/bin/python").exists():
        pytest.skip("no .venv (run tools/setup.sh)")
    res = subprocess.run([SYSTEM_PYTHON, str(ROOT / "tools" / tool), "--help"], capture_output=True,
                         text=True, env=CLEAN_ENV, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"usage: {tool}" in res.stdout and "Traceback" not in res.stderr


def test_a_link_to_a_tool_runs_it(tmp_path):
    """A symbolic link to a tool (in a folder on PATH, say) finds the repository the tool is in."""
    if not (ROOT / ".venv/bin/python").exists():
        pytest.skip("no .venv (run tools/setup.sh)")
    link = tmp_path / "make_prototxt"
    os.symlink(ROOT / "tools" / "make_prototxt.py", link)
    res = subprocess.run([SYSTEM_PYTHON, str(link), "--help"], capture_output=True, text=True,
                         env=CLEAN_ENV, cwd=tmp_path)
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("tool", ["init_edge_aware.py", "recompute_bn.py", "predict.py"])
def test_a_missing_pycaffe_is_one_line_and_exit_1(tool, tmp_path):
    """A pycaffe that does not import is a set-up problem: every tool says so in one line and
    exits 1 (init_edge_aware and recompute_bn had exited 2, as for bad input)."""
    fake = tmp_path / "caffe"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('a broken build')\n")
    (tmp_path / "net.prototxt").write_text('name: "n"\n')
    (tmp_path / "w.caffemodel").write_bytes(b"")
    args = {"init_edge_aware.py": ["--net", "net.prototxt", "--out", "o.caffemodel"],
            "recompute_bn.py": ["--net", "net.prototxt", "--weights", "w.caffemodel", "--out", "o.caffemodel"],
            "predict.py": ["--model", "net.prototxt", "--weights", "w.caffemodel", "--image", "i.png",
                           "--trimap", "t.png", "--out", "o.png"]}[tool]
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools" / tool), *args],
                         capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert "pycaffe is not importable (a broken build)" in res.stderr, res.stderr[-2000:]
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, \
        res.stderr[-2000:]


def fake_repo(tmp_path, tool="predict.py"):
    """A copy of ``tool`` and dmpn/ in a repository root without .venv."""
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / tool, tmp_path / "tools" / tool)
    shutil.copytree(ROOT / "dmpn", tmp_path / "dmpn", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "tools" / tool


def test_without_the_venv_one_line_says_to_run_the_set_up(tmp_path):
    """-S: no site-packages, so numpy is missing even where the system's python3 has it."""
    tool = fake_repo(tmp_path)
    res = subprocess.run([SYSTEM_PYTHON, "-S", str(tool), "--help"], capture_output=True, text=True,
                         env=CLEAN_ENV)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "bash tools/setup.sh" in res.stderr and str(tmp_path / ".venv/bin/python") in res.stderr


def test_a_broken_venv_is_not_re_executed_forever(tmp_path):
    """A .venv/bin/python that does not run as the venv (no pyvenv.cfg): one re-execution, then
    the message."""
    tool = fake_repo(tmp_path)
    (tmp_path / ".venv/bin").mkdir(parents=True)
    os.symlink(SYSTEM_PYTHON, tmp_path / ".venv/bin/python")
    res = subprocess.run([SYSTEM_PYTHON, str(tool), "--help"], capture_output=True, text=True,
                         env=CLEAN_ENV, timeout=60)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "does not run as the venv" in res.stderr and "bash tools/setup.sh" in res.stderr


def test_the_interpreter_named_by_dmpn_python_is_kept(tmp_path):
    """The GPU bundle runs the tools with its own Python (DMPN_PYTHON, tools/gpu_bundle.sh),
    where the repository has no .venv."""
    tool = fake_repo(tmp_path)
    python = ROOT / ".venv/bin/python"
    res = subprocess.run([str(python), str(tool), "--help"], capture_output=True, text=True,
                         env=dict(CLEAN_ENV, DMPN_PYTHON=str(python)))
    assert res.returncode == 0 and "usage: predict.py" in res.stdout, res.stderr[-2000:]


def test_without_the_venv_an_environment_with_the_packages_is_used(tmp_path):
    """A user's own environment (here the venv's interpreter running another repository's tool,
    which has no .venv) with numpy: the tool runs in it."""
    tool = fake_repo(tmp_path)
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(tool), "--help"], capture_output=True,
                         text=True, env=CLEAN_ENV)
    assert res.returncode == 0 and "usage: predict.py" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("tool", ["predict.py", "evaluate.py", "recompute_bn.py", "make_lmdb.py"])
def test_every_long_running_tool_has_no_progress_with_the_same_help(tool):
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools" / tool), "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    words = " ".join(res.stdout.split())
    assert "--no-progress no progress bar" in words, words
