"""The probes analysis end to end on tiny models: artifacts, the results class, the stage's run(ctx),
the preference probe, and the lazy package."""

import copy
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from probes_helpers import HOOK0, HOOK1, make_saes, save_saes
from sae_lens import SAE

from lfp_mech import data, probes
from lfp_mech._io import read_json
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.probes import (
    PreferenceProbeConfig,
    ProbesConfig,
    ProbesResults,
    analyse_feedback_probes,
    build_probe_dataset,
    run_preference_probe,
    write_probe_artifacts,
)

CONFIG = dict(n_carrier_templates=2, n_bootstrap=50, batch_size=32, n_shuffles=3, n_eval_words=60)
# two of the 24 evaluation words (sorted held-out words of seed 0), counted in Figure 4
COMPLETIONS = ["what an awesome, awesome film", "a cruel plot"]


def _perturbed(model):
    """A copy of ``model`` with block 1's MLP nudged: the "tuned" model."""
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tuned.blocks[1].mlp.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return tuned


@pytest.fixture(scope="module")
def probe_run(_tiny_llama_session, tmp_path_factory):
    """The analysis on tiny models (40 triples, 24 held-out words), written to a folder."""
    base = copy.deepcopy(_tiny_llama_session[2])
    tmp = tmp_path_factory.mktemp("probes")
    dirs = save_saes(make_saes(), tmp / "saes")
    triples = data.make_triples(40, seed=0, heldout_fraction=0.25, split="train")
    _, test_words = data.heldout_words(seed=0, heldout_fraction=0.25)
    analysis = analyse_feedback_probes(
        base,
        _perturbed(base),
        dirs,
        COMPLETIONS,
        ProbesConfig(**CONFIG),
        triples=triples,
        eval_words=sorted(test_words)[:24],
    )
    summary = write_probe_artifacts(analysis, tmp / "out")
    return {"analysis": analysis, "summary": summary, "out": tmp / "out", "dirs": dirs}


def test_summary_covers_every_probe(probe_run):
    summary, analysis = probe_run["summary"], probe_run["analysis"]
    assert set(summary["tau"]) == {"tuned_sae", *probes.BASELINES, probes.SIGN_ONLY}
    assert summary["base_sae_source"] == "tuned SAEs on base activations"
    assert summary["headline_tuned_minus_base_sae"] == pytest.approx(
        dataclasses.asdict(analysis.diffs["base_sae"]), nan_ok=True
    )
    within = summary["tuned_minus_base_sae_within_sign"]
    assert set(within) == {"positive", "negative"}
    positive = analysis.true_valence > 0
    assert within["positive"]["diff"] == pytest.approx(
        probes.kendall_tau(
            analysis.predictions["tuned_sae"][positive], analysis.true_valence[positive]
        )
        - probes.kendall_tau(
            analysis.predictions["base_sae"][positive], analysis.true_valence[positive]
        ),
        nan_ok=True,
    )
    # the sign-only reference: what sign alone earns on these words; its row is one draw of it
    assert summary["tau_sign_only"] == pytest.approx(probes.sign_only_tau(analysis.true_valence))
    assert summary["sign_acc"][probes.SIGN_ONLY] == 1.0
    assert abs(summary["tau"][probes.SIGN_ONLY] - summary["tau_sign_only"]) < 0.25
    assert list(summary["tau"]) == analysis.order and analysis.order[0] == "tuned_sae"
    assert len(summary["shuffled_null_tau"]) == CONFIG["n_shuffles"]
    assert summary["n_eval_words"] == 24 and summary["n_triples"] == 40
    assert summary["hooks"] == [HOOK0, HOOK1] and summary["n_completions"] == 2
    assert read_json(probe_run["out"] / "summary.json") == summary
    assert summary["tau"]["tuned_sae"] == pytest.approx(analysis.evals["tuned_sae"].tau)


def test_artifacts_are_written(probe_run):
    out = probe_run["out"]
    for stem in ("kendall", "sign_accuracy", "per_word"):
        for suffix in (".csv", ".md", ".json"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0, stem + suffix
    for name in ("predicted_vs_true", "word_frequency", "baselines"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert (out / "kendall.csv").read_text().splitlines()[1].startswith("tuned_sae,24,")


def test_results_class_reads_the_tables_and_probes(probe_run):
    results, analysis = ProbesResults(probe_run["out"]), probe_run["analysis"]
    assert results.exists and results.hooks == [HOOK0, HOOK1]
    assert list(results.kendall["probe"]) == analysis.order
    assert results.kendall["tuned_minus_this"].isna().tolist() == [True] + [False] * 8
    assert list(results.sign_accuracy["probe"]) == analysis.order
    per_word = results.per_word
    assert list(per_word["word"]) == analysis.words
    np.testing.assert_allclose(per_word["pred_xavier"], analysis.predictions["xavier"])
    # each evaluation word counted in the tuned policy's completions: "awesome" twice, "cruel" once
    counts = dict(zip(per_word["word"], per_word["frequency"], strict=True))
    assert counts["awesome"] == 2 and counts["cruel"] == 1 and counts["dire"] == 0
    assert set(results.probe_names) == set(analysis.probes)
    probe = results.load_probe()
    np.testing.assert_allclose(probe.weight, analysis.probes["tuned_sae"].weight, rtol=1e-5)
    assert results.probe_weights().shape == (32 + 48,)
    assert results.probe_weights("xavier").shape == (32 + 48,)
    weights = results.feature_weights({HOOK0: 32, HOOK1: 48})
    assert list(weights.groupby("hook").size()) == [32, 48]
    np.testing.assert_allclose(weights["weight"], results.probe_weights())
    top = weights.loc[weights["rank"] == 1].set_index("hook")["weight"].abs()
    assert top[HOOK1] == weights.loc[weights["hook"] == HOOK1, "weight"].abs().max()
    with pytest.raises(ConfigError, match="do not match"):
        results.feature_weights({HOOK0: 32, HOOK1: 40})
    with pytest.raises(ConfigError, match="no probe 'nope'"):
        results.probe_weights("nope")
    assert results.tau() == probe_run["summary"]["tau"]["tuned_sae"]
    headline = results.headline()
    assert headline["tau"] == results.tau()
    assert headline["tau_sign_only"] == probe_run["summary"]["tau_sign_only"]
    assert headline["tuned_minus_base_sae"]["diff"] == pytest.approx(
        analysis.diffs["base_sae"].diff
    )
    assert set(results.figures()) == {"predicted_vs_true", "word_frequency", "baselines"}
    figures = [results.predicted_vs_true_figure("xavier"), results.baselines_figure()]
    figures.append(results.word_frequency_figure())
    negative = results.baselines_figure(words="negative")
    assert negative.axes[0].get_title().startswith("negative held-out words only")
    with pytest.raises(ConfigError, match="words must be"):
        results.baselines_figure(words="neutral")
    assert all(len(fig.axes[0].collections) + len(fig.axes[0].patches) > 0 for fig in figures)


def test_probe_inputs_are_dataset_d_per_hook(probe_run):
    """The probe's inputs (dataset D) per hook with its predictions: paper Table 7's inputs."""
    results, summary = ProbesResults(probe_run["out"]), probe_run["summary"]
    triples = probe_run["analysis"].triples
    inputs = results.probe_inputs()
    assert list(inputs.features) == [HOOK0, HOOK1]
    assert [tuple(f.shape) for f in inputs.features.values()] == [(80, 32), (80, 48)]
    assert all(f.dtype == torch.float32 for f in inputs.features.values())
    assert inputs.n_inputs == 80 == summary["n_probe_inputs"]
    assert inputs.words == [t.words[0] for t in triples] + [t.words[2] for t in triples]
    assert len(inputs.texts) == 80 and inputs.words[0] in inputs.texts[0]
    assert (inputs.label_delta[:40] >= 0).all() and (inputs.label_delta[40:] <= 0).all()
    probe = results.load_probe()
    a_concat = torch.cat(list(inputs.features.values()), dim=1)
    np.testing.assert_allclose(inputs.predicted_delta.numpy(), probe.predict(a_concat), atol=1e-4)
    assert float(inputs.predicted_delta.abs().max()) == pytest.approx(4.0, abs=1e-4)
    assert summary["n_probe_inputs_predicted_above_3"] == int((inputs.predicted_delta > 3).sum())


def test_probe_inputs_errors(probe_run, tmp_path):
    assert ProbesResults(tmp_path).probe_inputs() is None
    with pytest.raises(LfpMechError, match="not found"):
        probes.load_probe_inputs(tmp_path / "missing.safetensors")
    inputs = ProbesResults(probe_run["out"]).probe_inputs()
    a_concat = torch.cat(list(inputs.features.values()), dim=1)
    triples = probe_run["analysis"].triples
    dataset = build_probe_dataset(a_concat[:2], a_concat[:2], a_concat[:2], triples[:2])
    probe = ProbesResults(probe_run["out"]).load_probe()
    with pytest.raises(ConfigError, match="add up to"):
        probes.save_probe_inputs(tmp_path / "x.safetensors", dataset, {HOOK0: 32}, probe)


def test_an_evaluation_word_in_the_training_triples_is_refused(tiny_model, tmp_path):
    dirs = save_saes(make_saes(), tmp_path)
    triples = data.make_triples(40, seed=0, heldout_fraction=0.25, split="train")
    with pytest.raises(LfpMechError, match="training triples"):
        analyse_feedback_probes(
            tiny_model,
            tiny_model,
            dirs,
            [],
            ProbesConfig(**CONFIG),
            triples=triples,
            eval_words=["awful", "great", "nice", triples[0].words[0]],
        )


def test_stage_run_reads_rlhf_and_saes_results(tiny_hf, tmp_path):
    """run(ctx): base = the run's model, tuned = rlhf/policy, SAEs = saes' small SAEs."""
    from lfp_mech.probes import stage
    from lfp_mech.probes.dataset import heldout_lexicon_words
    from lfp_mech.runner.config import RunConfig, StagesConfig
    from lfp_mech.stage_api import StageContext

    hf, tokenizer = tiny_hf
    options = ProbesConfig(n_triples=40, **CONFIG)
    word = heldout_lexicon_words(options)[0]  # one of the stage's default evaluation words
    (tmp_path / "rlhf").mkdir()
    hf.save_pretrained(tmp_path / "rlhf" / "policy")
    tokenizer.save_pretrained(tmp_path / "rlhf" / "policy")
    rows = [
        {"policy": "tuned", "prompt": "The film", "completion": f" was {word}, {word}."},
        {"policy": "base", "prompt": "The film", "completion": f" was {word}."},
    ]
    text = "".join(json.dumps(r | {"reward": 0.0, "length": 3}) + "\n" for r in rows)
    (tmp_path / "rlhf" / "completions.jsonl").write_text(text)
    saes_dir = tmp_path / "saes"
    for layer, sae in enumerate(make_saes().values()):
        sae.save_model(saes_dir / f"L{layer}_small")
    summary = {"layers": [0, 1], "hook_names": [HOOK0, HOOK1]}
    (saes_dir / "summary.json").write_text(json.dumps(summary))
    config = RunConfig(model="tiny-llama", stages=StagesConfig(probes=options))
    ctx = StageContext(tmp_path, "probes", config, {"stages": {}})
    got = stage.run(ctx)
    assert got["hooks"] == [HOOK0, HOOK1] and got["n_completions"] == 1
    assert got["n_triples"] == 40 and read_json(tmp_path / "probes" / "summary.json") == got
    # the default evaluation words: a seeded sample of the held-out lexicon, mild words included
    assert got["n_eval_words"] == 60 and got["base_sae_source"] == "tuned SAEs on base activations"
    per_word = ProbesResults(tmp_path / "probes").per_word
    assert int(per_word.set_index("word").loc[word, "frequency"]) == 2  # the tuned policy's only


def test_run_preference_probe_on_tiny_model(tiny_model, tmp_path):
    dirs = save_saes(make_saes(), tmp_path)
    chosen = [f"Thank you, here is a kind answer number {i}." for i in range(12)]
    rejected = [f"Go away, you stupid idiot number {i}!" for i in range(12)]
    summary = run_preference_probe(
        tiny_model, dirs, chosen, rejected, tmp_path / "pref", PreferenceProbeConfig(seed=1)
    )
    assert set(summary["test_accuracy"]) == {"preference", "delta"}
    # the two kinds of text differ in every word: both probes separate them on held-out pairs
    assert min(summary["test_accuracy"].values()) >= 0.9
    assert len(summary["pca_explained_variance_ratio"]) == 2
    for name in ["preference_probe.csv", "preference_probe.md", "preference_pca.png"]:
        assert (tmp_path / "pref" / name).stat().st_size > 0
    assert read_json(tmp_path / "pref" / "preference_summary.json") == summary
    with pytest.raises(ValueError, match="equally many"):
        run_preference_probe(tiny_model, dirs, chosen, rejected[:3], tmp_path / "x")


def test_load_saes_is_the_shared_loader(tmp_path):
    from lfp_mech.saes import io

    assert probes.load_saes is io.load_saes
    dirs = save_saes(make_saes(), tmp_path)
    loaded = probes.load_saes({HOOK0: dirs[HOOK0]})
    assert isinstance(loaded[HOOK0], SAE)
    with pytest.raises(ConfigError, match="trained on"):
        probes.load_saes({HOOK1: dirs[HOOK0]})
    with pytest.raises(LfpMechError, match="not an SAE folder"):
        probes.load_saes({HOOK1: tmp_path / "missing"})


def test_package_import_is_lazy():
    """``lfp_mech.probes`` and its config import no torch / TransformerLens / SAE-Lens."""
    code = (
        "import sys, lfp_mech.probes, lfp_mech.probes.config;"
        "print([m for m in ('torch', 'transformer_lens', 'sae_lens') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert "run_probes_stage" not in probes.__all__ and "ProbesResults" in probes.__all__


def test_base_sae_baseline_reads_base_model_saes_when_the_saes_stage_has_them():
    """SAEsResults.load_saes(model="base") when available; else None (tuned SAEs as a stand-in)."""
    from lfp_mech.probes.stage import _base_model_saes

    class WithBase:
        def load_saes(self, size="small", device="cpu", variant=None, model="tuned"):
            return {"hook": (model, device)}

    class WithoutBase:  # a saes stage from before base-model dictionaries
        def load_saes(self, size="small", device="cpu", variant=None):
            return {}

    class MissingBase:
        def load_saes(self, size="small", device="cpu", variant=None, model="tuned"):
            raise ConfigError("no base-model SAEs in this run")

    assert _base_model_saes(WithBase(), "cpu") == {"hook": ("base", "cpu")}
    assert _base_model_saes(WithoutBase(), "cpu") is None
    assert _base_model_saes(MissingBase(), "cpu") is None
