"""The benchmark's contrast sweep (dmpn/bench.py): it must report what the C++ layer did, a
converged solve with its iterations and alpha, and a solve that stopped with its residual."""
import numpy as np

from conftest import require_caffe
from dmpn import bench
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
