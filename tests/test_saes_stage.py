"""The ``saes`` stage in a run directory (tiny-llama activations) and its results class."""

import pytest
import torch
from matplotlib.figure import Figure
from sae_lens import SAE
from saes_helpers import saes_stage_inputs, saes_stage_inputs_with_base

from lfp_mech._io import read_json
from lfp_mech.activations import ActivationConfig
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.runner.config import RunConfig, StagesConfig
from lfp_mech.saes import SAEConfig, SAEsResults, load_sae, plot_l1_sweep, plot_mmcs
from lfp_mech.saes import stage as saes_stage
from lfp_mech.saes.ce_evaluation import ce_check_detail
from lfp_mech.stage_api import StageContext

HOOKS = ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]


def _config(**overrides):
    base = dict(
        architecture="l1", tied=True, expansion_factors=(1, 2), base_model=False,
        batch_size=128, training_tokens=128 * 20, l1_coefficient=1e-3, sweep_alphas=(1e-3, 1e-2),
        sweep_tokens=128 * 10, eval_tokens=1024, ce_texts=8, ce_batch_size=4,
    )  # fmt: skip
    return SAEConfig(**{**base, **overrides})


@pytest.fixture
def run_dir(tiny_hf, tiny_model, tmp_path):
    """A run directory with what the saes stage reads: the policy and the activation stores."""
    return saes_stage_inputs(tiny_hf, tiny_model, tmp_path / "run")


def _context(run_dir, config):
    run_config = RunConfig(model="tiny-llama", stages=StagesConfig(saes=config))
    return StageContext(run_dir, "saes", run_config, manifest={"stages": {}})


def test_stage_writes_every_artifact(run_dir):
    config = _config(compare_untied=True)
    summary = saes_stage.run(_context(run_dir, config))
    out = run_dir / "saes"
    assert summary["n_saes"] == 4 and summary["layers"] == [0, 1]
    assert set(summary) == set(saes_stage.MANIFEST_KEYS)
    for name in ("L0_small", "L0_big", "L1_small", "L1_big", "untied/L0_small", "untied/L1_small"):
        sae = SAE.load_from_disk(out / name)
        assert sae.cfg.metadata.hook_name.startswith("blocks.")
        assert (out / name / "training.json").is_file()
    assert SAE.load_from_disk(out / "L1_big").cfg.d_sae == 128
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == saes_stage.METRIC_COLUMNS
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 4 + 2
    for name in ("metrics.md", "metrics.json", "l1_sweep.csv", "l1_sweep.png",
                 "tied_vs_untied.md", "mmcs.png", "mmcs_L1.md"):  # fmt: skip
        assert (out / name).exists(), name
    assert len((out / "mmcs_L0.csv").read_text().splitlines()) == 1 + 64
    saved = read_json(out / "summary.json")
    assert set(saved["checks"]) == {
        "small_l0_le_64", "small_fvu_le_0.25", "small_ce_recovered_ge_0.9",
        "small_dead_fraction_le_0.1",
    }  # fmt: skip
    assert saved["architecture"] == "l1" and saved["k"] is None and saved["base"] is None
    assert saved["alpha"] == config.l1_coefficient
    assert saved["hook_names"] == HOOKS
    assert saved["saes"] == {"L0_small": "L0_small", "L0_big": "L0_big",
                             "L1_small": "L1_small", "L1_big": "L1_big"}  # fmt: skip
    assert saved["l1_sweep"]["layer"] == 0 and len(saved["l1_sweep"]["rows"]) == 2
    assert [r["variant"] for r in saved["tied_vs_untied"]] == ["tied", "untied"]
    assert set(saved["seconds"]) == {"l1_sweep", "train_main", "train_comparison", "evaluation"}
    assert read_json(out / "high_mmcs_features.json")["1"]["top_features"]


def test_results_read_back_what_the_stage_wrote(run_dir):
    config = _config(sweep_alphas=(), compare_untied=False, training_tokens=128 * 5)
    summary = saes_stage.run(_context(run_dir, config))
    results = SAEsResults(run_dir / "saes")
    assert results.exists and results.layers == [0, 1] and results.hook_names == HOOKS
    assert results.variant == "tied" and results.alpha == config.l1_coefficient
    assert results.checks == summary["checks"]
    dirs = results.small_sae_dirs()
    assert list(dirs) == HOOKS
    assert dirs[HOOKS[1]] == run_dir / "saes" / "L1_small"
    assert results.sae_dirs("big")[HOOKS[0]] == run_dir / "saes" / "L0_big"
    saes = results.load_saes()
    assert list(saes) == HOOKS and all(not sae.training for sae in saes.values())
    assert saes[HOOKS[0]].cfg.d_sae == 64
    assert results.load_saes("big")[HOOKS[1]].cfg.d_sae == 128
    x = torch.randn(5, 64)
    reference = load_sae(dirs[HOOKS[0]])
    torch.testing.assert_close(saes[HOOKS[0]].encode(x), reference.encode(x))

    metrics = results.metrics
    assert list(metrics.columns) == saes_stage.METRIC_COLUMNS and len(metrics) == 4
    saved_fvu = read_json(run_dir / "saes" / "metrics.json")[0]["fvu"]
    assert metrics["fvu"].iloc[0] == pytest.approx(saved_fvu, rel=1e-12)  # CSV at full precision
    assert results.l1_sweep is None and results.l1_sweep_layer is None
    assert results.plot_l1_sweep() is None
    assert results.tied_vs_untied is None
    mmcs = results.mmcs(1)
    assert list(mmcs.columns) == ["small_feature", "mmcs", "big_feature"] and len(mmcs) == 64
    assert mmcs["mmcs"].is_monotonic_decreasing
    high = results.high_mmcs_features()
    assert high["1"]["top_features"] == mmcs["small_feature"].tolist()[: config.mmcs_top_k]
    assert results.training_info(0, "big")["hook_name"] == HOOKS[0]
    assert isinstance(results.plot_mmcs(), Figure)
    assert set(results.figures()) == {"mmcs"}
    with pytest.raises(LfpMechError, match="saes"):
        results.sae_dirs("small", variant="untied")  # not trained: compare_untied=False
    with pytest.raises(ConfigError, match="variant"):
        results.sae_dirs("small", variant="both")


def test_untied_twins_are_reachable_from_the_results(run_dir):
    config = _config(
        sweep_alphas=(1e-3,), training_tokens=128 * 5, sweep_tokens=128 * 5, compare_untied=True
    )
    saes_stage.run(_context(run_dir, config))
    results = SAEsResults(run_dir / "saes")
    twins = results.load_saes(variant="untied")
    assert list(twins) == HOOKS
    assert not torch.equal(twins[HOOKS[0]].W_enc, twins[HOOKS[0]].W_dec.T)
    main = results.load_saes()
    assert torch.equal(main[HOOKS[0]].W_enc, main[HOOKS[0]].W_dec.T)
    table = results.tied_vs_untied
    assert table["variant"].tolist() == ["tied", "untied"]
    sweep = results.l1_sweep
    assert sweep["alpha"].tolist() == [1e-3] and results.l1_sweep_layer == 0
    assert isinstance(results.plot_l1_sweep(), Figure)


def test_stage_errors_name_the_problem(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="sweep_layer = 7"):
        saes_stage.run(_context(run_dir, _config(sweep_layer=7)))
    (run_dir / "activations" / "heldout" / "store.json").unlink()
    with pytest.raises(LfpMechError, match="no held-out activations"):
        saes_stage.run(_context(run_dir, _config()))


@pytest.mark.parametrize(
    ("architecture", "saved_as"),
    [(None, "JumpReLUSAE"), ("topk", "TopKSAE"), ("matching_pursuit", "MatchingPursuitSAE")],
)
def test_sparse_default_trains_dictionaries_of_tuned_and_base_model(
    tiny_hf, tiny_model, tmp_path, architecture, saved_as
):
    run_dir = saes_stage_inputs_with_base(tiny_hf, tiny_model, tmp_path / "run")
    options = {} if architecture is None else {"architecture": architecture}
    config = SAEConfig(  # 4 x d_in latents: room for BatchTopK's threshold to settle below d_sae / 2
        batch_size=128, training_tokens=128 * 30, k=8, eval_tokens=1024, ce_texts=8,
        ce_batch_size=4, expansion_factors=(4,), **options,
    )  # fmt: skip
    architecture = architecture or "batchtopk"
    assert config.architecture == architecture and config.base_model and not config.tied
    summary = saes_stage.run(_context(run_dir, config))
    assert summary["architecture"] == architecture and summary["k"] == 8
    assert summary["alpha"] is None and summary["n_saes"] == 2
    out = run_dir / "saes"
    for name in ("L0_small", "L1_small", "base/L0_small", "base/L1_small"):
        sae = SAE.load_from_disk(out / name)  # BatchTopK is saved as a JumpReLU SAE
        assert type(sae).__name__ == saved_as and sae.cfg.d_sae == 4 * 64
        assert sae.cfg.metadata.hook_name == f"blocks.{name[-7]}.hook_mlp_out"
    assert not (out / "L0_big").exists() and not (out / "untied").exists()

    results = SAEsResults(out)
    assert results.sizes == ["small"] and results.architecture == architecture
    assert results.has_base and results.high_mmcs_features() == {}
    tuned, base = results.load_saes(), results.load_saes(model="base")
    assert list(tuned) == list(base) == HOOKS
    assert results.sae_dirs(model="base")[HOOKS[0]] == out / "base" / "L0_small"
    # same options, same tokens, other model: another dictionary
    assert not torch.equal(tuned[HOOKS[0]].W_dec, base[HOOKS[0]].W_dec)

    metrics = results.metrics
    assert list(metrics.columns) == saes_stage.METRIC_COLUMNS and len(metrics) == 4
    assert sorted(metrics["model"]) == ["base", "base", "tuned", "tuned"]
    assert (metrics["architecture"] == architecture).all() and (metrics["k"] == 8).all()
    assert metrics["delta_lm_loss"].to_numpy() == pytest.approx(
        (metrics["ce_sae"] - metrics["ce_clean"]).to_numpy()
    )
    # the same-norm random-error control, measured beside each dictionary on the same texts
    assert metrics["delta_lm_loss_random_error"].to_numpy() == pytest.approx(
        (metrics["ce_random_error"] - metrics["ce_clean"]).to_numpy()
    )
    assert (metrics["ce_random_error"] != metrics["ce_sae"]).all()
    assert metrics["ce_recovered_random_error"].notna().all()
    gain = metrics["ce_recovered"] - metrics["ce_recovered_random_error"]
    assert metrics["ce_recovered_minus_random_error"].to_numpy() == pytest.approx(gain.to_numpy())
    assert (metrics["ce_recovered_minus_random_error_ci_low"] <= gain + 1e-9).all()
    assert (gain <= metrics["ce_recovered_minus_random_error_ci_high"] + 1e-9).all()
    assert metrics["dense_fraction"].between(0, 1).all() and (metrics["l0"] > 0).all()
    # TopK: exactly k per token at inference too; matching pursuit: at most k greedy steps;
    # BatchTopK: a learned threshold (its running estimate still rising after 30 steps, so more
    # than k but far from dense)
    limit = 4 * 64 / 2 if architecture == "batchtopk" else config.k
    assert (metrics["l0"] <= limit).all()
    if architecture == "matching_pursuit":  # the tied encoder: W_enc is W_dec transposed
        assert torch.equal(tuned[HOOKS[0]].W_enc, tuned[HOOKS[0]].W_dec.T)
        # loaded with the incremental encoder (SAE-Lens's class, its encoder replaced)
        assert type(tuned[HOOKS[0]]).__name__ == "GramMatchingPursuitSAE"
        assert (metrics["fvu"] < 1).all()  # it learned to reconstruct
    # the base rows are measured on the base model: another clean CE than the tuned policy's
    clean = metrics.groupby("model")["ce_clean"].first()
    assert clean["base"] != pytest.approx(clean["tuned"])
    assert set(summary["base"]["checks"]) == set(summary["checks"])


def test_base_dictionaries_need_base_activations(run_dir):
    with pytest.raises(ConfigError, match="activations.base_model = true"):
        saes_stage.run(_context(run_dir, _config(base_model=True)))
    saes_stage.run(_context(run_dir, _config(sweep_alphas=(), training_tokens=128 * 2)))
    with pytest.raises(ConfigError, match="saes.base_model = true"):
        SAEsResults(run_dir / "saes").load_saes(model="base")


def test_sparse_options_are_checked():
    with pytest.raises(ConfigError, match="saes.tied"):
        SAEConfig(tied=True)
    with pytest.raises(ConfigError, match="saes.k"):
        SAEConfig(k=0)
    with pytest.raises(ConfigError, match="saes.kl_finetune_texts"):
        SAEConfig(architecture="matching_pursuit", kl_finetune_texts=100)
    with pytest.raises(ConfigError, match="expansion_factors"):
        SAEConfig(expansion_factors=(4, 8, 16))
    run_config = RunConfig(
        model="tiny-llama", stages=StagesConfig(activations=ActivationConfig(base_model=False))
    )
    with pytest.raises(ConfigError, match="saes.base_model"):
        run_config.stages.saes.check_environment(run_config)


def test_plots_take_rows_frames_and_arrays():
    import numpy as np
    import pandas as pd

    rows = [{"alpha": a, "nmse": 0.1 * i, "fvu": 0.2 * i, "l0": 10 - i, "d_sae": 64}
            for i, a in enumerate([1e-3, 1e-4, 1e-2])]  # fmt: skip
    for data in (rows, pd.DataFrame(rows)):
        fig = plot_l1_sweep(data, chosen=1e-3, layer=2)
        left, right = fig.axes
        assert list(left.lines[0].get_xdata()) == [1e-4, 1e-3, 1e-2]  # sorted by α
        assert right.get_title() == "d_sae = 64"
    fig = plot_mmcs({0: torch.rand(50), 1: np.random.default_rng(0).random(50)}, threshold=0.9)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["L0", "L1"]


def test_a_failed_ce_check_names_the_dictionaries_and_their_cis():
    """The warning of a failed CE check lists each dictionary below 0.90 with its CI, and says
    when a CI still reaches 0.90 (more texts would decide) — and not when none does."""
    config = SAEConfig(ce_texts=64)
    row = {"size": "small", "variant": "untied", "layer": 21, "ce_recovered": 0.87}
    undecided = {**row, "ce_recovered_ci_low": 0.78, "ce_recovered_ci_high": 0.956}
    passing = {**row, "layer": 22, "ce_recovered": 0.93}
    detail = ce_check_detail([undecided, passing], config, 0.9)
    assert detail == (
        " (L21: 0.870 [0.780, 0.956]; saes.ce_texts = 64; a CI contains 0.9: "
        "more texts (saes.ce_texts) would decide)"
    )
    clear_miss = {**undecided, "ce_recovered_ci_high": 0.873}
    assert ce_check_detail([clear_miss], config, 0.9) == (
        " (L21: 0.870 [0.780, 0.873]; saes.ce_texts = 64)"
    )
