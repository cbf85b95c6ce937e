"""Plots over the runs' DataFrames: real figures and PNGs, checked for what they show.

Frames are built by hand in the shapes the analysis layer returns (list_model_epochs,
metrics_df, list_runs); the last tests draw from a real hub, through the library and the CLI.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")  # before pyplot: tests never open windows

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.colors import LogNorm

from tensorhub import plots
from tensorhub.cli import main
from tensorhub.errors import InvalidArgument, TensorHubError

RUNS = {  # run_id: (run_name, n_units, lr, optimizer)
    "65f000000000000000000001": ("small", 100, 1e-4, "adam"),
    "65f000000000000000000002": ("medium", 400, 1e-2, "sgd"),
    "65f000000000000000000003": ("large", 1600, 1e-1, "adam"),
}
EPOCHS = 4


def loss_of(run: int, epoch: int, split: str) -> float:
    return round(1.0 / (epoch + run) + (0.1 if split == "validation" else 0.0), 6)


def accuracy_of(run: int, epoch: int, split: str) -> float:
    return round(0.5 + 0.1 * epoch - 0.05 * run - (0.02 if split == "validation" else 0.0), 6)


def epochs_frame() -> pd.DataFrame:
    """hub.list_model_epochs(): one row per (run, epoch)."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i, (run_id, (name, units, lr, opt)) in enumerate(RUNS.items()):
        for epoch in range(1, EPOCHS + 1):
            rows.append({"run_id": run_id, "run_name": name, "task_id": None, "epoch": epoch,
                         "time": start + dt.timedelta(minutes=epoch),
                         "loss": loss_of(i, epoch, "train"), "accuracy": accuracy_of(i, epoch, "train"),
                         "val_loss": loss_of(i, epoch, "validation"),
                         "val_accuracy": accuracy_of(i, epoch, "validation"),
                         "hp.n_units": units, "hp.lr": lr, "hp.opt": opt})
    return pd.DataFrame(rows)


def metrics_frame() -> pd.DataFrame:
    """hub.metrics_df(): one row per (run, split), metric names without prefixes."""
    rows = []
    for i, (run_id, (name, units, lr, opt)) in enumerate(RUNS.items()):
        for split in ("train", "validation", "test"):
            source = "validation" if split == "test" else split
            rows.append({"run_id": run_id, "run_name": name, "task_id": None, "repeat": 0, "split": split,
                         "loss": loss_of(i, EPOCHS, source) + (0.05 if split == "test" else 0),
                         "accuracy": accuracy_of(i, EPOCHS, source),
                         "hp.n_units": units, "hp.lr": lr, "hp.opt": opt})
    return pd.DataFrame(rows)


def runs_frame() -> pd.DataFrame:
    """hub.list_runs(as_frame=True): one row per run with its last metric values."""
    last = epochs_frame().groupby("run_id", sort=False).tail(1)
    frame = last.drop(columns=["epoch", "time"]).assign(status="finished", attempt=1, epochs=EPOCHS)
    return frame.reset_index(drop=True)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_real_png(path) -> np.ndarray:
    """The file is a PNG with content: a sizeable image whose pixels are not all one colour."""
    image = matplotlib.image.imread(path)
    assert path.stat().st_size > 0 and image.ndim == 3 and min(image.shape[:2]) > 100
    assert image[..., :3].std() > 0.05  # a blank canvas has (almost) no variance
    return image


# -- learning curves ---------------------------------------------------------------------------


def test_learning_curves_draw_one_line_per_run_and_split_with_the_epochs_data(tmp_path):
    frame = epochs_frame()
    fig = plots.learning_curves(frame, metrics=["loss", "accuracy"])
    assert len(fig.axes) == 2
    colors = {}
    for ax, metric in zip(fig.axes, ["loss", "accuracy"], strict=True):
        assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (metric, "epoch", metric)
        assert len(ax.lines) == len(RUNS) * 2
        drawn = {line.get_label(): line for line in ax.lines}
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(drawn)
        for run_id, (name, *_) in RUNS.items():
            for split, column, style in (("train", metric, "-"), ("validation", f"val_{metric}", "--")):
                line = drawn[f"{name} ({split})"]
                rows = frame[frame.run_id == run_id]
                assert list(line.get_xdata()) == list(range(1, EPOCHS + 1))
                assert np.allclose(line.get_ydata(), rows[column])
                assert line.get_linestyle() == style
                # a run keeps one colour across splits and axes, and runs differ
                assert colors.setdefault(name, line.get_color()) == line.get_color()
        assert len(set(colors.values())) == len(RUNS)
    image = assert_real_png(plots.save(fig, tmp_path / "curves.png"))
    assert image.shape[1] > image.shape[0]  # two panels side by side


def test_learning_curves_pick_runs_splits_and_a_metric_that_names_its_split():
    frame = epochs_frame()
    two = plots.learning_curves(frame, "loss", runs=["small", "65f000000000000000000002"], splits=("validation",))
    assert [line.get_label() for line in two.axes[0].lines] == ["small", "medium"]  # one split: plain names
    assert np.allclose(two.axes[0].lines[1].get_ydata(), frame[frame.run_name == "medium"]["val_loss"])

    explicit = plots.learning_curves(frame, metrics="val_accuracy")
    assert [ax.get_title() for ax in explicit.axes] == ["accuracy"]
    assert all(line.get_linestyle() == "--" for line in explicit.axes[0].lines) and len(explicit.axes[0].lines) == 3

    # a run that logged no validation loss draws its train line only, not an empty one
    partial = frame.assign(val_loss=frame["val_loss"].where(frame.run_name != "large"))
    labels = [line.get_label() for line in plots.learning_curves(partial).axes[0].lines]
    assert labels == ["small (train)", "small (validation)", "medium (train)", "medium (validation)", "large (train)"]


def test_runs_that_share_a_name_are_told_apart_by_their_hyperparameters_then_their_id():
    frame = epochs_frame().assign(run_name="mnist")  # a task's attempts all carry the task's name
    labels = [line.get_label() for line in plots.learning_curves(frame, splits=["train"]).axes[0].lines]
    assert labels == ["mnist n_units=100, lr=0.0001, opt=adam", "mnist n_units=400, lr=0.01, opt=sgd",
                      "mnist n_units=1600, lr=0.1, opt=adam"]
    repeats = frame.assign(**{"hp.n_units": 1, "hp.lr": 1, "hp.opt": "adam"})
    labels = [line.get_label() for line in plots.learning_curves(repeats, splits=["train"]).axes[0].lines]
    assert labels == ["mnist #000001", "mnist #000002", "mnist #000003"]


# -- performance -------------------------------------------------------------------------------


def test_performance_scatters_every_run_coloured_by_a_numeric_hyperparameter(tmp_path):
    frame = metrics_frame()
    fig = plots.performance(frame, x="loss", y="accuracy", color="hp.n_units")
    ax, colorbar = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel(), colorbar.get_ylabel()) == ("val_loss", "val_accuracy", "hp.n_units")
    (dots,) = ax.collections
    validation = frame[frame.split == "validation"]
    assert np.allclose(dots.get_offsets(), validation[["loss", "accuracy"]].to_numpy())
    assert list(dots.get_array()) == [100, 400, 1600]
    assert not isinstance(dots.norm, LogNorm)  # 16× is not two decades
    assert_real_png(plots.save(fig, tmp_path / "performance.png"))  # drawing maps the values to colours
    expected = dots.cmap(dots.norm(np.array([100, 400, 1600])))
    assert np.allclose(dots.get_facecolors(), expected)
    assert np.allclose(expected[[0, 2]], [dots.cmap(0.0), dots.cmap(1.0)])  # smallest and largest: the ends

    by_lr = plots.performance(frame, color="lr")  # hp. prefix optional; 1e-4..1e-1 spans three decades
    (dots,) = by_lr.axes[0].collections
    assert isinstance(dots.norm, LogNorm) and by_lr.axes[1].get_ylabel() == "hp.lr"


def test_performance_gives_categories_a_legend_and_runs_without_a_value_grey():
    frame = metrics_frame()
    frame.loc[frame.run_name == "medium", "hp.opt"] = None
    frame.loc[frame.run_name == "small", "hp.opt"] = "sgd"
    xl = metrics_frame().query("run_name == 'medium'").assign(run_id="65f000000000000000000004", run_name="xl")
    frame = pd.concat([frame, xl])  # medium's twin, whose optimizer (sgd) is set
    ax = plots.performance(frame, color="hp.opt", split="test").axes[0]
    assert ax.get_xlabel() == "test_loss" and len(ax.figure.axes) == 1  # no colorbar for categories
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "hp.opt"
    assert [t.get_text() for t in legend.get_texts()] == ["adam", "sgd", "hp.opt not set"]
    counts = [len(c.get_offsets()) for c in ax.collections]
    assert counts == [1, 2, 1]  # large is adam; small and xl are sgd; medium has none
    faces = [tuple(c.get_facecolors()[0]) for c in ax.collections]
    assert len(set(faces)) == 3 and faces[2] == matplotlib.colors.to_rgba("lightgrey")


def test_performance_reads_all_three_frame_shapes_alike():
    def points(frame: pd.DataFrame, **options) -> np.ndarray:
        return plots.performance(frame, **options).axes[0].collections[0].get_offsets()

    from_epochs, from_runs = points(epochs_frame()), points(runs_frame())  # each run's last epoch
    assert np.allclose(from_epochs, from_runs) and len(from_epochs) == len(RUNS)
    assert np.allclose(points(metrics_frame()), from_epochs)
    last = epochs_frame().groupby("run_id").tail(1)
    assert np.allclose(points(epochs_frame(), split="train"), last[["loss", "accuracy"]].to_numpy())
    plot = plots.performance(runs_frame(), x="val_loss", y="val_accuracy", split="train")  # names that say it
    assert plot.axes[0].get_xlabel() == "val_loss"
    sparse = epochs_frame()
    sparse.loc[sparse.epoch == EPOCHS, ["val_loss", "val_accuracy"]] = np.nan  # validated every other epoch
    before_last = sparse[sparse.epoch == EPOCHS - 1][["val_loss", "val_accuracy"]].to_numpy()
    assert np.allclose(points(sparse), before_last)  # each metric's last logged value


# -- hyperparameter against metric -------------------------------------------------------------


def test_hyperparameter_vs_metric_uses_a_log_axis_beyond_two_decades(tmp_path):
    frame = runs_frame()
    fig = plots.hyperparameter_vs_metric(frame, hyperparameter="hp.lr", metric="val_accuracy")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and (ax.get_xlabel(), ax.get_ylabel()) == ("hp.lr", "val_accuracy")
    assert np.allclose(ax.collections[0].get_offsets(), frame[["hp.lr", "val_accuracy"]].to_numpy())
    assert_real_png(plots.save(fig, tmp_path / "lr.png"))

    assert plots.hyperparameter_vs_metric(frame, "n_units", "val_loss").axes[0].get_xscale() == "linear"  # 16×
    exactly_100 = frame.assign(**{"hp.lr": [0.001, 0.01, 0.1]})
    assert plots.hyperparameter_vs_metric(exactly_100, "lr").axes[0].get_xscale() == "linear"
    with_zero = frame.assign(**{"hp.lr": [0.0, 0.01, 10.0]})  # no log axis can show 0
    assert plots.hyperparameter_vs_metric(with_zero, "lr").axes[0].get_xscale() == "linear"


def test_hyperparameter_vs_metric_boxes_categories_with_every_run_on_top():
    frame = metrics_frame()
    ax = plots.hyperparameter_vs_metric(frame, "opt", "test_loss").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adam", "sgd"]
    counts = [len(c.get_offsets()) for c in ax.collections]
    assert counts == [2, 1]
    adam = ax.collections[0].get_offsets()
    assert np.allclose(sorted(adam[:, 1]), sorted(frame.query("split == 'test' and `hp.opt` == 'adam'")["loss"]))
    assert np.all(np.abs(adam[:, 0] - 1) <= 0.08)  # jittered around the first box
    flags = runs_frame().assign(**{"hp.dropout": [True, False, True]})
    ax = plots.hyperparameter_vs_metric(flags, "hp.dropout", "val_loss").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["False", "True"]


# -- errors ------------------------------------------------------------------------------------


def test_bad_columns_name_the_column_and_list_what_exists():
    epochs, metrics = epochs_frame(), metrics_frame()
    with pytest.raises(InvalidArgument, match=r"'los'.*available metrics: 'loss', 'accuracy', 'val_loss'"):
        plots.learning_curves(epochs, metrics="los")
    with pytest.raises(InvalidArgument, match=r"per epoch \(hub.list_model_epochs\(\)\): no column 'epoch'.*'run_id'"):
        plots.learning_curves(metrics)
    with pytest.raises(InvalidArgument, match=r"no run has values for 'loss' in splits train"):
        plots.learning_curves(epochs.assign(loss=np.nan), splits=["train"])
    with pytest.raises(InvalidArgument, match=r"no run 'ghost'.*'small', 'medium', 'large'"):
        plots.learning_curves(epochs, runs=["ghost"])
    with pytest.raises(InvalidArgument, match=r"split must be one of train, validation, test, got 'dev'"):
        plots.learning_curves(epochs, splits=["dev"])
    with pytest.raises(InvalidArgument, match=r"validation column for metric 'f1'.*'val_f1'.*available metrics"):
        plots.performance(metrics, y="f1")
    with pytest.raises(InvalidArgument, match=r"hyperparameter column 'hp.units'.*'hp.n_units', 'hp.lr', 'hp.opt'"):
        plots.performance(metrics, color="hp.units")
    with pytest.raises(InvalidArgument, match=r"metric column 'val_acc'.*'val_accuracy'"):
        plots.hyperparameter_vs_metric(metrics, "lr", "val_acc")
    with pytest.raises(InvalidArgument, match="no rows"):
        plots.performance(metrics.iloc[:0])
    halves = runs_frame().assign(val_loss=[0.1, np.nan, np.nan], val_accuracy=[np.nan, 0.8, 0.9])
    with pytest.raises(InvalidArgument, match="no run has values for all of 'val_loss', 'val_accuracy'"):
        plots.performance(halves)
    with pytest.raises(InvalidArgument, match="only apply with hub="):
        plots.performance(metrics, task_name="mnist")
    with pytest.raises(InvalidArgument, match="not both"):
        plots.performance(metrics, hub=object())
    with pytest.raises(InvalidArgument, match="unknown plot kind 'curves'"):
        plots.to_html("curves", "x.html", epochs)


def test_a_missing_plotting_library_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` sees when it is absent
    with pytest.raises(TensorHubError, match=r"pip install 'tensorhub\[plots\]'") as raised:
        plots.learning_curves(epochs_frame())
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)
    monkeypatch.setitem(sys.modules, "plotly", None)
    with pytest.raises(TensorHubError, match=r"plotly.*pip install 'tensorhub\[plots\]'"):
        plots.to_html("performance", tmp_path / "p.html", metrics_frame())
    assert not (tmp_path / "p.html").exists()


def test_importing_is_free_and_a_headless_box_draws_on_agg(tmp_path):
    (tmp_path / "matplotlibrc").write_text("backend: TkAgg\n")  # a desktop's setting, on a server
    script = textwrap.dedent("""
        import sys
        from tensorhub import plots
        print("matplotlib" in sys.modules)
        import pandas as pd
        plots.learning_curves(pd.DataFrame({"run_id": ["a"], "run_name": ["a"], "epoch": [1], "loss": [0.5]}))
        import matplotlib
        print(matplotlib.get_backend().lower())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["MATPLOTLIBRC"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "agg"]


# -- files -------------------------------------------------------------------------------------


def test_save_writes_the_format_its_suffix_names(tmp_path):
    fig = plots.learning_curves(epochs_frame())
    assert plots.save(fig, tmp_path / "a" / "curves.svg").read_text().lstrip().startswith("<?xml")
    assert plots.save(fig, tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    bare = plots.save(fig, tmp_path / "curves")
    assert bare.name == "curves.png" and assert_real_png(bare).shape[0] > 100
    with pytest.raises(InvalidArgument, match=r"'curves.xyz'.*png.*to_html"):
        plots.save(fig, tmp_path / "curves.xyz")


def test_to_html_writes_an_interactive_page_of_the_same_data(tmp_path):
    frame = epochs_frame()
    curves = plots.to_plotly("learning_curves", frame, metrics=["loss", "accuracy"])
    assert len(curves.data) == 2 * len(RUNS) * 2
    assert sum(trace.showlegend for trace in curves.data) == len(RUNS) * 2  # one legend entry per run and split
    small = [t for t in curves.data if t.name == "small (validation)"]
    assert list(small[0].x) == [1, 2, 3, 4] and np.allclose(small[0].y, frame[frame.run_name == "small"]["val_loss"])

    scatter = plots.to_plotly("performance", metrics_frame(), color="hp.lr")
    (trace,) = scatter.data
    assert list(trace.text) == ["small", "medium", "large"]  # hover names the run
    assert np.allclose(trace.marker.color, np.log10([1e-4, 1e-2, 1e-1]))
    assert trace.marker.colorbar.title.text == "log10(hp.lr)"
    by_lr = plots.to_plotly("hyperparameter_vs_metric", runs_frame(), hyperparameter="lr")
    assert by_lr.layout.xaxis.type == "log"
    boxes = plots.to_plotly("hyperparameter_vs_metric", runs_frame(), hyperparameter="opt")
    assert [t.type for t in boxes.data] == ["box", "box"] and [t.name for t in boxes.data] == ["adam", "sgd"]

    page = plots.to_html("learning_curves", tmp_path / "curves.html", frame, metrics="loss")
    html = page.read_text()
    assert "<html>" in html and "Plotly.newPlot" in html and "medium (train)" in html


# -- from a hub --------------------------------------------------------------------------------


class RecordingHub:
    """Stands in for a hub: records what the plots ask for and answers with hand-built frames."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def list_model_epochs(self, **selection):
        self.calls.append(("list_model_epochs", selection))
        return epochs_frame()

    def metrics_df(self, **selection):
        self.calls.append(("metrics_df", selection))
        return metrics_frame()


def test_hub_and_a_selection_replace_the_frame():
    hub = RecordingHub()
    assert len(plots.learning_curves(hub=hub, task_name="mnist", run_ids=["x"], metrics="loss").axes[0].lines) == 6
    plots.performance(hub=hub, task_name="mnist", status="finished", color="n_units")
    plots.hyperparameter_vs_metric(hub=hub, task_name="mnist", hyperparameter="lr")
    plots.to_plotly("performance", hub=hub, task_name="mnist", x="loss")
    assert hub.calls == [("list_model_epochs", {"task_name": "mnist", "run_ids": ["x"]}),
                         ("metrics_df", {"task_name": "mnist", "status": "finished"}),
                         ("metrics_df", {"task_name": "mnist"}), ("metrics_df", {"task_name": "mnist"})]


def log_runs(hub) -> None:
    for i, units in enumerate((100, 400, 1600)):
        with hub.start_run("sweep", hyper_parameters={"n_units": units}) as run:
            for epoch in range(1, EPOCHS + 1):
                run.log_epoch(epoch, loss=loss_of(i, epoch, "train"), accuracy=accuracy_of(i, epoch, "train"),
                              val_loss=loss_of(i, epoch, "validation"),
                              val_accuracy=accuracy_of(i, epoch, "validation"))


def test_plots_of_a_real_hub_through_the_library_and_the_cli(hub, store_uri, tmp_path):
    log_runs(hub)
    ax = plots.learning_curves(hub=hub, metrics="loss").axes[0]
    assert len(ax.lines) == 6 and sorted(len(line.get_xdata()) for line in ax.lines) == [EPOCHS] * 6
    assert {line.get_label() for line in ax.lines} >= {"sweep n_units=100 (train)", "sweep n_units=1600 (validation)"}
    dots = plots.performance(hub=hub, color="hp.n_units").axes[0].collections[0]
    assert sorted(dots.get_array()) == [100, 400, 1600]

    cli = CliRunner()

    def run(*args: str):
        return cli.invoke(main, ["plot", *args, "--uri", store_uri, "--project", "test"])

    result = run("learning-curves", "--metric", "loss", "--metric", "accuracy", "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "c.png")
    image = assert_real_png(tmp_path / "c.png")
    assert image.shape[1] > 1.5 * image.shape[0]  # the two metrics side by side
    result = run("performance", "--color", "hp.n_units", "--output", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert_real_png(tmp_path / "p.png")
    result = run("performance", "--x", "loss", "--y", "accuracy", "--split", "train", "-o", str(tmp_path / "p.html"))
    assert result.exit_code == 0 and "Plotly.newPlot" in (tmp_path / "p.html").read_text()

    bad = run("learning-curves", "--metric", "f1", "-o", str(tmp_path / "bad.png"))
    assert bad.exit_code == 1 and "InvalidArgument" in bad.output and "'f1'" in bad.output
    assert "'val_accuracy'" in bad.output and not (tmp_path / "bad.png").exists()
    missing = cli.invoke(main, ["plot", "performance", "--uri", store_uri, "--project", "test"])
    assert missing.exit_code == 2 and "--output" in missing.output
