"""``--set saes.pretrained=...``: reuse SAE-Lens SAEs (a local folder offline, a release or a hub
repo where the hub is reachable) instead of training; everything downstream reads them as it reads
trained ones."""

import shutil
import subprocess

import pandas as pd
import pytest
import torch
from saes_helpers import saes_stage_inputs
from safetensors.torch import load_file
from smoke_helpers import smoke_command

from lfp_mech.errors import ConfigError
from lfp_mech.saes import pretrained
from lfp_mech.saes.pretrained import check_pretrained, find_pretrained


def _offline(monkeypatch):
    monkeypatch.setattr("lfp_mech.hub.hub_reachable", lambda timeout=3.0: False)


def test_release_errors_name_the_mismatch_or_the_hub(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(ConfigError, match="trained on pythia-70m-deduped, but the run's model is"):
        check_pretrained("pythia-70m-deduped-mlp-sm", "pythia-70m")
    with pytest.raises(ConfigError, match="trained on pythia-70m-deduped.*tiny-llama"):
        check_pretrained("pythia-70m-deduped-mlp-sm", "tiny-llama")
    with pytest.raises(ConfigError, match=r"no SAE on blocks\.N\.mlp\.hook_post"):
        check_pretrained("pythia-70m-deduped-mlp-sm", "EleutherAI/pythia-70m-deduped", "mlp_post")
    with pytest.raises(ConfigError, match="SAE-Lens release on the Hugging Face hub, which is not"):
        check_pretrained("pythia-70m-deduped-mlp-sm", "EleutherAI/pythia-70m-deduped")
    with pytest.raises(ConfigError, match="hub repo on the Hugging Face hub"):
        check_pretrained("someone/their-saes", "tiny-llama")
    with pytest.raises(ConfigError, match="not a folder, a SAE-Lens release .* or a hub repo id"):
        check_pretrained("no such thing", "tiny-llama")


def test_offline_release_fails_before_any_stage_runs(tmp_path):
    target = tmp_path / "run"
    command = [*smoke_command(target), "--set", "saes.pretrained=pythia-70m-deduped-mlp-sm"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert "trained on pythia-70m-deduped, but the run's model is tiny-llama" in result.stderr
    assert not (target / "model").exists()


def test_folder_roles_and_errors(tracked_smoke_run, tmp_path):
    saes = tracked_smoke_run / "saes"
    chosen = find_pretrained(str(saes), ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"])
    assert {h: {s: e.sae_id for s, e in r.items()} for h, r in chosen.items()} == {
        "blocks.0.hook_mlp_out": {"small": "L0_small"},
        "blocks.1.hook_mlp_out": {"small": "L1_small"},
    }  # the base model's twins (one level deeper) are not picked
    only = find_pretrained(str(saes), ["blocks.0.hook_mlp_out"], ids=["base/L0_small"])
    assert list(only["blocks.0.hook_mlp_out"]) == ["small"]
    with pytest.raises(ConfigError, match=r"no SAE for blocks\.5\.hook_mlp_out"):
        find_pretrained(str(saes), ["blocks.5.hook_mlp_out"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no SAE-Lens SAE in that folder"):
        check_pretrained(str(tmp_path / "empty"), "tiny-llama")
    assert pretrained.pretrained_kind(str(saes)) == "folder"


def test_pretrained_ids_need_pretrained():
    from lfp_mech.runner.config import parse_args, set_args

    with pytest.raises(ConfigError, match="pretrained_ids"):
        parse_args(set_args(["saes.pretrained_ids=[L0_small]"]))
    config = parse_args(set_args(["saes.pretrained=/x", "saes.pretrained_ids=[a/b,c]"]))
    assert config.stages.saes.pretrained_ids == ("a/b", "c")


DOWNSTREAM = [
    "probes/kendall.csv", "probes/per_word.csv", "probes/sign_accuracy.csv",
    "validate/feature_choice.json", "validate/ablation.csv", "validate/activation_frequency.csv",
    "validate/descriptions.csv", "irl/vader/irl_runs.csv",
]  # fmt: skip
DOWNSTREAM_TENSORS = [
    "probes/probes.safetensors", "probes/probe_inputs.safetensors",
    "validate/feature_frequencies.safetensors",
]  # fmt: skip


def test_pushed_saes_feed_a_second_run_that_skips_training(
    tracked_smoke_run, tmp_path, monkeypatch
):
    """SAEs pushed (--local-dir) from a smoke run, reused by a copy of that run: the saes stage
    loads them instead of training, and probes, validate and IRL come out the same."""
    from lfp_mech import load_run
    from lfp_mech.runner.cli import main

    _offline(monkeypatch)
    pushed = tmp_path / "pushed"
    assert main(["push", str(tracked_smoke_run), "--repo-id", "me/x", "--what", "saes",
                 "--local-dir", str(pushed)]) == 0  # fmt: skip
    second = tmp_path / "second"
    shutil.copytree(tracked_smoke_run, second)
    command = [*smoke_command(second), "--set", f"saes.pretrained={pushed}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rlhf: complete, skipped" in result.stderr and "activations: complete" in result.stderr
    first_run, second_run = load_run(tracked_smoke_run), load_run(second)
    assert second_run.saes.pretrained == str(pushed)
    assert "train_main" not in second_run.saes.summary["seconds"]  # nothing trained
    assert not (second / "saes" / "l1_sweep.csv").exists()
    assert second_run.saes.training_info(0)["sae_id"] == "blocks.0.hook_mlp_out/small"
    for size in first_run.saes.sizes:  # the smoke preset: one TopK dictionary per layer
        a, b = first_run.saes.load_saes(size), second_run.saes.load_saes(size)
        assert list(a) == list(b)
        for hook in a:
            assert torch.equal(a[hook].W_dec, b[hook].W_dec)
    metrics = ["fvu", "l0", "ce_recovered"]
    main_first = first_run.saes.metrics.query("model == 'tuned'")[metrics].to_numpy()
    assert (main_first == second_run.saes.metrics[metrics].to_numpy()).all()
    # a pushed release carries the tuned SAEs only: the second run's base-SAE baseline is the
    # tuned SAEs on base activations (it says so), so every probe row but that one is equal
    assert second_run.probes.summary["base_sae_source"] != first_run.probes.summary[
        "base_sae_source"]  # fmt: skip
    for relative in DOWNSTREAM:
        if relative.startswith("probes/"):
            a, b = (pd.read_csv(run / relative) for run in (tracked_smoke_run, second))
            if "probe" in a:  # a row per probe
                a, b = (t[t["probe"] != "base_sae"] for t in (a, b))
            else:  # a column per probe
                a, b = (t.drop(columns=[c for c in t if "base_sae" in c]) for t in (a, b))
            pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
            continue
        assert (second / relative).read_bytes() == (tracked_smoke_run / relative).read_bytes()
    for name in DOWNSTREAM_TENSORS:
        a, b = load_file(tracked_smoke_run / name), load_file(second / name)
        same = [k for k in a if "base_sae" not in k]  # the base-SAE probe differs (see above)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in same), name


@pytest.fixture
def stage_dir(tiny_hf, tiny_model, tmp_path):
    """A run directory with what the saes stage reads."""
    return saes_stage_inputs(tiny_hf, tiny_model, tmp_path / "run")


def _save_standard_sae(folder, hook, d_in, d_sae, seed):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    config = StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook))
    sae = StandardSAE(config)
    torch.nn.init.normal_(sae.W_enc)  # not tied: W_enc != W_dec.T
    sae.save_model(folder)
    return sae


def test_stage_reuses_foreign_saes_without_a_big_twin(stage_dir):
    """SAE-Lens SAEs saved by someone else (any folder names, one per hook, untied): the stage
    loads them as the small dictionaries; no big ones, so no MMCS tables."""
    from test_saes_stage import HOOKS, _config, _context

    from lfp_mech.saes import SAEsResults
    from lfp_mech.saes import stage as saes_stage

    source = stage_dir / "foreign"
    made = {hook: _save_standard_sae(source / f"sae_{i}", hook, 64, 96, i)
            for i, hook in enumerate(HOOKS)}  # fmt: skip
    summary = saes_stage.run(_context(stage_dir, _config(pretrained=str(source))))
    assert summary["n_saes"] == 2 and summary["alpha"] is None
    results = SAEsResults(stage_dir / "saes")
    assert results.sizes == ["small"] and results.variant == "untied"
    assert results.pretrained == str(source)
    for hook, sae in results.load_saes().items():
        assert torch.equal(sae.W_enc, made[hook].W_enc) and sae.cfg.d_sae == 96
    assert results.high_mmcs_features() == {} and not list((stage_dir / "saes").glob("mmcs*"))
    assert len(results.metrics) == 2 and results.metrics["fvu"].notna().all()
    with pytest.raises(ConfigError, match="no 'big' dictionaries"):
        results.sae_dirs("big")
    narrow = stage_dir / "narrow"
    for i, hook in enumerate(HOOKS):
        _save_standard_sae(narrow / f"sae_{i}", hook, 32, 64, i)
    with pytest.raises(ConfigError, match="32-wide activations but blocks.0.hook_mlp_out"):
        saes_stage.run(_context(stage_dir, _config(pretrained=str(narrow))))
