"""Runs our C++ layer tests (gtest, BVLC's GradientChecker; cuda/src/caffe/test/) built by
tools/setup.sh as dmpn_test. Without a GPU the GPU cases are left out: the typed tests'
GPUDevice instances (indices 2 and 3 of BVLC's TestDtypesAndDevices) and fixtures named *GPU*.
"""
import re
import subprocess

from conftest import ROOT, has_gpu, tool

GPU_CASES = "*/2.*:*/3.*:*GPU*"


def run_gtest(extra_filter=None):
    args = [tool("dmpn_test")]
    filters = []
    if extra_filter:
        filters.append(extra_filter)
    if not has_gpu():
        filters.append("-" + GPU_CASES)
    if filters:
        args.append("--gtest_filter=" + ":".join(filters).replace(":-", "-"))
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def test_cpp_layer_tests_pass():
    out = run_gtest()
    failed = re.findall(r"\[  FAILED  \] (\S+)", out.stdout)
    assert out.returncode == 0 and not failed, (
        f"dmpn_test failed: {sorted(set(failed))}\n" + out.stdout[-6000:] + out.stderr[-3000:])
    ran = re.search(r"\[==========\] (\d+) tests? from \d+ test cases? ran", out.stdout)
    assert ran and int(ran.group(1)) >= 40, out.stdout[-3000:]
    for layer in ("AffinityExpLayerTest", "SparseLaplacianSolveLayerTest", "UnpoolingLayerTest",
                  "MattingLossLayerTest"):
        assert f"[       OK ] {layer}/0.TestGradient" in out.stdout
        assert f"[       OK ] {layer}/1.TestGradient" in out.stdout  # double precision
