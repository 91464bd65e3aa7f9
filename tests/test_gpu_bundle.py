"""tools/gpu_bundle.sh and tools/gpu_check.sh, the way to run our CUDA code on a bare GPU
machine, checked here in CPU mode: the bundle unpacks and runs from a folder of its own, and
gpu_check's gtest step passes, death tests included (they re-execute the test binary, which
once failed because the bundle put it on PATH only)."""
import os
import re
import subprocess
import tarfile

import pytest

from conftest import ROOT, tool

CUDA_TESTS = "the bundle carries a CUDA build"


def cuda_lib_dir():
    """Where this machine's build finds cuBLAS (gpu_check.sh searches the target for it)."""
    caffe_wrapper = (ROOT / ".venv" / "bin" / "caffe").read_text()
    install = re.search(r'"([^"]+)/bin/caffe"', caffe_wrapper).group(1)
    ldd = subprocess.run(["ldd", f"{install}/lib/libcaffe.so"], capture_output=True, text=True)
    hit = re.search(r"libcublas\.so\.\d+ => (\S+)", ldd.stdout)
    return os.path.dirname(hit.group(1)) if hit else None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tool("dmpn_test")
    cuda = cuda_lib_dir()
    if cuda is None:
        pytest.skip(f"CPU-only build: {CUDA_TESTS}")
    out = tmp_path_factory.mktemp("bundle")
    env = dict(os.environ, XZ_LEVEL="0", MAX_MB="1000")
    run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_bundle.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    tarball = out / "dmpn-gpu-bundle.tar.xz"
    assert tarball.is_file() and not list(out.glob(".*.tmp"))
    return tarball, cuda


def test_bundle_holds_the_binaries_and_a_python(bundle):
    tarball, _ = bundle
    with tarfile.open(tarball) as t:
        names = set(t.getnames())
    for path in ("bin/caffe", "bin/dmpn_test", "env.sh", "python/bin-python",
                 "python/site/caffe/_caffe.so", "python/site/numpy", "python/site/scipy"):
        assert f"dmpn-gpu-bundle/{path}" in names, path
    libs = {n.split("/")[-1] for n in names if n.startswith("dmpn-gpu-bundle/lib/")}
    assert any(n.startswith("libcaffe.so") for n in libs)
    assert any(n.startswith("libglog") for n in libs)
    # left to the target machine: glibc and cuBLAS (hundreds of MiB)
    assert not any(n.startswith(("libc.so", "libcublas")) for n in libs), sorted(libs)
    with tarfile.open(tarball) as t:  # which code it carries, printed by gpu_check.sh
        revision = t.extractfile("dmpn-gpu-bundle/REVISION").read().decode()
    assert revision.startswith("git: ") and "install: " in revision


def test_gpu_check_runs_the_gtest_step_from_the_bundle(bundle, tmp_path):
    tarball, cuda = bundle
    env = dict(os.environ, DRY_RUN_CPU="1", STEPS="direct tunings gtest", CUDA_LIBS=cuda,
               GTEST_FILTER="AffinityExpLayerTest/1.*:UnpoolingLayerTest/0.TestBad*",
               GPU_MULTIGRID="2,1.5,2048 3,1,0,tiled",  # (CPU cases here)
               DIRECT_FILTER="SparseLaplacianSolveLayerTest/1.TestCutOff*",
               TUNINGS_FILTER="SparseLaplacianSolveLayerTest/1.TestRegionCutOffIsAnError")
    run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tarball),
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    summary = (tmp_path / "summary.txt").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "gtest: rc=0" in summary and "[  PASSED  ] 5 tests." in summary, summary
    for name in ("direct", "tuning_2,1.5,2048", "tuning_3,1,0,tiled"):  # each step and its tests
        assert re.search(rf"^{re.escape(name)}: rc=0 in \d+ s\n\[  PASSED  \] 1 test\.$", summary, re.M), summary
    with tarfile.open(tmp_path / "logs.tar.gz") as t:
        log = t.extractfile("./gtest.log").read().decode()
    assert "[       OK ] UnpoolingLayerTest/0.TestBadMaskIsAnError" in log


def test_gpu_check_names_a_missing_bundle(tmp_path):
    missing = tmp_path / "nope.tar.xz"
    run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(missing),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert str(missing) in run.stderr


def test_gpu_check_keeps_its_deadline_and_a_relative_out(bundle, tmp_path):
    # A device command has 10 minutes: steps that cannot start within DEADLINE are skipped and
    # said so, and the summary comes back, also to a results folder given relative to the cwd.
    tarball, cuda = bundle
    env = dict(os.environ, DRY_RUN_CPU="1", STEPS="gtest time", CUDA_LIBS=cuda, DEADLINE="30")
    run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tarball), "rel"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summary = (tmp_path / "rel" / "summary.txt").read_text()
    assert "gtest: skipped" in summary and "deploy_net: skipped" in summary, run.stdout[-2000:]
    assert (tmp_path / "rel" / "logs.tar.gz").is_file()


@pytest.mark.parametrize("name, bad", [("GPU_MULTIGRID", "3,1.5,2048 2,2.5,8192"),
                                       ("PROFILE_MULTIGRID", "3,1.5,2048,tile")])
def test_gpu_check_refuses_a_bad_tuning_before_any_step(bundle, tmp_path, name, bad):
    # A tuning the CUDA layer would refuse (its CHECK stops the process) is named at once,
    # before steps whose time it would waste.
    tarball, cuda = bundle
    env = dict(os.environ, DRY_RUN_CPU="1", STEPS="parity tunings bench profile", CUDA_LIBS=cuda,
               **{name: bad})
    run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tarball), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"'{bad.split()[-1]}': want SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS" in run.stderr
    assert "=== parity" not in run.stdout


def test_gpu_check_checks_the_default_tunings_unless_told_otherwise(bundle, tmp_path):
    # Without GPU_MULTIGRID the tunings step runs the tunings worth timing beside the layer's
    # default; GPU_MULTIGRID="" runs none.
    tarball, cuda = bundle
    env = {k: v for k, v in os.environ.items() if k != "GPU_MULTIGRID"}
    env.update(DRY_RUN_CPU="1", STEPS="tunings", CUDA_LIBS=cuda,
               TUNINGS_FILTER="SparseLaplacianSolveLayerTest/1.TestRegionCutOffIsAnError")
    default = ["tuning_3-1,1.5,2048,tiled,132", "tuning_3-0,1.5,2048,tiled,132", "tuning_3,1.5,2048,tiled,132,float",
               "tuning_3-0,1.5,2048,tiled,132,float", "tuning_3-1,1.5,2048,tiled,132,float"]
    for value, steps in ((None, default), ("", [])):
        if value is not None:
            env["GPU_MULTIGRID"] = value
        run = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tarball),
                              str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
        summary = (tmp_path / "summary.txt").read_text()
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert re.findall(r"^(tuning_\S+): rc=0", summary, re.M) == steps, summary


def test_gpu_check_profiles_every_kernel_of_the_solve():
    # The profile step keeps to the solve's kernels by name (ncu's --kernel-name regex): a kernel
    # added or renamed in the .cu must be in it, or its time goes missing from the summary.
    cu = (ROOT / "cuda/src/caffe/layers/sparse_laplacian_solve_layer.cu").read_text()
    kernels = set(re.findall(r"__global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(", cu))
    assert {"TiledPreSmoothKernel", "BlockVCycle", "CholeskyInverse", "Convert"} <= kernels
    script = (ROOT / "tools/gpu_check.sh").read_text()
    regex = re.search(r"--kernel-name 'regex:([^']+)'", script).group(1)
    missing = sorted(k for k in kernels if not re.search(regex, k))
    assert not missing, f"gpu_check's profile leaves out {missing}"
