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
    resumed = re.search(r"resuming training from iteration (\d+)", again.stdout)
    assert resumed, again.stdout[-3000:]
    # Caffe itself restored the solver state (not a fresh start from the fillers) ...
    train_log = (out / "net" / "train.log").read_text()
    assert f"Resuming from {out / 'net'}/snap_iter_{resumed.group(1)}.solverstate" in train_log
    # ... and the rerun scored a later snapshot.
    rescored = re.search(r"weights: net/bn_recomputed_iter_(\d+)", (out / "summary.md").read_text())
    assert int(rescored.group(1)) > int(resumed.group(1)) >= int(scored.group(2))


def test_verdict_compares_ours_with_the_handcrafted_baseline():
    from dmpn.main_job import verdict

    def metrics(ours_sad, ours_mse):
        mean = lambda sad, mse: {"sad": sad, "mse": mse, "grad": 1.0, "conn": 1.0}  # noqa: E731
        return {"methods": {"cf": {"mean": mean(0.2, 0.005)}, "handcrafted": {"mean": mean(1.8, 0.067)},
                            "model": {"mean": mean(ours_sad, ours_mse)}}}
    table, beat, ours = verdict(metrics(1.3, 0.050))
    assert (beat, ours) == (True, "model") and "| model | 1.300 | 50.000 |" in table
    assert verdict(metrics(1.3, 0.070))[1] is False  # better SAD, worse MSE: not both
    assert verdict(metrics(1.9, 0.050))[1] is False


def test_snapshots_are_not_resumed_on_other_data(tmp_path):
    """results/data deleted and rebuilt from other originals: the snapshots in results/net were
    trained on the old data, so the rerun stops with the reason instead of resuming them."""
    import pytest
    from dmpn.main_job import TRAINED_ON, check_trained_on
    netdir, data = tmp_path / "net", tmp_path / "data"
    synthetic = {"fingerprint": "a" * 64, "originals": {"input": {"source": "synthetic (dmpn.synth)"}}}
    real = {"fingerprint": "b" * 64, "originals": {"input": {"source": "/data/alphamatting"}}}
    check_trained_on(str(netdir), str(data), synthetic, data_built_now=True)  # fresh: recorded
    assert json.loads((netdir / TRAINED_ON).read_text())["data_fingerprint"] == "a" * 64
    (netdir / "snap_iter_100.solverstate").write_bytes(b"")
    check_trained_on(str(netdir), str(data), synthetic, data_built_now=True)  # same data: resume
    with pytest.raises(SystemExit, match=r"net: its snapshots were trained on another dataset.*"
                                         r"/data/alphamatting.*delete .*net to train afresh"):
        check_trained_on(str(netdir), str(data), real, data_built_now=True)
    # snapshots from before the record: fine on the data they were trained on (not rebuilt) ...
    (netdir / TRAINED_ON).unlink()
    check_trained_on(str(netdir), str(data), real, data_built_now=False)
    assert json.loads((netdir / TRAINED_ON).read_text())["data_fingerprint"] == "b" * 64
    # ... but not on a dataset built anew
    (netdir / TRAINED_ON).unlink()
    with pytest.raises(SystemExit, match="no record of the data they were trained on"):
        check_trained_on(str(netdir), str(data), real, data_built_now=True)


def test_time_and_length_must_be_positive_numbers(tmp_path, capsys):
    import pytest
    from dmpn.main_job import main
    for option, value in (("--minutes", "nan"), ("--minutes", "0"), ("--epochs", "inf")):
        with pytest.raises(SystemExit) as exc:
            main(["--out", str(tmp_path / "results"), option, value])
        assert exc.value.code == 2 and option in capsys.readouterr().err
