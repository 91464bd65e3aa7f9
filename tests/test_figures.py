"""dmpn.figures: figures written atomically, scores from MethodResult, missing scores marked."""
import math

import numpy as np
import pytest

from dmpn import figures as F
from dmpn.evaluate import MethodResult


def scores(sad):
    return {"sad": sad, "mse": sad / 1000, "grad": sad, "conn": sad}


def drawn(monkeypatch):
    """The figures bar_chart draws, kept open (instead of saved)."""
    figs = []
    monkeypatch.setattr(F, "_save", lambda fig, path: figs.append(fig))
    monkeypatch.setattr(F._plt(), "close", lambda fig: None)
    return figs


def test_failed_figure_leaves_no_temporary_file(tmp_path):
    """savefig failing (a full disk, a backend error) left '.NAME.tmp.png' behind."""
    plt = F._plt()
    fig = plt.figure()

    def broken(path, **kw):
        with open(path, "wb") as f:
            f.write(b"half a PNG")
        raise OSError(28, "No space left on device")
    fig.savefig = broken
    with pytest.raises(OSError, match="No space left on device"):
        F._save(fig, tmp_path / "figs" / "sad.png")
    plt.close(fig)
    assert list((tmp_path / "figs").iterdir()) == []
    fig = plt.figure()
    F._save(fig, tmp_path / "figs" / "sad.png")
    plt.close(fig)
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["sad.png"]
    assert (tmp_path / "figs" / "sad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bar_chart_takes_mean_and_std_from_the_results(monkeypatch):
    """The mean and standard deviation are MethodResult's (one formula: evaluate's)."""
    calls = []

    class Spy(MethodResult):
        def mean(self):
            calls.append("mean")
            return super().mean()

        def std(self):
            calls.append("std")
            return super().std()
    figs = drawn(monkeypatch)
    r = Spy("ours", per_image={"a": scores(2.0), "b": scores(4.0), "c": scores(float("nan"))})
    F.bar_chart([r], "sad", "unused.png")
    assert sorted(calls) == ["mean", "std"]
    ax1 = figs[0].axes[0]
    assert [p.get_height() for p in ax1.patches] == [pytest.approx(3.0)]
    err = [c for c in ax1.containers if hasattr(c, "errorbar") and c.errorbar is not None][0].errorbar
    segs = err.lines[2][0].get_segments()
    assert segs[0][1][1] - segs[0][0][1] == pytest.approx(2 * 1.0)  # +- one std


def test_bar_chart_marks_missing_scores_instead_of_drawing_zero(monkeypatch):
    """A NaN score (an image with no unknown pixel, a method that scored none) was an empty bar,
    read as 0: it is marked n/a."""
    figs = drawn(monkeypatch)
    scored = MethodResult("scored", per_image={"a": scores(2.0), "b": scores(float("nan"))})
    none = MethodResult("none", per_image={"a": scores(float("nan")), "b": scores(float("nan"))})
    F.bar_chart([scored, none], "sad", "unused.png")
    ax1, ax2 = figs[0].axes[:2]
    assert [t.get_text() for t in ax1.texts] == ["n/a"]
    assert ax1.texts[0].get_position()[0] == 1  # the second method's bar
    assert [t.get_text() for t in ax2.texts] == ["n/a"] * 3  # b of scored, a and b of none
    assert not any(math.isnan(p.get_height()) for p in ax1.patches + ax2.patches)
    assert np.allclose(sorted(p.get_height() for p in ax2.patches), [0, 0, 0, 2.0])
