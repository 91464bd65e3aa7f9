"""Runs a tool under the repository's virtual environment whatever python3 started it.

``tools/*.py`` are ``#!/usr/bin/env python3`` scripts: the python3 found first on PATH has none
of the venv's packages (numpy, pycaffe), and a tool would stop with a traceback even for
--help. Each tool calls :func:`use_repository_venv` before importing its dmpn module. Standard
library only (imported before the venv's packages are reachable), as is ``dmpn/__init__.py``.
"""
import importlib.util
import os
import sys

# Set in the environment of the re-executed tool, so that a venv whose interpreter does not
# report itself as the venv (a broken .venv) stops with a message instead of re-executing forever.
REEXEC_MARK = "DMPN_VENV_REEXEC"


def _same_path(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def use_repository_venv(repo: str) -> None:
    """Returns when this process runs under ``repo``/.venv's interpreter (sys.prefix is the venv:
    its bin/python is a link to the system interpreter, so the executable's real path cannot tell
    them apart), or under the interpreter named by DMPN_PYTHON (the GPU bundle's own Python,
    tools/gpu_bundle.sh). Otherwise re-executes the same tool and arguments with the venv's
    python. Without a venv it goes on where this interpreter has numpy (an environment of the
    user's own) and otherwise prints one line saying to run the set-up and exits 1."""
    venv = os.path.join(repo, ".venv")
    python = os.path.join(venv, "bin", "python")
    reexecuted = os.environ.pop(REEXEC_MARK, None) is not None  # not for this tool's children
    if _same_path(sys.prefix, venv):
        return
    chosen = os.environ.get("DMPN_PYTHON")
    if chosen and _same_path(chosen, sys.executable):
        return
    tool = os.path.basename(sys.argv[0])
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        if importlib.util.find_spec("numpy") is not None:
            return  # no venv here, but an environment of the user's own with the packages
        print(f"{tool}: error: {python}: no such interpreter; run `bash tools/setup.sh` first "
              "(it makes the venv with the tools' packages)", file=sys.stderr)
        sys.exit(1)
    if reexecuted:
        print(f"{tool}: error: {python} does not run as the venv {venv} (sys.prefix "
              f"{sys.prefix}); run `bash tools/setup.sh` again", file=sys.stderr)
        sys.exit(1)
    os.environ[REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, os.path.abspath(sys.argv[0]), *sys.argv[1:]])
