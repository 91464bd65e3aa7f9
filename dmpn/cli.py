"""What the command-line tools share (``tools/*.py`` are thin wrappers over ``dmpn`` modules):
one-line errors for a user's mistake, and argparse types that refuse bad values up front.

A tool's ``main`` runs its work through :func:`run_tool`: an expected error (bad input, a path
that cannot be read or written, Caffe refusing a file) becomes one line on stderr naming the
file or value, ``PROG: error: PATH: reason``, and a non-zero exit status; never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sys
import tempfile

__all__ = ["REPO", "DEPLOY_PROTOTXT", "InputError", "error_text", "run_tool", "USER_ERRORS", "check_writable",
           "existing_folder", "read_bytes", "positive_int", "finite_float", "positive_float", "dims", "seed", "whole_number", "SEED_LIMIT", "INTERRUPTED",
           "import_caffe_quietly", "CaffeMissing", "CAFFE_TOOL_ERRORS"]

# The repository (tools/, prototxt/ and results/ live here); dmpn is installed in develop mode.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default --net of the tools that take the paper-size net, found from any working folder.
DEPLOY_PROTOTXT = os.path.join(REPO, "prototxt", "deploy.prototxt")


class InputError(ValueError):
    """Bad input data; the message always names the offending file, folder or value. (Defined
    here, with the standard library only, so that argument checks run before the set-up has
    installed numpy: tools/main_job.sh.)"""


# The exit status of each kind of expected error, for tools with no reason to tell them apart:
# bad input (InputError is a ValueError), a file system error, Caffe refusing a file.
USER_ERRORS = ((ValueError, 2), (OSError, 2), (RuntimeError, 2))


def error_text(exc: BaseException) -> str:
    """One line for an expected error: ``PATH: reason`` for an OSError that names a path (the
    second path too, for a rename), else the first line of the message."""
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or type(exc).__name__
        if exc.filename2 is not None:
            return f"{exc.filename} -> {exc.filename2}: {reason}"
        return f"{exc.filename}: {reason}"
    lines = str(exc).strip().splitlines()
    if lines:
        return lines[0]
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__


def run_tool(prog: str, body, errors=USER_ERRORS) -> int:
    """``body()`` (returns an exit status; None means 0). An exception of a class in ``errors``
    (pairs (class, exit status), the first match counts) becomes the line ``PROG: error: ...``
    on stderr and that exit status; any other exception propagates (a bug: its traceback helps)."""
    try:
        status = body()
    except tuple(cls for cls, _ in errors) as exc:
        code = next(code for cls, code in errors if isinstance(exc, cls))
        print(f"{prog}: error: {error_text(exc)}", file=sys.stderr, flush=True)
        return code
    return 0 if status is None else status


def existing_folder(path, start) -> str:
    """The nearest existing folder at or above ``start`` (where ``path`` is to be made), or
    NotADirectoryError naming ``path`` and the file that stands where a folder is needed
    (os.makedirs would say only "File exists")."""
    base = os.path.abspath(os.fspath(start))
    while not os.path.exists(base):
        base = os.path.dirname(base)
    if not os.path.isdir(base):
        raise NotADirectoryError(errno.ENOTDIR, f"cannot be created: {base} is a file, not a folder",
                                 os.fspath(path))
    return base


def read_bytes(path, what: str) -> bytes:
    """The content of the file ``path``, or InputError naming it (``what`` says what it should
    be: "log", "weights"): a folder, missing, or unreadable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder, not a {what} file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such {what} file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def check_not_an_input(out, inputs, consequence: str) -> None:
    """InputError when ``out`` is one of ``inputs`` ((label, path) pairs), the same file or folder
    through any link or spelling: '<out>: the output is the input <label>; <consequence>: choose
    another --out'."""
    for label, path in inputs:
        if os.path.exists(out) and os.path.exists(path) and os.path.samefile(out, path):
            raise InputError(f"{out}: the output is the input {label}; {consequence}: choose "
                             "another --out")


def check_writable(path, folder: bool = True) -> None:
    """Refuse, before any long work, an output that cannot be written: OSError naming ``path``
    when it is a file where a folder is wanted (or the reverse), when a parent is a file, or
    when its nearest existing folder does not take a new entry (tried: a temporary folder is
    made and removed there, which also catches read-only and virtual file systems, and works
    for root, for whom permission bits say little)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if folder and not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", path)
        if not folder and os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
    base = existing_folder(path, path if (folder and os.path.isdir(path)) else os.path.dirname(path))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=base))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot be written: making a folder in {base} failed "
                      f"({exc.strerror or exc})", path) from None


class CaffeMissing(RuntimeError):
    """pycaffe does not import: exit status 1 in every tool (a set-up problem, not bad input)."""


# A tool's errors with the missing pycaffe first (first match counts: USER_ERRORS maps any
# RuntimeError to 2).
CAFFE_TOOL_ERRORS = ((CaffeMissing, 1),) + USER_ERRORS


def import_caffe_quietly():
    """The pycaffe module, imported without Caffe's INFO log: Caffe logs the whole net definition
    at INFO on loading a net (thousands of lines around the tools' own). glog reads
    GLOG_minloglevel when Caffe is first imported (so a user's 0 brings the log back); the
    variable is set for that import only, never for the processes this one starts later (a
    `caffe train` would log no iteration). RuntimeError when pycaffe does not import."""
    quiet = "GLOG_minloglevel" not in os.environ
    if quiet:
        os.environ["GLOG_minloglevel"] = "1"
    try:
        import caffe
    except ImportError as exc:
        raise CaffeMissing(f"pycaffe is not importable ({exc}); build it with tools/setup.sh") from None
    finally:
        if quiet:
            del os.environ["GLOG_minloglevel"]
    return caffe


# The exit status of a tool stopped with Ctrl-C (128 + SIGINT, as a shell reports it); a tool that
# lists (KeyboardInterrupt, INTERRUPTED) in run_tool's errors raises KeyboardInterrupt("what was
# kept; how to go on") from its work to say so in one line.
INTERRUPTED = 130

# Seeds are unsigned 32-bit for Caffe (set_random_seed, the solver's random_seed) and numpy.
SEED_LIMIT = 2 ** 32


# ----------------------------------------------------------------------------- argparse types
def whole_number(low: int, high: int | None = None, note: str = ""):
    """An argparse type for a whole number from ``low`` to ``high`` (None: no upper bound);
    ``note`` is added to the message, e.g. what 0 means."""
    what = f"from {low} to {high}" if high is not None else f">= {low}"

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {what}{note}, got {text!r}")
        return v
    return parse


# A random seed: 0 <= seed < 2**32 (Caffe's and numpy's range: outside it Caffe's
# set_random_seed raises OverflowError and numpy ValueError).
seed = whole_number(0, SEED_LIMIT - 1)


def positive_int(text) -> int:
    """An integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def finite_float(text) -> float:
    """A finite number (not nan or inf)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def positive_float(text) -> float:
    """A finite number > 0."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def dims(count: int, minimum: int = 1, example: str = "600x800"):
    """An argparse type for ``count`` whole numbers >= ``minimum`` joined by 'x' (or ','), such
    as HxW or NxHxW; returns a tuple."""
    pattern = r"\s*" + r"\s*[xX,]\s*".join([r"(\d+)"] * count) + r"\s*"

    def parse(text):
        m = re.fullmatch(pattern, text)
        if not m or min(int(g) for g in m.groups()) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected {count} whole numbers >= {minimum} joined by 'x', e.g. {example}; "
                f"got {text!r}")
        return tuple(int(g) for g in m.groups())
    return parse
