"""Shared test set-up. The README's test command (tools/run_tests.sh) builds Caffe first and
sets DMPN_REQUIRE_CAFFE=1: there, a pycaffe that does not import fails the tests that need it
instead of skipping them."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "alphamatting_lowres"


def require_caffe():
    try:
        import caffe
    except Exception as e:  # ImportError, or a broken build
        if os.environ.get("DMPN_REQUIRE_CAFFE") == "1":
            pytest.fail(f"pycaffe does not import: {e}")
        pytest.skip(f"pycaffe not importable: {e}")
    caffe.set_mode_cpu()
    return caffe


def identity_batchnorm(net):
    """Makes an untrained net's BatchNorm layers the identity (mean 0, variance 1). Untrained,
    their statistics are all 0 and the TEST phase divides by sqrt(eps): through SegNet's 26 of
    them the activations overflow, and AffinityExp rightly passes the NaN on to
    SparseLaplacianSolve, which stops."""
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[0].data[...] = 0
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
    return net


def tool(name):
    """A program installed by tools/setup.sh into the venv (caffe, dmpn_test)."""
    path = VENV_BIN / name
    if not path.exists():
        if os.environ.get("DMPN_REQUIRE_CAFFE") == "1":
            pytest.fail(f"{path} is missing: tools/setup.sh did not install it")
        pytest.skip(f"{path} not installed (run tools/setup.sh)")
    return str(path)


def has_gpu():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@pytest.fixture
def caffe():
    return require_caffe()


def refused(res, message, code=2):
    """A tool's subprocess result ``res``: exit status ``code`` and ``message`` in its stderr,
    one line naming the problem, not Caffe's abort or a traceback."""
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert message in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Check failed" not in res.stderr
