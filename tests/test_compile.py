"""`compile = true`: the train loop runs the model through torch.compile, and the record says so."""

import dataclasses

import pytest

from bench.cli import main
from bench.engine.config import TrainConfig, config_hash
from bench.engine.train import COMPILE_MODE, seed_everything, train
from bench.store.results import ResultStore
from bench.store.schema import TrainingRun
from tests.helpers import run_args, write_suite
from tests.test_checkpoint import CFG, tiny_data, tiny_net

FAST = dataclasses.replace(CFG, epochs=1, checkpoint_every_steps=0)
PLAIN = TrainingRun.one_process(batch_size=8, lr=0.05).model_dump()


def test_compile_at_its_default_leaves_config_hashes_unchanged_and_on_changes_them():
    train_cfg = dataclasses.asdict(TrainConfig())
    before = {k: v for k, v in train_cfg.items() if k != "compile"}
    assert config_hash({"model": "m", "train": train_cfg}) == config_hash({"model": "m", "train": before})
    on = dataclasses.asdict(TrainConfig(compile=True))
    assert config_hash({"model": "m", "train": on}) != config_hash({"model": "m", "train": train_cfg})


def test_training_without_compile_is_written_as_before_and_with_it_says_the_mode():
    plain = TrainingRun(**PLAIN)
    assert "compile" not in plain.model_dump() and '"compile"' not in plain.model_dump_json()
    compiled = TrainingRun(**PLAIN, compile="default")
    assert compiled.model_dump()["compile"] == "default"
    assert TrainingRun.model_validate_json(compiled.model_dump_json()) == compiled


@pytest.mark.slow  # compiling takes 20-60 s on 2 CPU cores
def test_a_compiled_run_trains_like_the_eager_one_and_records_the_mode():
    results = {}
    for compiled in (False, True):
        seed_everything(0)
        cfg = dataclasses.replace(FAST, compile=compiled)
        results[compiled] = train(tiny_net(), tiny_data(), cfg, seed=0, progress=False)
    eager, comp = results[False], results[True]
    assert comp.status == "measured" and comp.runtime["compile"] == COMPILE_MODE
    assert "compile" not in eager.runtime
    # the same steps on the same batches: equal up to the compiler's reordering of float sums
    assert comp.history[-1]["train_loss"] == pytest.approx(eager.history[-1]["train_loss"], rel=1e-3)


@pytest.mark.slow
def test_bench_run_with_compile_stores_a_record_that_says_so(tmp_path, fashion_root, no_system_data):
    suite = write_suite(tmp_path, extra="\n[overrides.resnet20]\ncompile = true\n")
    assert main(run_args(suite, tmp_path, fashion_root)) == 0
    (record,) = ResultStore(tmp_path / "results").read("tiny")
    assert record.status == "measured" and record.train_config["compile"] is True
    assert record.training.compile == COMPILE_MODE and record.metrics.top1_pct > 10
