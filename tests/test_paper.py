"""Paper-reported numbers: every file validates, names registered models and ImageNet layouts that the
models really have, is converted to our unit, and only confirmed numbers reach the leaderboard."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench import registry
from bench.report.leaderboard import write_leaderboard
from bench.store.results import ResultStore, StoreError
from bench.store.schema import PaperReference
from tests.test_results import make_record

REPO = Path(__file__).resolve().parent.parent
REFERENCES = ResultStore(REPO / "results").paper_references(confirmed_only=False)

HE = """paper = "He et al. 2016"

[[result]]
model = "resnet20"
dataset = "cifar10"
metric = "top1_err_pct"
value = 8.75
table = "Table 6"
status = "confirmed"
source = "https://example.org/readme"
quote = "ResNet20 8.75%"

[[result]]
model = "resnet20"
dataset = "cifar100"
metric = "top1_err_pct"
value = 33.0
table = "Table 9"
status = "unconfirmed"
source = "recollection"

[[result]]
model = "se_resnet50"
dataset = "cifar10"
metric = "top1_pct"
value = 77.0
table = "T"
layout = "v1"
status = "confirmed"
source = "s"
quote = "q"
"""


def test_every_paper_file_validates_and_each_paper_has_a_file():
    files = ResultStore(REPO / "results").paper_files()
    assert {
        "he2016_resnet",
        "bejnordi2020_batchshaping",
        "shao2020_channel_equilibrium",
        "hu2018_senet",
        "veit2018_convnet_aig",
        "chen2019_gaternet",
        "liu2018_decoupled",
    } <= set(files)
    assert all(f.arxiv for f in files.values())


@pytest.mark.parametrize("ref", [r for _, r in REFERENCES], ids=lambda r: f"{r.model}-{r.dataset}-{r.metric}")
def test_references_name_registered_models_with_sources(ref):
    registry.get_entry(ref.model)
    if ref.status == "confirmed":
        assert ref.quote.strip() and ref.source.startswith("https://") and ref.table
        assert str(ref.value).rstrip("0").rstrip(".") in ref.quote.replace("%", " "), (
            "the quote must hold the number"
        )
    else:
        assert "transcribe" in ref.source  # unconfirmed numbers say what is left to do


@pytest.mark.parametrize(
    "ref", [r for _, r in REFERENCES if r.dataset == "imagenet"], ids=lambda r: f"{r.model}-{r.metric}"
)
def test_imagenet_references_match_the_layout_of_the_model_they_name(ref):
    model = registry.create_model(ref.model, 1000, 3, **ref.model_args)
    assert model.bench_info["layout"] == ref.layout


def test_error_rates_become_accuracy_and_imagenet_needs_a_layout():
    he = PaperReference(
        model="resnet20",
        dataset="cifar10",
        metric="top1_err_pct",
        value=8.75,
        table="T6",
        status="confirmed",
        source="s",
        quote="q",
    )
    assert (
        he.our_metric == "top1_pct"
        and he.our_value == pytest.approx(91.25)
        and he.stated() == "top-1 error 8.75%"
    )
    top5 = he.model_copy(update={"metric": "top5_pct", "value": 93.0})
    assert top5.our_metric == "top5_pct" and top5.our_value == 93.0
    confirmed = dict(table="T", status="confirmed", source="s", quote="q")
    with pytest.raises(ValidationError, match="layout"):
        PaperReference(model="resnet50", dataset="imagenet", metric="top1_pct", value=76.1, **confirmed)
    confirmed.pop("quote")
    with pytest.raises(ValidationError, match="quote"):
        PaperReference(model="resnet20", dataset="cifar10", metric="top1_pct", value=91.0, **confirmed)


def test_confirmed_numbers_are_shown_with_the_delta_and_unconfirmed_ones_are_not(tmp_path):
    store = ResultStore(tmp_path / "results")
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "he.toml").write_text(HE)
    se_resnet50 = {"suite": "s", "dataset": "cifar10", "model": "se_resnet50", "model_family": "se_resnet"}
    store.append(
        [
            make_record(0, suite="s", dataset="cifar10", top1=90.0),
            make_record(0, suite="s", dataset="cifar100", top1=60.0),
            make_record(0, **se_resnet50, model_info={"layout": "v1.5"}),
            make_record(0, **se_resnet50, model_info={"layout": "v1"}, config_hash="c" * 64),
        ]
    )
    write_leaderboard(store, tmp_path / "lb", suite="s")
    text = (tmp_path / "lb" / "s.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| resnet20") and "90.00" in line)
    assert re.search(r"\| 91\.25 \[1\] +\| -1\.25 ", row)
    assert (
        "1. He et al. 2016, Table 6: `resnet20` on cifar10, top-1 error 8.75% (shown as top-1 91.25%)" in text
    )
    assert "67.00" not in text and "33.0" not in text  # the unconfirmed CIFAR-100 number stays out
    # the v1 number names the model and no arguments: only the layout its builder recorded tells them apart
    v15 = next(line for line in text.splitlines() if line.startswith("| se_resnet50 (config aaaaaaaa)"))
    v1 = next(line for line in text.splitlines() if line.startswith("| se_resnet50 (config cccccccc)"))
    assert "77.00" not in v15  # a v1 number is not shown beside a v1.5 model
    assert re.search(r"\| 77\.00 \[\d\] +\| -27\.00 ", v1)  # but beside a v1 one
    paper = (tmp_path / "lb" / "paper.md").read_text()
    assert "91.25" in paper and "67.00" not in paper and "1 further number(s)" in paper


def test_a_broken_paper_file_is_named(tmp_path):
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "bad.toml").write_text(HE.replace('quote = "ResNet20 8.75%"', ""))
    with pytest.raises(StoreError, match=r"bad.toml is not a valid paper reference file"):
        ResultStore(tmp_path).paper_references()


def test_the_cifar_page_shows_he_et_al_beside_unrun_models(tmp_path):
    write_leaderboard(ResultStore(REPO / "results"), tmp_path, suite="cifar")
    text = (tmp_path / "cifar.md").read_text()
    assert re.search(r"\| resnet20 +\| – +\| not yet run +\| 0 +\| 91\.25 \[\d\]", text)
    assert (
        "93.57" in text and "93.39" not in text
    )  # ResNet-110's best run is shown, the unconfirmed mean is not
