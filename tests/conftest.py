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


def assert_caffe_set_up_log_quiet_unless_asked(cmd):
    """A tool that loads a net (``cmd``) leaves out Caffe's net set-up log (thousands of lines
    at INFO), as predict.py does; a user's GLOG_minloglevel=0 brings it back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Creating layer" not in quiet.stderr and "Setting up" not in quiet.stderr, quiet.stderr[-2000:]
    loud = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, GLOG_minloglevel="0"))
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Creating layer" in loud.stderr and "Setting up" in loud.stderr
