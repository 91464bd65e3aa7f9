"""The main job end to end (README command 1 without its set-up), with a few seconds of
training: dataset, stock `caffe train`, prediction, scoring against the baselines, figures."""
import json
import re
import subprocess
import sys

from conftest import ROOT, require_caffe


def test_main_job_runs_end_to_end(tmp_path):
    require_caffe()
    out = tmp_path / "results"
    cmd = [sys.executable, "-c", "import sys; from dmpn.main_job import main; sys.exit(main())",
           "--out", str(out), "--minutes", "0.15"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"cf", "knn", "handcrafted"} <= set(metrics["methods"])
    assert len(metrics["per_image"]) == 32  # 8 held-out generated originals x 4 composites
    for name in ("loss_curve.png", "figures/sad.png", "figures/mse.png", "figures/qualitative.png",
                 "summary.md", "metrics.md"):
        assert (out / name).stat().st_size > 0, name
    assert "| handcrafted |" in (out / "summary.md").read_text()
    # Training started from the edge-aware initialisation (dmpn/edge_init.py), via -weights.
    assert "edge-aware initialisation" in res.stdout
    # The scored model is the last snapshot with its BatchNorm statistics recomputed.
    summary = (out / "summary.md").read_text()
    scored = re.search(r"weights: net/(bn_recomputed_iter_(\d+)\.caffemodel)", summary)
    assert scored and (out / "net" / scored.group(1)).exists()
    assert (out / "net" / f"snap_iter_{scored.group(2)}.caffemodel").exists()
    assert "Finetuning from " + str(out / "net" / "init_edge.caffemodel") in (out / "net" / "train.log").read_text()
    # Run again: the dataset is reused and training resumes from its last snapshot.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming training from iteration" in again.stdout
