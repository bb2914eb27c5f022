"""Early stopping: patience, min_delta, the monitored metric, restore_best, the stop reason."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from smx.config import load_config
from smx.datasets.load import load_data
from smx.errors import ConfigError
from smx.plugins import Plugins
from smx.stopping import EarlyStopping
from smx.training import Trainer, train
from tests.conftest import assert_one_line_error, run_smx

PLUGINS = Plugins(entry_points=False)


def feed(rule: EarlyStopping, values: list[float], metric: str = "val_loss") -> list[str | None]:
    """Ask the rule after each epoch, as Trainer.should_stop does; the answers per epoch."""
    trainer = SimpleNamespace(history=[], params=None)
    answers = []
    for epoch, value in enumerate(values, start=1):
        trainer.history.append({"epoch": epoch, metric: value})
        trainer.params = {"epoch": epoch}
        answers.append(rule(trainer))
    return answers


def test_patience_counts_epochs_since_the_best():
    answers = feed(EarlyStopping(patience=3), [1.0, 0.9, 0.95, 0.91, 0.92, 0.5])
    assert answers[:4] == [None] * 4
    assert answers[4] == ("early_stopping: val_loss did not improve by more than 0 for 3 epochs "
                          "(best 0.9 at epoch 2)")


def test_an_improvement_resets_the_count():
    answers = feed(EarlyStopping(patience=2), [1.0, 1.1, 0.8, 0.9, 0.7, 0.75, 0.76])
    assert [a is not None for a in answers] == [False] * 6 + [True]


@pytest.mark.parametrize(("min_delta", "stops_at"), [(0.0, None), (0.2, 4), (0.25, 2)])
def test_min_delta_is_the_smallest_change_that_counts(min_delta, stops_at):
    # changes of 0.25, 0.25, 0.125; a change of exactly min_delta does not count
    answers = feed(EarlyStopping(patience=1, min_delta=min_delta), [1.0, 0.75, 0.5, 0.375])
    stopped = [i + 1 for i, a in enumerate(answers) if a]
    assert (stopped[0] if stopped else None) == stops_at


def test_accuracy_is_maximised():
    rule = EarlyStopping(patience=1, monitor="val_accuracy")
    assert feed(rule, [0.5, 0.7, 0.9], "val_accuracy") == [None, None, None]
    assert feed(EarlyStopping(patience=1, monitor="val_accuracy"), [0.9, 0.7],
                "val_accuracy")[1].endswith("(best 0.9 at epoch 1)")


def test_nan_is_never_an_improvement():
    assert feed(EarlyStopping(patience=1), [1.0, float("nan")])[1] is not None


def test_restore_best_keeps_the_best_epochs_params():
    rule = EarlyStopping(restore_best=True)  # no patience: never stops, only remembers
    assert feed(rule, [1.0, 0.5, 0.7, 0.6]) == [None] * 4
    assert rule.best_params == {"epoch": 2} and rule.best_epoch == 2


def test_section_is_off_by_default():
    cfg = load_config({}, plugins=PLUGINS)
    assert EarlyStopping.from_config(cfg.early_stopping) is None


def iris_cfg(**extra):
    base = {"data": {"name": "iris"}, "epochs": 8, "batch_size": 16,
            "optimizer": {"name": "sgd", "lr": 0.1}}
    return load_config({**base, **extra}, plugins=PLUGINS)


def test_trainer_stops_early_and_says_why():
    # a min_delta no epoch can beat: epoch 1 improves on +inf, epochs 2 and 3 do not
    cfg = iris_cfg(early_stopping={"patience": 2, "min_delta": 100.0})
    result = train(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    assert len(result.history) == 3
    assert result.stop_reason.startswith("early_stopping: val_loss did not improve by more than "
                                         "100 for 2 epochs")
    assert result.restored_epoch is None


def test_without_early_stopping_all_epochs_run():
    cfg = iris_cfg()
    result = train(cfg, load_data(cfg, PLUGINS), PLUGINS.backend("numpy"), "cpu", PLUGINS)
    assert len(result.history) == 8 and result.stop_reason == "max_epochs"


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
def test_restore_best_returns_the_best_epochs_parameters(backend):
    # a learning rate large enough that the validation loss goes up and down
    cfg = iris_cfg(data={"name": "wine"}, optimizer={"name": "sgd", "lr": 3.0},
                   model={"l2": 0.0}, early_stopping={"restore_best": True})
    trainer = Trainer(cfg, load_data(cfg, PLUGINS), PLUGINS.backend(backend), "cpu", PLUGINS)
    snapshots = []
    result = trainer.fit(on_epoch=lambda r: snapshots.append(trainer.host_params()))
    val = [r["val_loss"] for r in result.history]
    best = int(np.argmin(val)) + 1
    assert best != len(val), "the test needs a run whose last epoch is not its best"
    assert result.restored_epoch == best and result.stop_reason == "max_epochs"
    for k, v in result.params.items():
        np.testing.assert_array_equal(v, snapshots[best - 1][k])


def test_summary_records_the_stop_reason_and_restored_epoch(tmp_path):
    proc = run_smx("run", "data.name=iris", "epochs=10", "early_stopping.patience=1",
                   "early_stopping.min_delta=100", "early_stopping.restore_best=true",
                   "output=out", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["stop_reason"].startswith("early_stopping: val_loss")
    assert summary["restored_epoch"] == 1
    assert "stopped after epoch 2: early_stopping" in proc.stdout
    assert "restored from epoch 1" in proc.stdout
    metrics = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2
    # the final metrics are the restored (epoch 1) parameters'
    assert summary["val_loss"] == pytest.approx(json.loads(metrics[0])["val_loss"], rel=1e-6)


def test_monitoring_validation_without_a_validation_split_is_refused(tmp_path):
    cfg = load_config({"data": {"name": "iris", "val_fraction": 0},
                       "early_stopping": {"patience": 3}}, plugins=PLUGINS)
    with pytest.raises(ConfigError, match=r"early_stopping.monitor: val_loss needs a validation"):
        load_data(cfg, PLUGINS)
    cfg = load_config({"data": {"name": "iris", "val_fraction": 0},
                       "early_stopping": {"patience": 3, "monitor": "train_loss"}},
                      plugins=PLUGINS)
    load_data(cfg, PLUGINS)  # train_loss needs no validation split
    proc = run_smx("run", "data.name=iris", "data.val_fraction=0", "early_stopping.patience=3",
                   "output=out", cwd=tmp_path)
    assert_one_line_error(proc, "early_stopping.monitor", "data.val_fraction")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("override", "needles"), [
    ("early_stopping.patiense=3", ["early_stopping.patiense: unknown key",
                                   "min_delta, monitor, patience, restore_best"]),
    ("early_stopping.patience=0", ["early_stopping.patience:", "greater than or equal to 1"]),
    ("early_stopping.min_delta=-1", ["early_stopping.min_delta:", "greater than or equal to 0"]),
    ("early_stopping.monitor=loss", ["early_stopping.monitor:", "'val_loss'"]),
])
def test_bad_early_stopping_keys_are_one_line(override, needles):
    with pytest.raises(ConfigError) as info:
        load_config({}, [override], plugins=PLUGINS)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_the_configs_page_example_is_valid():
    import re

    import yaml

    from tests.conftest import ROOT

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "configs.md").read_text(),
                        flags=re.DOTALL)
    (example,) = [b for b in blocks if "early_stopping:" in b]
    cfg = load_config(yaml.safe_load(example), plugins=PLUGINS)
    assert cfg.early_stopping.patience == 5 and cfg.early_stopping.restore_best
    assert cfg.clip_grad_norm == 1.0
