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


SECONDARY = """paper = "Shao et al. 2020"

[[result]]
model = "ce_resnet50"
dataset = "imagenet"
metric = "top1_pct"
value = 78.3
table = "ImageNet table, as a summary quotes it"
layout = "v1.5"
status = "secondary"
source = "a summary; transcribe from the paper"

[[result]]
model = "ce_resnet50"
dataset = "imagenet"
metric = "top1_pct"
value = 78.2
table = "README"
layout = "v1.5"
status = "confirmed"
source = "https://example.org/readme"
quote = "ResNet50-CE 78.2"

[[result]]
model = "ce_mobilenet_v2"
dataset = "imagenet"
metric = "top1_pct"
value = 74.6
table = "ImageNet table, as a summary quotes it"
layout = "torchvision"
status = "secondary"
source = "a summary; transcribe from the paper"
"""


def test_secondary_numbers_are_shown_with_a_mark_and_never_as_confirmed(tmp_path):
    store = ResultStore(tmp_path / "results")
    (tmp_path / "results" / "paper").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "shao.toml").write_text(SECONDARY)
    ce50 = {"suite": "imagenet", "dataset": "imagenet", "model": "ce_resnet50", "model_family": "ce"}
    store.append([make_record(0, **ce50, top1=77.0, model_info={"layout": "v1.5"})])
    write_leaderboard(store, tmp_path / "lb", suite="imagenet")
    text = (tmp_path / "lb" / "imagenet.md").read_text()
    # beside our run: both numbers, the secondary one marked; Δ only against the confirmed one
    row = next(line for line in text.splitlines() if line.startswith("| ce_resnet50 "))
    assert re.search(r"\| 78\.30† \[\d\]; 78\.20 \[\d\] +\| -1\.20 ", row)
    # a model not yet run shows its secondary number, marked, and no Δ
    row = next(line for line in text.splitlines() if line.startswith("| ce_mobilenet_v2 "))
    assert re.search(r"\| not yet run +\| 0 +\| 74\.60† \[\d\] +\| – ", row)
    assert "† known only from a secondary summary of the paper" in text
    assert "† secondary, not confirmed: Shao et al. 2020, ImageNet table, as a summary quotes it" in text
    paper = (tmp_path / "lb" / "paper.md").read_text()
    confirmed, secondary = paper.split("## † Secondary (not confirmed)")
    assert "78.2" in confirmed and "78.3" not in confirmed and "74.6" not in confirmed
    assert "78.3" in secondary and "74.6" in secondary and "0 further number(s)" in confirmed


def test_fractions_from_logs_become_percent():
    log = PaperReference(
        model="dcnet_tanh_cos_resnet18m",
        dataset="imagenet",
        metric="top1",
        value=0.6864,
        table="training log",
        layout="dcnets",
        status="confirmed",
        source="s",
        quote="top1=0.6864",
    )
    assert log.our_metric == "top1_pct" and log.our_value == pytest.approx(68.64)
    assert log.stated() == "top-1 accuracy 0.6864" and log.shown
    with pytest.raises(ValidationError, match="fraction"):
        log.model_validate({**log.model_dump(), "metric": "top5", "value": 88.87})


PUBLIC = """
title = "A public table"
suites = ["fashion"]
source = "https://example.org/readme"
note = "self-reported"

[[result]]
network = "Net | <script>x</script> [click](javascript:alert(1))"
dataset = "fashion_mnist"
top1_pct = 95.5
reported_by = "someone"
code = "javascript:alert(1)"
quote = "| Net | 0.955 |"
"""


def test_public_results_are_shown_apart_escaped_and_only_on_their_suites(tmp_path):
    store = ResultStore(tmp_path / "results")
    (store.reference).mkdir(parents=True)
    (store.reference / "public.toml").write_text(PUBLIC)
    out = tmp_path / "leaderboard"
    write_leaderboard(store, out)
    fashion, quick = (out / "fashion.md").read_text(), (out / "quick.md").read_text()
    section = fashion[fashion.index("### Public results on fashion_mnist") :]
    assert "(not ours)" in section and "95.5" in section
    assert "<script>" not in section and "javascript:" not in section.lower()
    assert "Public results" not in quick
    (store.reference / "public.toml").write_text(PUBLIC.replace("top1_pct = 95.5", "top1_pct = 955"))
    with pytest.raises(StoreError, match="public.toml is not a valid public-results file"):
        write_leaderboard(store, out)


def test_the_committed_public_results_validate():
    files = ResultStore("results").public_results()
    assert files and all(f.results and f.suites for f in files)
