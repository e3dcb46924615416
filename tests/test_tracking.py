"""Opt-in experiment tracking: TensorBoard/W&B loggers, what the training stages log, and that
tracking neither changes results nor enters a stage's fingerprint."""

import os
from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch
from toy_run import ToyConfig, ToyRun

from lfp_mech import tracking
from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import RunConfig, parse_args
from lfp_mech.runner.pipeline import fingerprint, run_pipeline
from lfp_mech.runner.registry import STAGES, StageSpec


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_no_tracking_is_a_no_op_and_tensorboard_writes_scalars(tmp_path):
    with tracking.open_tracker("x") as tracker:  # nothing active
        assert not tracker.enabled and tracker.log_dir is None
        tracker.log_scalars(1, {"train/loss": 1.0})
    with tracking.tracking("none", tmp_path):
        assert not tracking.open_tracker("x").enabled
    with tracking.tracking("tensorboard", tmp_path / "tb", base=tmp_path / "stage"):
        assert tracking.tracker_name(tmp_path / "stage" / "L3_small") == "L3_small"
        assert tracking.tracker_name(tmp_path / "stage") == "train"
        with tracking.open_tracker("L3_small") as tracker:
            tracker.log_scalars(1, {"train/loss": 2.0, "train/nan": float("nan"), "s": "text"})
            tracker.log_scalars(2, {"train/loss": torch.tensor(1.5)})
    assert _scalars(tmp_path / "tb" / "L3_small") == {"train/loss": [(1, 2.0), (2, 1.5)]}
    assert not list(tmp_path.glob("*.tfevents*"))  # only inside the tracker's folder


def test_missing_backend_package_is_a_one_line_error_before_any_stage(tmp_path, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda n: None if n == "tensorboard" else real(n)
    )
    with pytest.raises(ConfigError, match=r"pip install tensorboard"):
        tracking.check_backend("tensorboard")
    from lfp_mech.runner.cli import main

    run_dir = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--set", "tracking=tensorboard",
                 "--run-dir", str(run_dir)]) == 2  # fmt: skip
    assert not (run_dir / "model").exists()


def test_tracking_option_is_validated():
    assert parse_args(["--tracking", "wandb"]).tracking == "wandb"
    with pytest.raises(ConfigError, match="tracking"):
        parse_args(["--tracking", "mlflow"])


def test_wandb_default_is_disabled_only_without_wandb_tracking(monkeypatch, capsys):
    from lfp_mech.runner.cli import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["config", "--preset", "smoke", "--set", "tracking=wandb"]) == 0
    assert "WANDB_MODE" not in os.environ
    assert main(["config", "--preset", "smoke"]) == 0
    assert os.environ["WANDB_MODE"] == "disabled"
    capsys.readouterr()


def test_wandb_tracker_logs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with tracking.tracking("wandb", tmp_path, group="smoke", prefix="saes"):
        with tracking.open_tracker("L0_small", {"alpha": 1e-3}) as tracker:
            assert tracker.backend == "wandb"
            tracker.log_scalars(1, {"train/loss": 3.0})
            run = tracker._run
            assert run.name == "smoke/saes/L0_small" and run.group == "smoke"
    assert list((tmp_path / "L0_small").rglob("*.wandb")), "no offline W&B run file written"


def test_sae_training_logs_loss_l0_fvu_and_trains_the_same(tmp_path):
    from lfp_mech.saes import SAEConfig
    from lfp_mech.saes.training import tensor_batches, train_sae

    config = SAEConfig(batch_size=64, training_tokens=640, sweep_alphas=(), architecture="l1")
    acts = torch.randn(512, 16)
    plain, _ = train_sae(tensor_batches(acts, config), 16, 32, config, tied=True, track="a")
    with tracking.tracking("tensorboard", tmp_path):
        tracked, _ = train_sae(tensor_batches(acts, config), 16, 32, config, tied=True, track="a")
    for name, value in plain.state_dict().items():
        assert torch.equal(value, tracked.state_dict()[name]), name
    logged = _scalars(tmp_path / "a")
    assert {"train/loss", "train/mse_loss", "train/l1_loss", "train/l0", "train/fvu"} <= set(logged)
    assert [step for step, _ in logged["train/fvu"]] == list(range(1, 11))
    assert all(0 <= value <= 32 for _, value in logged["train/l0"])


def test_tracking_is_not_in_any_stage_fingerprint():
    none, tb = RunConfig(), RunConfig(tracking="tensorboard")
    upstream_none, upstream_tb = {}, {}
    for spec in STAGES:
        upstream_none[spec.name] = fingerprint(spec, none, upstream_none)
        upstream_tb[spec.name] = fingerprint(spec, tb, upstream_tb)
    assert upstream_none == upstream_tb


def test_changing_tracking_reruns_no_stage_and_a_stage_logs_inside_the_run(tmp_path):
    calls: Counter[str] = Counter()

    def make(name, requires):
        def run(ctx):
            calls[name] += 1
            with tracking.open_tracker(tracking.tracker_name(ctx.dir)) as tracker:
                tracker.log_scalars(1, {"train/loss": 1.0})
            (ctx.dir / "out.txt").write_text(name)

        return StageSpec(name, "toy", name, "ToyResults", requires, (), run)

    registry = (make("a", ()), make("b", ("a",)))
    run_pipeline(ToyRun(), tmp_path, registry=registry, report=False)
    assert not (tmp_path / "tracking").exists()
    run_pipeline(ToyRun(tracking="tensorboard"), tmp_path, registry=registry, report=False)
    assert calls == Counter(a=1, b=1)  # tracking changed, nothing reran
    run_pipeline(
        ToyRun(tracking="tensorboard"), tmp_path, registry=registry, force=["b"], report=False
    )
    assert calls == Counter(a=1, b=2)
    assert _scalars(tmp_path / "tracking" / "b" / "train") == {"train/loss": [(1, 1.0)]}


def test_environment_checks_run_before_any_stage_and_only_for_stages_that_will_run(tmp_path):
    calls: Counter[str] = Counter()
    checked: list[str] = []

    @dataclass
    class Checked(ToyConfig):
        fail: bool = False

        def check_environment(self, run):
            checked.append(self.value)
            if self.fail:
                raise ConfigError("needs the hub")

    @dataclass
    class Stages:
        a: ToyConfig = field(default_factory=ToyConfig)
        b: Checked = field(default_factory=Checked)

    def make(name, requires):
        return StageSpec(name, "toy", name, "R", requires, (), lambda ctx: calls.update([name]))

    registry = (make("a", ()), make("b", ("a",)))
    with pytest.raises(ConfigError, match="needs the hub"):
        run_pipeline(ToyRun(stages=Stages(b=Checked(fail=True))), tmp_path, registry=registry)
    assert calls == Counter()  # not even stage a ran
    run_pipeline(
        ToyRun(stages=Stages(b=Checked(value=1))), tmp_path, registry=registry, report=False
    )
    run_pipeline(
        ToyRun(stages=Stages(b=Checked(value=1))), tmp_path, registry=registry, report=False
    )
    assert checked == [0, 1] and calls == Counter(a=1, b=1)  # complete b: not checked again


EXPECTED_TAGS = {
    "rlhf/train": {"train/loss", "train/reward", "train/kl", "train/learning_rate"},
    # the smoke SAEs are TopK (no L1 term; the untied twins are the paper presets' only)
    "saes/L0_small": {"train/loss", "train/mse_loss", "train/l0", "train/fvu"},
    "saes/l1_sweep/alpha_0.01": {"train/loss", "train/l0", "train/fvu"},
    # per epoch only validation metrics: the held-out texts are scored once, after selection
    "irl/vader/seed_0": {"train/loss", "train/pair_acc", "validation/acc", "validation/spearman"},
    "irl/irl_rlhf": {"train/loss", "train/reward", "train/kl"},
    "irl/toxicity/rlhf": {"train/reward"},
}


def test_smoke_run_with_tensorboard_logs_every_training_loop(tracked_smoke_run):
    from lfp_mech import load_run

    root = tracked_smoke_run / "tracking"
    for name, tags in EXPECTED_TAGS.items():
        logged = _scalars(root / name)
        assert tags <= set(logged), f"{name}: missing {tags - set(logged)}"
    config = load_run(tracked_smoke_run).config
    rlhf_steps = list(range(1, config.stages.rlhf.max_steps + 1))
    assert [step for step, _ in _scalars(root / "rlhf/train")["train/reward"]] == rlhf_steps
    assert [step for step, _ in _scalars(root / "irl/vader/seed_1")["validation/acc"]] == [1, 2]
    steps = config.stages.saes.training_tokens // config.stages.saes.batch_size
    assert len(_scalars(root / "saes/L1_small")["train/fvu"]) == steps
    # nothing of it inside the stage folders, whose files are hashed
    events = [p.relative_to(tracked_smoke_run) for p in tracked_smoke_run.rglob("*.tfevents*")]
    assert events and all(p.parts[0] == "tracking" for p in events)
