"""Runs our C++ layer tests (gtest, BVLC's GradientChecker; cuda/src/caffe/test/) built by
tools/setup.sh as dmpn_test. Without a GPU the GPU cases are left out: the typed tests'
GPUDevice instances (indices 2 and 3 of BVLC's TestDtypesAndDevices) and fixtures named *GPU*;
the CPU/GPU parity test then says so by a skip.
"""
import fnmatch
import functools
import os
import re
import subprocess
import sys

import numpy as np
import pytest

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


@functools.lru_cache(maxsize=None)
def gtest_run():
    """The one run of dmpn_test (all that this machine can run) that the tests below read."""
    return run_gtest()


def gtest_list():
    """{fixture (with its typed instance, "UnpoolingLayerTest/1"): [test names]}, every test that
    dmpn_test holds, GPU or not."""
    out = subprocess.run([tool("dmpn_test"), "--gtest_list_tests"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tests, fixture = {}, None
    for line in out.stdout.splitlines():
        if re.match(r"^\S+\.(\s|$)", line):
            fixture = line.split(".")[0]
            tests[fixture] = []
        elif line.startswith("  ") and fixture:
            tests[fixture].append(line.split()[0])
    return tests


def left_out_here(name):
    """Whether run_gtest's filter leaves the test ``name`` ("Fixture/0.Test") out here."""
    return not has_gpu() and any(fnmatch.fnmatchcase(name, p) for p in GPU_CASES.split(":"))


def runs_here(fixture, test):
    """Whether this machine must run ``fixture`` ("UnpoolingLayerTest/2")'s ``test``: the known
    fixtures by their kind, not by GPU_CASES (a filter grown too wide would drop CPU tests from
    the run and from this check at once); others by GPU_CASES."""
    base, _, instance = fixture.partition("/")
    if base in PARITY_FIXTURES or (base in LAYER_FIXTURES and instance in ("2", "3")):
        return has_gpu()
    return base in FIXTURE_TESTS or not left_out_here(f"{fixture}.{test}")


# Each fixture's test count (cuda/src/caffe/test/): the layer fixtures' typed instances 0 and 1
# (CPU float, double), 2 and 3 (GPU); the parity fixtures' 0 and 1 (GPU float, double).
FIXTURE_TESTS = {
    "AffinityExpLayerTest": 4, "MattingLossLayerTest": 8, "SparseLaplacianSolveLayerTest": 19,
    "UnpoolingLayerTest": 7, "GridMultigridSolverTest": 3, "SparseLaplacianSolveWorkerTeamTest": 1,
    "SolveThreadCountTest": 2, "SolveThreadCountDeathTest": 1, "GpuMultigridTuningTest": 2,
    "GpuVCycleTilesTest": 4, "GpuBlockVCycleTest": 3, "GpuCgDirectionTest": 1,
    "CoarsestCholeskyTest": 1, "GpuVCycleCgTest": 1,
    "MattingLossGPUParityTest": 1, "SparseLaplacianSolveGPUParityTest": 5,
    "UnpoolingGPUParityTest": 2, "SparseLaplacianSolveTiledGPUTest": 2,
}
LAYER_FIXTURES = ("AffinityExpLayerTest", "SparseLaplacianSolveLayerTest", "UnpoolingLayerTest",
                  "MattingLossLayerTest")
PARITY_FIXTURES = ("MattingLossGPUParityTest", "SparseLaplacianSolveGPUParityTest",
                   "UnpoolingGPUParityTest", "SparseLaplacianSolveTiledGPUTest")


def test_cpp_layer_tests_pass():
    out = gtest_run()
    failed = re.findall(r"\[  FAILED  \] (\S+)", out.stdout)
    assert out.returncode == 0 and not failed, (
        f"dmpn_test failed: {sorted(set(failed))}\n" + out.stdout[-6000:] + out.stderr[-3000:])
    passed = set(re.findall(r"^\[       OK \] (\S+) \(", out.stdout, re.M))
    listed = gtest_list()
    # every fixture (each typed instance) holds at least its tests: none lost from the build
    for fixture, count in FIXTURE_TESTS.items():
        instances = [f for f in listed if f == fixture or f.startswith(fixture + "/")]
        want = 4 if fixture in LAYER_FIXTURES else 2 if fixture in PARITY_FIXTURES else None
        assert instances and (want is None or len(instances) == want), (fixture, sorted(listed))
        for f in instances:
            assert len(listed[f]) >= count, (f, listed[f])
    # and every test that this machine must run passed (the CPU instances 0 and 1 of the layer
    # fixtures, the host-side fixtures; on a GPU machine all)
    missing = [f"{f}.{t}" for f, names in listed.items() for t in names
               if runs_here(f, t) and f"{f}.{t}" not in passed]
    assert not missing, f"not run or not passed: {missing}\n" + out.stdout[-3000:]
    for layer in LAYER_FIXTURES:
        assert f"{layer}/0.TestGradient" in passed and f"{layer}/1.TestGradient" in passed  # double


def test_cpu_gpu_parity_gtests_ran():
    if not has_gpu():
        pytest.skip("no GPU: the CPU/GPU parity gtests did not run")
    out = gtest_run()
    passed = set(re.findall(r"^\[       OK \] (\S+) \(", out.stdout, re.M))
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    for fixture in PARITY_FIXTURES:
        for i in (0, 1):
            ran = [t for t in passed if t.startswith(f"{fixture}/{i}.")]
            assert len(ran) >= FIXTURE_TESTS[fixture], (fixture, i, sorted(ran))
    for layer in LAYER_FIXTURES:   # the GPU instances of the layer fixtures
        for i in (2, 3):
            ran = [t for t in passed if t.startswith(f"{layer}/{i}.")]
            assert len(ran) >= FIXTURE_TESTS[layer], (layer, i, sorted(ran))
    assert "SparseLaplacianSolveGPUParityTest/0.TestGPUMatchesCPU" in passed
    assert "SparseLaplacianSolveGPUParityTest/0.TestAffinityExpGPUMatchesCPU" in passed


def _cpu_cgroup_to_make():
    """A cgroup folder this test may make with a CPU quota (cgroup v2 with the cpu controller,
    or v1's cpu hierarchy), or None: most machines let only root make cgroups."""
    v2 = "/sys/fs/cgroup/cgroup.controllers"
    if os.path.exists(v2):
        ok = "cpu" in open(v2).read().split() and "cpu" in open(
            "/sys/fs/cgroup/cgroup.subtree_control").read().split()
        return f"/sys/fs/cgroup/dmpn-test-{os.getpid()}" if ok else None
    for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
        if os.path.exists(f"{mount}/cpu.cfs_quota_us"):
            return f"{mount}/dmpn-test-{os.getpid()}"
    return None


def test_cpu_solve_threads_keep_to_the_cgroup_cpu_quota():
    # A container's or a job's CPU limit, set on an ancestor of the process's cgroup: the worker
    # team spins, so a thread per machine CPU on half a CPU would wait on time slices
    # (SolveThreadCount; README, Performance, Threads). GLOG_v=1 logs the team's size.
    parent = _cpu_cgroup_to_make()
    if parent is None:
        pytest.skip("no cgroup CPU controller here")
    inner = os.path.join(parent, "inner")
    try:
        os.makedirs(inner)
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here ({exc.strerror})")
    try:
        try:
            if os.path.exists(os.path.join(parent, "cpu.max")):  # v2
                open(os.path.join(parent, "cpu.max"), "w").write("50000 100000")
            else:
                open(os.path.join(parent, "cpu.cfs_quota_us"), "w").write("50000")
        except OSError as exc:
            pytest.skip(f"cannot set a cgroup's CPU quota here ({exc.strerror})")
        script = (f'echo $$ > {inner}/cgroup.procs || exit 77; exec "$0" '
                  '--gtest_filter=SparseLaplacianSolveWorkerTeamTest.*')
        out = subprocess.run(["sh", "-c", script, tool("dmpn_test")], cwd=ROOT, capture_output=True,
                             text=True, timeout=600,
                             env=dict(os.environ, GLOG_v="1", GLOG_logtostderr="1", DMPN_CPU_THREADS=""))
        if out.returncode == 77:
            pytest.skip(f"cannot move a process into a cgroup here: {out.stderr.strip()}")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "the CPU solve's threads: 1 (" in out.stderr, out.stderr[-3000:]
    finally:
        os.rmdir(inner)
        os.rmdir(parent)


# A C++ layer's CHECK failure ends the process: nets expected to fail run in a child, which
# fills the named blobs from an .npz, runs forward (and backward) and says "no error".
CHILD = """
import sys, numpy as np, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TEST)
blobs = np.load(sys.argv[2])
for k in blobs.files:
    net.blobs[k].data[...] = blobs[k]
net.forward()
if sys.argv[3] == "backward":
    for k in net.outputs:
        net.blobs[k].diff[...] = 1
    net.backward()
print("no error")
"""


def cpp_net_error(tmp_path, net_text, blobs=None, backward=False):
    """The stderr of a child that loads ``net_text``, fills ``blobs`` (name -> array), runs
    forward (and backward); asserts that it failed."""
    net, data = tmp_path / "child.prototxt", tmp_path / "child.npz"
    net.write_text(net_text)
    np.savez(data, **(blobs or {}))
    out = subprocess.run([sys.executable, "-c", CHILD, str(net), str(data),
                          "backward" if backward else "forward"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0 and "no error" not in out.stdout, out.stderr[-3000:]
    return out.stderr


def input_layer(names_shapes):
    """An Input layer with the tops ``names_shapes`` [(name, shape)]."""
    tops = " ".join(f'top: "{n}"' for n, _ in names_shapes)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for _, s in names_shapes)
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


EMPTY_BATCH = {
    "AffinityExp": ([("f", (0, 3, 4, 4))], 'bottom: "f"'),
    "SparseLaplacianSolve": ([("w", (0, 2, 4, 4)), ("t", (0, 1, 4, 4))], 'bottom: "w" bottom: "t"'),
    "Unpooling": ([("v", (0, 2, 4, 4)), ("m", (0, 2, 4, 4))], 'bottom: "v" bottom: "m"'),
    "MattingLoss": ([(n, (0, c, 4, 4)) for n, c in zip("patfbi", (1, 1, 1, 3, 3, 3))],
                    " ".join(f'bottom: "{n}"' for n in "patfbi")),
}


def test_empty_batch_is_an_error_naming_the_layer(caffe, tmp_path):
    # Before, a bare "Check failed: data_" in blob.cpp, from either flavour.
    modules = {"AffinityExp": "affinity_exp", "SparseLaplacianSolve": "sparse_laplacian_solve",
               "Unpooling": "unpooling", "MattingLoss": "matting_loss"}
    for kind, (shapes, bottoms) in EMPTY_BATCH.items():
        err = cpp_net_error(tmp_path, input_layer(shapes) + f'layer {{ name: "empty" type: "{kind}" '
                            f'{bottoms} top: "out" }}\n')
        name, shape = shapes[0]
        assert (f"{kind} layer 'empty': bottom[0] ('{name}') is empty "
                f"({' '.join(map(str, shape))} (0)): a batch needs at least one item") in err, \
            err[-2000:]
        path = tmp_path / "empty_py.prototxt"
        path.write_text(input_layer(shapes) + f'layer {{ name: "empty" type: "Python" {bottoms} '
                        f'top: "out" python_param {{ module: "dmpn.layers.{modules[kind]}" '
                        f'layer: "{kind}Layer" }} }}\n')
        msg = (f"{kind} Python layer: bottom[0] is empty ({' x '.join(map(str, shape))}): a batch "
               "needs at least one item")
        with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
            caffe.Net(str(path), caffe.TEST)
