"""The benchmark's contrast sweep (dmpn/bench.py): it must report what the C++ layer did, a
converged solve with its iterations and alpha, and a solve that stopped with its residual."""
import json
import os

import numpy as np
import pytest

from conftest import require_caffe
from dmpn import bench
from dmpn import caffe_checks as C
from dmpn import propagation as P


def test_contrast_problem_clips_at_the_bound():
    aff, tri = bench.contrast_problem(24, 32, spread=30, bound=10, field="smooth")
    inside = aff[P.edge_mask(24, 32) > 0]
    assert np.isclose(np.log(inside).max(), 10, atol=1e-5) and np.isclose(np.log(inside).min(), -10, atol=1e-5)
    assert set(np.unique(tri)) == {0.0, 0.5, 1.0}


def test_cpp_forward_stats_reports_convergence_and_non_convergence():
    require_caffe()
    aff, tri = bench.contrast_problem(24, 32, spread=4, bound=10)
    ok = bench.cpp_forward_stats(aff, tri)
    assert ok["converged"] and ok["iterations"] > 1 and ok["relative_residual"] <= 1e-8
    np.testing.assert_allclose(ok["alpha"], P.solve_alpha(aff, tri), atol=1e-6)
    stopped = bench.cpp_forward_stats(aff, tri, max_iterations=1)
    assert not stopped["converged"] and stopped["alpha"] is None
    assert stopped["iterations"] == 1 and stopped["relative_residual"] > 1e-8


@pytest.mark.parametrize("argv", [["--size", "600by800"], ["--repeats", "0"], ["--batch", "4x320"],
                                  ["--contrast-size", "x"],
                                  # grids too small for the benchmark's problems (tracebacks before)
                                  ["--size", "8x8"], ["--size", "15x600"], ["--contrast-size", "1x1"],
                                  ["--size", "16x16"],  # its image problem has no foreground
                                  ["--contrast-size", "4x4"], ["--batch", "2x3x3"],
                                  ["--contrast-size", "5x400"]])
def test_bad_arguments_are_refused_by_argparse(argv, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")  # main sets it; undone after the test
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_json_written_atomically_and_checked_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLOG_minloglevel", "2")  # main sets it; undone after the test
    rows = [{"problem": "random", "shape": "1x32x32", "scipy_splu_s": 0.5}]
    seen = {}

    def fake_run(size, batch, repeats, gpu, python_layer, gpu_multigrid=()):
        seen.update(size=size, batch=batch, repeats=repeats)
        return rows
    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "format_rows", lambda r: "table")
    out = tmp_path / "b.json"
    assert bench.main(["--size", "48x64", "--batch", "2x32x32", "--repeats", "2", "--json", str(out)]) == 0
    assert seen == {"size": (48, 64), "batch": (2, 32, 32), "repeats": 2}
    assert json.loads(out.read_text()) == rows and os.listdir(tmp_path) == ["b.json"]
    # a --json that cannot be written is refused before the (long) run
    seen.clear()
    assert bench.main(["--json", str(tmp_path)]) == 2
    assert f"bench_propagation: error: {tmp_path}: is a folder" in capsys.readouterr().err and not seen


@pytest.mark.parametrize("spec", ["2,1", "0,1,8192", "9,1,8192", "2,2,8192", "2,0,8192", "2,1,-1",
                                  "2,1.5,2048,1", "two,1,8192", "2,1e0,8192", "2,1,8192\n",
                                  "2,.5,2048", " 2,1,2048", "2,1,1000000000", "2,1,\u0663",
                                  "2,1,2048,", "2,1,2048,Tiled", "2,1,2048,tiled,", "2,1,tiled",
                                  "2,1,2048 tiled", "2,1,2048,132", "2,1,2048,tiled,x",
                                  "2,1,2048,tiled,-1", "2,1,2048,tiled,1000000000",
                                  "2,1,2048,tiled,1,2", "2,1,2048,tiled132", "2,1,2048,float,tiled",
                                  "2,1,2048,float,", "2,1,2048,Float", "2,1,2048,float32",
                                  "2,1,2048,tiled,float,132", "2,1,2048,,float", "3/,1,2048",
                                  "3/9,1,2048", "3/1/1,1,2048", "3,1/1,2048", "0/1,1,2048",
                                  "3/-1,1,2048", "/1,1,2048"])
def test_bad_gpu_multigrid_specs_are_refused(spec, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--gpu", "--gpu-multigrid", spec])
    assert exc.value.code == 2 and repr(spec) in capsys.readouterr().err


def test_gpu_multigrid_needs_gpu_and_reaches_run(capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--gpu-multigrid", "2,1.5,2048"])
    assert exc.value.code == 2 and "needs --gpu" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(C, "gpu_count", lambda: (1, None))  # whether this machine has one or not
    monkeypatch.setattr(bench, "run", lambda *a, **kw: seen.update(kw) or [])
    monkeypatch.setattr(bench, "format_rows", lambda r: "table")
    specs = ["2,1.5,2048", "3,1,0", "3,1.5,2048,tiled", "4,1.5,2048,tiled,132", "3,1.5,2048,float",
             "3,1.5,2048,tiled,132,float", "3/0,1.5,2048,tiled,132", "3/1,1,0"]
    assert bench.main(["--gpu", "--gpu-multigrid", *specs]) == 0
    assert list(seen["gpu_multigrid"]) == specs


def test_environment_sets_and_restores(monkeypatch):
    monkeypatch.setenv(bench.CUDA_GRAPHS, "0")
    monkeypatch.delenv(bench.GPU_MULTIGRID, raising=False)
    with pytest.raises(RuntimeError):
        with bench.environment({bench.CUDA_GRAPHS: "1", bench.GPU_MULTIGRID: "2,1,8192"}):
            assert os.environ[bench.CUDA_GRAPHS] == "1" and os.environ[bench.GPU_MULTIGRID] == "2,1,8192"
            raise RuntimeError("the block failed")
    assert os.environ[bench.CUDA_GRAPHS] == "0" and bench.GPU_MULTIGRID not in os.environ


def test_format_rows_lists_every_timed_layer():
    row = {"problem": "image", "shape": "1x600x800", "scipy_splu_s": 6.0}
    for k, t in (("cpp", 0.1), ("cpp_gpu", 0.02), ("cpp_gpu_graphs[2,1.5,2048]", 0.01)):
        row.update({f"{k}_s": t, f"{k}_speedup_vs_splu": 6.0 / t, f"{k}_max_alpha_err": 1e-6,
                    f"{k}_max_grad_rel_err": 1e-7})
    lines = bench.format_rows([row]).splitlines()
    assert len(lines) == 4 and "6000.0 ms" in lines[0]
    assert "cpp_gpu_graphs[2,1.5,2048] layer fwd+bwd      10.0 ms  x 600.0 vs splu" in lines[3]


def test_profile_once_runs_one_gpu_pass_of_the_size_asked(monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")
    monkeypatch.setattr(C, "gpu_count", lambda: (1, None))  # whether this machine has one or not
    seen = {}
    monkeypatch.setattr(bench, "caffe_layer_net", lambda flavour, n, h, w: seen.update(net=(flavour, n, h, w)) or "net")
    monkeypatch.setattr(bench, "time_net", lambda net, affs, tris, tops, repeats, gpu=False: seen.update(
        shapes=(affs.shape, tris.shape, tops.shape), repeats=repeats, gpu=gpu))
    assert bench.main(["--profile-once", "--size", "48x64"]) == 0
    assert seen == {"net": ("cpp", 1, 48, 64), "shapes": ((1, 2, 48, 64), (1, 1, 48, 64), (1, 1, 48, 64)),
                    "repeats": 1, "gpu": True}


# An excerpt of gpu_check.sh's profile log from an H100 (ncu 2025, CUDA 13): one kernel in two
# launch configurations, a templated one, the metric in two units, and lines that are not kernels.
NCU_LOG = """==PROF== Profiling "TiledPreSmoothKernel": 0%....50%....100% - 1 pass
  unnamed>::BlockVCycle(const unnamed>::GpuLevel *, int, int, int, double, double, const double *, const double *, double *) (1, 1, 1)x(1024, 1, 1), Device 0, CC 9.0, Invocations 44
    Section: Command line profiler metrics
    ---------------------- ----------- ------- ------- -------
    Metric Name            Metric Unit Minimum Maximum Average
    ---------------------- ----------- ------- ------- -------
    gpu__time_duration.sum          us   38.21   41.90   39.80
    ---------------------- ----------- ------- ------- -------

  unnamed>::TiledPreSmoothKernel(int, int, int, int, int, double, const double *, const double *, const double *, const double *, double *, int, double *) (7, 10, 1)x(512, 1, 1), Device 0, CC 9.0, Invocations 44
    Section: Command line profiler metrics
    gpu__time_duration.sum          us    9.50   10.50   10.00
  unnamed>::TiledPreSmoothKernel(int, int, int, int, int, double, const double *, const double *, const double *, const double *, double *, int, double *) (13, 19, 1)x(512, 1, 1), Device 0, CC 9.0, Invocations 132
    Section: Command line profiler metrics
    gpu__time_duration.sum          ms    0.01    0.02    0.015
  void unnamed>::Upsample<float>(int, int, int, int, int, const double *, T1 *) (938, 1, 1)x(512, 1, 1), Device 0, CC 9.0, Invocations 1
    Section: Command line profiler metrics
    gpu__time_duration.sum     nsecond    6370    6370    6370
"""


def test_ncu_kernel_times_sums_each_kernel_over_its_launch_configurations():
    rows = bench.ncu_kernel_times(NCU_LOG)
    assert [(name, n) for name, n, _ in rows] == [("TiledPreSmoothKernel", 176), ("BlockVCycle", 44),
                                                  ("Upsample", 1)]
    us = {name: t for name, _, t in rows}
    assert us["TiledPreSmoothKernel"] == pytest.approx(44 * 10.0 + 132 * 15.0)
    assert us["BlockVCycle"] == pytest.approx(44 * 39.8)
    assert us["Upsample"] == pytest.approx(6.37)
    table = bench.format_kernel_times(rows).splitlines()
    assert table[1].split() == ["TiledPreSmoothKernel", "176", "2.420", "57.9%"]
    assert table[-1].split() == ["all", "221", "4.178", "100.0%"]


def test_ncu_summary_tool_prints_the_table_and_names_a_log_without_kernels(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GLOG_minloglevel", "2")  # main() sets it: not for the tests after this one
    log = tmp_path / "profile.log"
    log.write_text(NCU_LOG)
    assert bench.main(["--ncu-summary", str(log)]) == 0
    assert "TiledPreSmoothKernel" in capsys.readouterr().out
    log.write_text("==PROF== Disconnected\n")
    assert bench.main(["--ncu-summary", str(log)]) == 2
    assert f"bench_propagation: error: {log}: no kernel with gpu__time_duration" in capsys.readouterr().err
    assert bench.main(["--ncu-summary", str(tmp_path / "missing.log")]) == 2
    assert "missing.log: no such ncu log file" in capsys.readouterr().err
    log.write_text(NCU_LOG.replace("us   38.21", "weeks   38.21"))
    assert bench.main(["--ncu-summary", str(log)]) == 2
    assert "unknown time unit 'weeks'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [(["--gpu", "--no-python"], "--gpu"),
                                         (["--profile-once"], "--profile-once")])
def test_gpu_runs_without_a_gpu_are_refused_in_one_line_before_the_work(argv, named, capsys, monkeypatch):
    """Caffe's set_mode_gpu aborted the process with a stack dump (after minutes of CPU rows)."""
    monkeypatch.setenv("GLOG_minloglevel", "2")
    monkeypatch.setattr(C, "gpu_count", lambda: (0, "no NVIDIA driver"))
    seen = []
    monkeypatch.setattr(bench, "run", lambda *a, **kw: seen.append("run") or [])
    monkeypatch.setattr(bench, "time_net", lambda *a, **kw: seen.append("time_net"))
    assert bench.main(argv + ["--size", "48x64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bench_propagation: error: {named}: this machine has no GPU that Caffe can use "
                   f"(no NVIDIA driver){'; leave out --gpu to run on the CPU' if named == '--gpu' else ''}"]
    assert not seen
    # the contrast sweep never uses the GPU: --gpu beside it is no reason to refuse
    monkeypatch.setattr(bench, "contrast_sweep", lambda size: seen.append("sweep") or [])
    assert bench.main(["--contrast", "--gpu"]) == 0 and seen == ["sweep"]


def test_gpu_bench_on_this_machine_exits_cleanly_without_its_gpu(tmp_path):
    """The tool itself, where pycaffe sees no GPU: exit status 2 and one line, no Caffe abort."""
    import subprocess
    import sys

    from conftest import ROOT
    require_caffe()
    if C.gpu_count()[0]:
        pytest.skip("this machine has a GPU")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_propagation.py"), "--profile-once",
                          "--size", "48x64"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.startswith("bench_propagation: error: --profile-once: this machine has no GPU")
    assert "Check failed" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_image_problem_trimap_is_evaluates_reading():
    """The 0 / 0.5 / 1 trimap of the image problem: dmpn.evaluate.trimap_to_01, not a copy."""
    from dmpn import evaluate
    from dmpn.synth import make_original
    assert bench.trimap_to_01 is evaluate.trimap_to_01
    _, t = bench.image_problem(32, 40, seed=3)
    np.testing.assert_array_equal(t, evaluate.trimap_to_01(make_original(3, 0, (32, 40), kind="hair").trimap))
