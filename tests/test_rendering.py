"""Rendering is inert (#14): whatever text a record carries (model, submitter, device, dataset, code URL,
notes, gate summaries, a failure reason, a perf file's fields), the pages show it as text: no raw HTML,
no `javascript:`, no extra table cell, row, line or heading, and links only to http(s) or to the
leaderboard's own files. Records here are built past the store's validation (`model_copy`), so the
renderer is checked on its own, whatever the store lets through."""

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.report.gate_figures import plot_gate_stats
from bench.report.leaderboard import (
    References,
    gate_figure,
    index_markdown,
    page_name,
    plot_name,
    suite_markdown,
)
from bench.report.perf_page import perf_markdown
from bench.report.plots import Point, plot_accuracy_macs
from bench.report.tables import code_span, escape_cell, markdown_link, markdown_table, safe_name, safe_url
from bench.store.schema import Verification
from tests.test_results import make_record

HOSTILE_URL = "https://ok.example/)[click](javascript:alert(1))"
FRAGMENTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "](javascript:alert(1))",
    "JaVaScRiPt:",
    "data:text/html,x",
    "\n# injected",
    "\n| a | b |",
    "\r\n## h",
    "\u2028# h",
    "```",
    "**bold**",
    "_em_",
    "[x]: javascript:alert(1)",
    "&lt;",
    "<!--",
    "1. ",
    "> ",
    "- ",
    "$x$",
    "~~s~~",
    "\\|",
    "\\",
]
META = "|\n\r\t<>`[]()*_#&!~$\\:;\"' -+=.1a\u202e\x00"
HOSTILE = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=META, min_size=1, max_size=4)),
    min_size=1,
    max_size=5,
).map("".join)


# --- what a page must look like, whatever it shows ----------------------------------------------------


def _shape(page: str) -> list:
    """Each line's kind: blank, a table row with its number of cells, a heading and its level, a list
    item, an image, or a paragraph line."""
    shape = []
    for line in page.split("\n"):
        if not line.strip():
            shape.append("blank")
        elif line.startswith("|"):
            shape.append(("row", len(_cells(line))))
        elif m := re.match(r" {0,3}(#{1,6})(\s|$)", line):
            shape.append(("heading", len(m.group(1))))
        elif re.match(r"[-+*] |\d+[.)] ", line):
            shape.append("item")
        elif line.startswith("!["):
            shape.append("image")
        else:
            shape.append("text")
    return shape


def _cells(row: str) -> list[str]:
    """A table row's cells, split as GFM does: on every `|` not preceded by a backslash."""
    return re.split(r"(?<!\\)\|", row.strip().removeprefix("|").removesuffix("|"))


def _links(page: str) -> list[str]:
    """The targets of the page's links and images (outside code spans, escapes removed first)."""
    text = re.sub(r"\\.", "", page)  # escaped characters are text
    text = re.sub(r"`[^`\n]*`", "", text)  # so are code spans
    return re.findall(r"\]\(([^)\s]*)\)", text)


def assert_inert(page: str) -> None:
    assert not re.search(r"<[A-Za-z/!?]", page), "raw HTML"
    assert "javascript:" not in page.lower() and "vbscript:" not in page.lower()
    assert not re.search(r"[\r\x00\u2028\u2029\u202e]", page)
    for target in _links(page):
        assert target == safe_url(target) or re.fullmatch(r"[A-Za-z0-9_./+%-]+", target), target
        assert ".." not in target.split("/"), target


def assert_tables_keep_their_columns(page: str) -> None:
    """Every row of a table has as many cells as its header."""
    table: list[str] = []
    for line in [*page.split("\n"), ""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert all(len(_cells(row)) == len(_cells(table[0])) for row in table), table
            table = []


# --- records with a text in every field ----------------------------------------------------------------


def _records(text: str, dataset: str = "d", url: str | None = None) -> list:
    """A measured gated run, a submission, its verification, a failed run: every text field holds a
    variant of `text` (each record's own, so rows stay distinct)."""

    def env(i):
        return make_record().environment.model_copy(
            update={"device": f"dev{i}{text}", "device_name": f"n{i}{text}"}
        )

    gates = {
        "gates": f"g{text}",
        "always_on": f"on{text}",
        "always_off": 1,
        "input_dependent": f"dep{text}",
        "pass_rate": {f"u{text}": [0.5, 1.0]},
        "active_fraction_per_sample": [0.5],
    }
    base = make_record()

    def record(i: int, model: int, **fields):
        """Record i of the page (its own device, id and store version) of model `model`."""
        update = {"model": f"m{model}{text}", "dataset": dataset, "environment": env(i)}
        update |= {"record_id": f"id{i}{text}", "store_version": i + 1, **fields}
        return base.model_copy(update=update)

    measured = record(
        0,
        0,
        model_family=f"f{text}",
        model_info={"k": f"v{text}", f"key{text}": [1, f"x{text}"]},
        gates=gates,
        created_at=f"2026{text}",
    )
    code_url = url if url is not None else f"https://ok.example/{text}"
    submitted = record(
        1, 1, status="submitted", submitter=f"s1{text}", code_url=code_url, model_info={"note": f"w{text}"}
    )
    verification = Verification.model_construct(
        record_id=f"id1{text}", metric="top1_pct", submitted=50.0, measured=50.5, tolerance=1.0
    )
    check = record(2, 1, status="verified", submitter=f"s2{text}", verification=verification)
    failed = record(3, 3, status="failed", metrics=None, failure_reason=f"r{text}")
    return [measured, submitted, check, failed]


def _pages(text: str, url: str | None = None) -> dict[str, str]:
    records = _records(text, dataset=f"d{text}", url=url)
    suite = f"s{text}"
    records = [r.model_copy(update={"suite": suite}) for r in records]
    page, _ = suite_markdown(suite, records, 4, "0" * 64, None, References([]))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "perf").mkdir()
        (Path(folder) / "perf" / "train-x.json").write_text(json.dumps(_perf_result(text)))
        perf = perf_markdown(folder)
    return {"suite": page, "index": index_markdown({suite: None}, records, 4, "0" * 64), "perf": perf}


def _perf_result(text: str) -> dict:
    return {
        "benchmark": "train",
        "model": f"m{text}",
        "train_config": {"batch_size": 8},
        "steps": 3,
        "num_threads": 2,
        "harness_median": 10.0,
        "bare_median": 11.0,
        "ratio_median": 0.9,
        "date": f"2026-01-01 {text}",
        "load_average": [f"1{text}"],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE)
def test_every_text_field_renders_inert_and_keeps_the_pages_shape(text):
    hostile, plain = _pages(text), _pages("plain")
    for name, page in hostile.items():
        assert_inert(page)
        assert_tables_keep_their_columns(page)
        assert _shape(page) == _shape(plain[name]), name  # no injected line, heading, row or cell


@settings(max_examples=200, deadline=None)
@given(HOSTILE)
def test_escaped_text_reads_back_as_the_text(text):
    escaped = escape_cell(text)
    assert "\n" not in escaped and "\r" not in escaped and "<" not in escaped
    assert not re.search(r"(?<!\\)((\\\\)*)\|", escaped.replace("\\|", "")), escaped  # every | escaped
    unescaped = re.sub(r"\\(.)", r"\1", escaped)
    for entity, ch in (("&lt;", "<"), ("&gt;", ">"), ("&#58;", ":"), ("&amp;", "&")):
        unescaped = unescaped.replace(entity, ch)
    assert unescaped == re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", " ", text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(HOSTILE, HOSTILE.map(lambda t: "https://ok.example/" + t), st.text()))
def test_a_safe_url_is_http_and_cannot_close_its_link(url):
    safe = safe_url(url)
    if safe is not None:
        assert re.fullmatch(r"https?://[a-z0-9.-]+(:\d+)?[A-Za-z0-9/\-._~!$+,=@%&?#]*", safe), safe
        assert safe_url(safe) == safe


def test_plain_text_and_todays_names_are_unchanged():
    for text in ("resnet20_wider", "dcnet_linear_cos_resnet20", "AMD EPYC", "2026-11-23T22:51:15+00:00",
                 "8 × 32, bfloat16, SyncBN", "metadata: x", "C# and F#"):  # fmt: skip
        assert escape_cell(text) == text
    assert (
        code_span('{"widths": [23, 46, 91], "k": "3\\u00d73"}')
        == '`{"widths": [23, 46, 91], "k": "3\\u00d73"}`'
    )
    assert safe_url("https://x.org/c") == "https://x.org/c"
    assert safe_name("aig_resnet20") == "aig_resnet20"


def test_markup_in_text_is_escaped():
    assert escape_cell("a|b\n# c") == "a\\|b \\# c"
    assert escape_cell("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escape_cell("_x_ **y** [z](u) `c` ~~s~~ $m$ &amp;") == (
        "\\_x\\_ \\*\\*y\\*\\* \\[z\\](u) \\`c\\` \\~\\~s\\~\\~ \\$m\\$ &amp;amp;"
    )
    assert escape_cell("# h") == "\\# h" and escape_cell("- x") == "\\- x" and escape_cell("1. x") == "1\\. x"
    assert code_span("a`b") == "a\\`b" and code_span("<b>") == "&lt;b&gt;"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:x",
        "file:///etc/passwd",
        "/relative/path",
        "relative",
        "//ok.example/x",
        "https:ok.example",
        "https://",
        "https://user:pw@ok.example/",
        "https://ok.example:99999/",
        "https://[::1]/",
        "https://ok example/",
        "https://ok.example/a b",
        "https://ok.example/\nx",
        "https://ok_example/",
        "",
    ],
)
def test_links_other_than_http_are_withheld(url):
    assert safe_url(url) is None
    link = markdown_link("code", url)
    assert link == "code (link withheld: not an http(s) URL)" and "](" not in link


def test_the_javascript_url_case():
    link = markdown_link("code", HOSTILE_URL)
    assert link == "[code](https://ok.example/%29%5Bclick%5D%28javascript%3Aalert%281%29%29)"
    page = _pages("x", url=HOSTILE_URL)["suite"]
    assert_inert(page)
    assert "[code](https://ok.example/%29%5Bclick%5D%28javascript%3Aalert%281%29%29)" in page
    assert "[click]" not in page
    page = _pages("x", url="javascript:alert(1)")["suite"]
    assert_inert(page)
    assert "code (link withheld: not an http(s) URL)" in page


def test_a_submissions_notes_never_stand_in_for_a_built_in_models():
    ours = make_record(0, model_info={"block": "basic"}).model_copy(
        update={"record_id": "a" * 16, "store_version": 1}
    )
    theirs = make_record(
        1,
        model_info={"block": "evil", "pwn": "<b>x</b>"},
        status="submitted",
        code_url="https://x.org/c",
        submitter="aaa",  # sorts before every other origin
    ).model_copy(update={"record_id": "b" * 16, "store_version": 2})
    only_theirs = make_record(
        0, model="resnet56", model_info={"block": "theirs"}, status="submitted", code_url="https://x.org/c",
        submitter="measured",  # a submitter's name is never our origin
    ).model_copy(update={"record_id": "c" * 16, "store_version": 2})  # fmt: skip
    for records in ([ours, theirs, only_theirs], [theirs, only_theirs, ours]):
        page, _ = suite_markdown("tiny", records, 2, "0" * 64, None, References([]))
        notes = page.split("## Model notes")[1].split("## Notes from submissions")[0]
        assert '- `resnet20`: `{"block": "basic"}`' in notes
        assert "evil" not in notes and "resnet56" not in notes
        submitted = page.split("## Notes from submissions")[1]
        assert (
            '`resnet20` in `bbbbbbbbbbbbbbbb`, submitted by aaa: {"block": "evil", "pwn": "&lt;b&gt;x&lt;/b&gt;"}'
            in submitted
        )
        assert '`resnet56` in `cccccccccccccccc`, submitted by measured: `{"block": "theirs"}`' in submitted
        rows = [line for line in page.splitlines() if line.startswith("| resnet")]
        assert any(
            row.startswith("| resnet56 (submitted by measured)") and "`submitted`" in row for row in rows
        )
        assert any(row.startswith("| resnet20 (submitted by aaa)") for row in rows)


def test_file_names_stay_in_their_folder():
    evil = make_record().model_copy(
        update={"suite": "../up", "model": "../../x", "dataset": "a/b", "config_hash": "/" * 64, "seed": 0}
    )
    path = gate_figure(evil)
    assert path.startswith("gates/") and path.count("/") == 2 and ".." not in path.split("/")
    assert "/" not in plot_name("../up", "a/b") and not page_name("../up").startswith(".")
    assert page_name("../up") != page_name("__up") and safe_name("a/b") != safe_name("a_b")
    assert gate_figure(make_record()) == "gates/tiny/resnet20-fashion_mnist-s0-aaaaaaaa.png"


def test_figures_draw_any_text_as_text(tmp_path):
    text = "$\\frac{a$ <b> \n $x^"
    points = [Point(f"m{text}", f"f{text}", 1e6, False, 50.0), Point("b", f"f{text}", 2e6, True, 60.0, 1.0)]
    assert plot_accuracy_macs(points, text, tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    gates = {"pass_rate": {f"layer{text}": [0.0, 0.5, 1.0]}, "active_fraction_per_sample": [0.2, 0.4]}
    assert plot_gate_stats(gates, text, tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_table_headers_and_text_cells_are_escaped_but_markdown_cells_are_not():
    from bench.report.tables import Markdown

    table = markdown_table([{"a|b": "x|y", "c": Markdown("`ok`"), "d": ""}], compact=True)
    assert table.splitlines()[0] == "| a\\|b | c | d |" and table.splitlines()[2] == "| x\\|y | `ok` | – |"
