"""Top-1 against MACs: the Pareto front, deterministic PNGs, and the leaderboard's link to them."""

from bench.report.leaderboard import write_leaderboard
from bench.report.plots import Point, pareto_front, plot_accuracy_macs
from bench.store.results import ResultStore
from tests.test_results import make_record


def _p(label, macs, top1, family="f", executed=False):
    return Point(label, family, macs, executed, top1)


def test_pareto_front_keeps_only_points_nothing_beats():
    points = [
        _p("a", 40e6, 90.0),
        _p("b", 40e6, 91.0),
        _p("c", 25e6, 89.0),
        _p("d", 60e6, 90.5),
        _p("e", 70e6, 92.0),
        _p("f", 70e6, 92.0),
    ]
    # a: b has more accuracy at the same MACs; d: b has more at fewer; f ties e (first by label stays)
    assert [p.label for p in pareto_front(points)] == ["c", "b", "e"]
    assert pareto_front([]) == []


def test_png_is_deterministic_and_carries_no_software_version(tmp_path):
    points = [
        _p("resnet20", 40.5e6, 90.1, "resnet_cifar"),
        _p("bas_resnet20", 25e6, 89.0, "batch_shaping", True),
        Point("se_resnet20", "se_resnet", 40.6e6, False, 90.5, 0.3),
    ]
    a = plot_accuracy_macs(points, "t", tmp_path / "a.png").read_bytes()
    b = plot_accuracy_macs(list(reversed(points)), "t", tmp_path / "b.png").read_bytes()
    assert a == b and a.startswith(b"\x89PNG") and b"Software" not in a and b"atplotlib" not in a
    assert not list(tmp_path.glob("*.tmp"))


def test_the_leaderboard_draws_and_links_one_figure_per_dataset(tmp_path):
    store = ResultStore(tmp_path / "results")
    gated = make_record(0, model="bas_resnet20", model_family="batch_shaping").model_dump()
    gated["metrics"] |= {"executed_macs": {"mean": 60.0, "std": 1.0, "min": 50.0, "max": 70.0}}
    store.append([make_record(0), make_record(1, top1=60.0), make_record(0).model_validate(gated)])
    written = write_leaderboard(store, tmp_path / "lb", suite="tiny")
    figure = tmp_path / "lb" / "tiny-fashion_mnist.png"
    assert figure in written and figure.read_bytes().startswith(b"\x89PNG")
    assert (
        "![Top-1 against MACs on fashion_mnist](tiny-fashion_mnist.png)"
        in (tmp_path / "lb" / "tiny.md").read_text()
    )
