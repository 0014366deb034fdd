"""sftpipe.plots: valid PNGs of the fixed size, byte-identical for the same data, empty cases,
and the dvclive history reader on the TSV format dvclive writes."""
import math
import os
import random
import warnings

import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from sftpipe import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _shape(figsize):
    return round(figsize[1] * plots.DPI), round(figsize[0] * plots.DPI)


def _check_png(path, figsize):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    assert img.shape[:2] == _shape(figsize)
    assert img.min() < img.max()          # something was drawn, not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]   # no temp left


_rng = random.Random(0)
SIZES = {2: 500, 3: 120, 5: 7, 40: 1}
GROUPS = {
    "zh": {"scores": [_rng.lognormvariate(3.5, 1) for _ in range(300)], "lower": None, "upper": 400.0},
    "en": {"scores": [_rng.lognormvariate(3, 1) for _ in range(300)], "lower": 5.0, "upper": 200.0},
}
PER_CLASS = {"问答": {"rows": 100, "issues": 7}, "code": {"rows": 50, "issues": 0}}
HISTORY = {"train/loss": [(i, 3 / (i + 1)) for i in range(20)], "eval/loss": [(10, 1.0), (20, 0.8)]}

# (function, data, other data, figure size)
CASES = {
    "cluster_sizes": (plots.cluster_sizes_png, SIZES, {**SIZES, 40: 2}, plots.FIGSIZE),
    "perplexity": (plots.perplexity_png, GROUPS, {**GROUPS, "en": {**GROUPS["en"], "lower": 6.0}},
                   (2 * plots.PANEL_WIDTH, plots.FIGSIZE[1])),
    "label_issues": (plots.label_issues_png, PER_CLASS,
                     {**PER_CLASS, "code": {"rows": 50, "issues": 1}}, plots.label_issues_size(2)),
    "training_curves": (plots.training_curves_png, HISTORY,
                        {**HISTORY, "eval/loss": [(10, 1.0), (20, 0.9)]}, plots.FIGSIZE),
}


@pytest.mark.parametrize("name", CASES)
def test_png_valid_deterministic_and_data_dependent(tmp_path, name):
    fn, data, other, figsize = CASES[name]
    a = fn(data, tmp_path / "sub" / "a.png")           # creates the folder
    assert a == tmp_path / "sub" / "a.png"
    _check_png(a, figsize)
    # Same data, keys in the other order, str path: byte-identical.
    b = fn(dict(reversed(data.items())), str(tmp_path / "sub" / "b.png"))
    assert b == tmp_path / "sub" / "b.png"
    assert a.read_bytes() == b.read_bytes()
    fn(other, a)                                         # overwrites in place
    _check_png(a, figsize)
    assert a.read_bytes() != b.read_bytes()


def test_png_has_no_software_chunk(tmp_path):
    data = plots.cluster_sizes_png(SIZES, tmp_path / "c.png").read_bytes()
    assert b"Software" not in data and b"matplotlib" not in data.lower()


@pytest.mark.parametrize("fn, figsize", [
    (plots.cluster_sizes_png, plots.FIGSIZE),
    (plots.perplexity_png, (plots.PANEL_WIDTH, plots.FIGSIZE[1])),
    (plots.label_issues_png, plots.label_issues_size(0)),
    (plots.training_curves_png, plots.FIGSIZE),
])
def test_empty_input_draws_a_placeholder(tmp_path, fn, figsize):
    _check_png(fn({}, tmp_path / "empty.png"), figsize)


def test_training_curves_skips_empty_series(tmp_path):
    only = plots.training_curves_png({"train/loss": HISTORY["train/loss"]}, tmp_path / "a.png")
    padded = plots.training_curves_png({**{"train/loss": HISTORY["train/loss"]}, "eval/loss": []},
                                       tmp_path / "b.png")
    assert only.read_bytes() == padded.read_bytes()
    all_empty = plots.training_curves_png({"a": [], "b": []}, tmp_path / "c.png")
    assert all_empty.read_bytes() == plots.training_curves_png({}, tmp_path / "d.png").read_bytes()
    assert all_empty.read_bytes() != only.read_bytes()


def test_training_curves_single_point_is_visible(tmp_path):
    one = plots.training_curves_png({"eval/loss": [(5, 1.0)]}, tmp_path / "one.png")
    empty = plots.training_curves_png({"eval/loss": []}, tmp_path / "empty.png")
    assert one.read_bytes() != empty.read_bytes()


def test_perplexity_edge_groups(tmp_path):
    groups = {
        "empty": {"scores": [], "lower": None, "upper": None},
        "flat": {"scores": [7.0] * 10, "lower": 0.0, "upper": None},   # lower 0 = no lower cut
        "odd": {"scores": [None, math.nan, math.inf, -1.0, 0.0, 3.0], "lower": 2.0, "upper": 2.5},
    }
    _check_png(plots.perplexity_png(groups, tmp_path / "p.png"), (3 * plots.PANEL_WIDTH, plots.FIGSIZE[1]))


def _red_pixels(path):
    img = imread(path)[..., :3]
    red = to_rgb(plots.DROPPED)
    return int((abs(img - red).max(axis=-1) < 0.02).sum())


def test_perplexity_dropped_rows_are_red(tmp_path):
    scores = [float(x) for x in range(1, 101)]
    red = {}
    for lower, upper in [(None, None), (30.0, None), (None, 70.0), (30.0, 70.0)]:
        path = tmp_path / f"{lower}-{upper}.png"
        red[lower, upper] = _red_pixels(
            plots.perplexity_png({"g": {"scores": scores, "lower": lower, "upper": upper}}, path))
    # Uncut: only the legend's red square. Each cut drops ~30 rows: thousands of red pixels.
    assert red[30.0, None] > red[None, None] + 2000
    assert red[None, 70.0] > red[None, None] + 2000
    assert red[30.0, 70.0] > max(red[30.0, None], red[None, 70.0]) + 2000


def test_label_issues_height_grows_with_classes(tmp_path):
    many = {f"class{i:02d}": {"rows": 10 + i, "issues": i} for i in range(12)}
    assert plots.label_issues_size(12)[1] > plots.label_issues_size(2)[1]
    _check_png(plots.label_issues_png(many, tmp_path / "l.png"), plots.label_issues_size(12))


def test_cjk_names_do_not_warn(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.label_issues_png(PER_CLASS, tmp_path / "l.png")
        plots.training_curves_png({"训练/损失": HISTORY["train/loss"]}, tmp_path / "t.png")
    assert not [w for w in caught if "Glyph" in str(w.message)]


def test_failed_render_leaves_old_file_and_no_temp(tmp_path):
    path = plots.cluster_sizes_png(SIZES, tmp_path / "c.png")
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        plots.cluster_sizes_png({2: "many"}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = plots.cluster_sizes_png(SIZES, tmp_path / "c.png")
    before = path.read_bytes()

    def broken_savefig(self, fh, **kwargs):
        fh.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(plots.Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.cluster_sizes_png({**SIZES, 7: 3}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def test_read_dvclive_history_real_format(tmp_path):
    from dvclive.plots import Metric                  # dvclive's own writer: the real format

    plots_dir = tmp_path / "metrics" / "dvclive" / "plots"
    for name, points, stamp in [("train/loss", [(0, 2.5), (1, 2.0), (2, 1.5)], True),
                                ("eval/loss", [(2, 1.75)], False),
                                ("lr", [(0, 1e-4), (1, 5e-5)], True)]:
        metric = Metric(name, plots_dir)
        for step, value in points:
            metric.step = step
            metric.dump(value, timestamp=stamp)
    header = (plots_dir / "metrics" / "train" / "loss.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["timestamp", "step", "loss"]

    history = plots.read_dvclive_history(plots_dir)
    assert history == {"train/loss": [(0, 2.5), (1, 2.0), (2, 1.5)], "eval/loss": [(2, 1.75)],
                       "lr": [(0, 1e-4), (1, 5e-5)]}
    assert all(type(s) is int and type(v) is float for series in history.values() for s, v in series)


def test_read_dvclive_history_handwritten_and_odd_rows(tmp_path):
    d = tmp_path / "plots" / "metrics" / "eval"
    d.mkdir(parents=True)
    # Out of order, CRLF line ends (os.linesep on Windows), a non-numeric value, an empty file.
    (d / "rouge_l.tsv").write_bytes(
        b"timestamp\tstep\trouge_l\r\n1700000000100\t20\t0.5\r\n1700000000000\t10\t0.25\r\n"
        b"1700000000200\t30\tn/a\r\n")
    (d / "empty.tsv").write_text("")
    (tmp_path / "plots" / "metrics" / "notes.txt").write_text("not a metric")
    assert plots.read_dvclive_history(tmp_path / "plots") == {
        "eval/rouge_l": [(10, 0.25), (20, 0.5)], "eval/empty": []}


def test_read_dvclive_history_missing_dir(tmp_path):
    assert plots.read_dvclive_history(tmp_path / "nowhere") == {}


def test_history_round_trip_to_png(tmp_path):
    d = tmp_path / "plots" / "metrics" / "train"
    d.mkdir(parents=True)
    (d / "loss.tsv").write_text("step\tloss" + os.linesep + "0\t2.0" + os.linesep + "1\t1.0" + os.linesep)
    history = plots.read_dvclive_history(tmp_path / "plots")
    assert history == {"train/loss": [(0, 2.0), (1, 1.0)]}
    _check_png(plots.training_curves_png(history, tmp_path / "t.png"), plots.FIGSIZE)


def test_by_epoch_puts_each_point_at_the_epoch_logged_with_it():
    history = {"epoch": [(0, 0.05), (1, 0.1), (2, 0.1), (3, 0.15)], "loss": [(0, 2.0), (1, 1.5), (3, 1.0)],
               "eval/loss": [(2, 1.2)], "learning_rate": [(0, 1e-3)]}
    assert plots.by_epoch(history, ("loss", "eval/loss", "missing")) == {
        "loss": [(0.05, 2.0), (0.1, 1.5), (0.15, 1.0)], "eval/loss": [(0.1, 1.2)], "missing": []}
    assert plots.by_epoch({"loss": [(0, 2.0)]}, ("loss",)) == {"loss": []}     # no epoch series: nothing to place


def test_training_curves_axis_label_is_drawn(tmp_path):
    a = plots.training_curves_png(HISTORY, tmp_path / "a.png", x_label="epoch").read_bytes()
    b = plots.training_curves_png(HISTORY, tmp_path / "b.png").read_bytes()
    assert a != b
