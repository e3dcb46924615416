"""The KL fine-tune of a dictionary's decoder: what it moves, what it keeps, when it is kept."""

import copy

import pytest
import torch
from saes_helpers import saes_stage_inputs, saes_stage_inputs_with_base

from lfp_mech._io import read_json
from lfp_mech.data import load_prompts
from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import RunConfig, StagesConfig
from lfp_mech.saes import SAEConfig, SAEsResults, build_training_sae, text_ce_losses
from lfp_mech.saes import finetune as finetune_module
from lfp_mech.saes import stage as saes_stage
from lfp_mech.saes.finetune import (
    finetune_on_validation,
    kl_finetune_decoder,
    kl_finetune_decoders,
    split_finetune_texts,
)
from lfp_mech.stage_api import StageContext

HOOK = "blocks.1.hook_mlp_out"


def _sae(hook=HOOK, seed=0):
    """A random 64 → 128 TopK dictionary on ``hook`` (a poor reconstruction: room to improve)."""
    config = SAEConfig(architecture="topk", k=8, batch_size=64, training_tokens=64)
    torch.manual_seed(seed)
    return build_training_sae(
        64, 128, tied=False, alpha=0.0, config=config, n_steps=1, metadata={"hook_name": hook}
    )


def test_kl_finetune_keeps_the_latents_and_the_model_and_lowers_the_kl(tiny_model):
    texts = load_prompts("reviews", "train")[:48]
    sae = _sae()
    others = {  # any other parameter (a JumpReLU threshold; a TopK SAE has none)
        name: p.detach().clone()
        for name, p in sae.named_parameters()
        if name not in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    decoder = sae.W_dec.detach().clone()
    model_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    flags = [p.requires_grad for p in tiny_model.parameters()]
    probe = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = sae.encode(probe)
    before = text_ce_losses(tiny_model, texts, {HOOK: [sae]})["sae"][HOOK][0]

    losses = kl_finetune_decoder(tiny_model, HOOK, sae, texts, lr=1e-2, batch_size=8, epochs=8)

    assert len(losses) == 8 * 6
    assert sum(losses[-6:]) < 0.5 * sum(losses[:6])  # the last epoch's KL half the first's or less
    assert not torch.equal(sae.W_dec, decoder)
    for name, param in sae.named_parameters():
        if name in others:
            assert torch.equal(param, others[name]), name
    with torch.no_grad():  # W_enc / b_enc absorb the decoder's shift and norms: same latents
        assert torch.equal(sae.encode(probe) > 0, latents > 0)
        assert torch.allclose(sae.encode(probe), latents, atol=1e-5)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, model_state[key]), key
    assert [p.requires_grad for p in tiny_model.parameters()] == flags  # restored
    assert all(p.grad is None for p in tiny_model.parameters())  # no gradient reached the model
    after = text_ce_losses(tiny_model, texts, {HOOK: [sae]})["sae"][HOOK][0]
    assert after < before


def test_dictionaries_fine_tuned_together_step_as_alone(tiny_model):
    """Sharing the clean pass changes nothing: each decoder ends where it does fine-tuned alone."""
    texts = load_prompts("reviews", "train")[:24]
    hooks = ["blocks.0.hook_mlp_out", HOOK]
    alone = {hook: _sae(hook, seed) for seed, hook in enumerate(hooks)}
    together = {hook: copy.deepcopy(sae) for hook, sae in alone.items()}
    options = dict(lr=1e-2, batch_size=8, epochs=2)
    losses_alone = {
        hook: kl_finetune_decoder(tiny_model, hook, sae, texts, **options)
        for hook, sae in alone.items()
    }
    losses_together = kl_finetune_decoders(tiny_model, together, texts, **options)
    for hook in hooks:
        assert losses_together[hook] == pytest.approx(losses_alone[hook], rel=1e-4, abs=1e-7)
        assert torch.allclose(together[hook].W_dec, alone[hook].W_dec, atol=1e-5)
        assert torch.allclose(together[hook].W_enc, alone[hook].W_enc, atol=1e-5)
    assert not torch.allclose(together[hooks[0]].W_dec, _sae(hooks[0], 0).W_dec)


@pytest.mark.parametrize("scores, kept", [((0.80, 0.70), False), ((0.80, 0.85), True)])
def test_the_fine_tune_is_kept_only_if_validation_improves(tiny_model, monkeypatch, scores, kept):
    texts = load_prompts("reviews", "train")[:40]
    sae, other = _sae(), _sae("blocks.0.hook_mlp_out", seed=1)
    saes = {HOOK: sae, "blocks.0.hook_mlp_out": other}
    state = {name: p.detach().clone() for name, p in sae.named_parameters()}

    def fine_tune(model, saes, texts, **kwargs):
        with torch.no_grad():
            for sae in saes.values():
                sae.W_dec.add_(0.1)
                sae.b_dec.add_(0.1)
        return {hook: [1.0] for hook in saes}

    # the CE loss recovered on the validation texts, before and after: the other dictionary
    # improves either way, so each is kept or restored on its own score
    validation = iter(
        [
            {HOOK: scores[0], "blocks.0.hook_mlp_out": 0.5},
            {HOOK: scores[1], "blocks.0.hook_mlp_out": 0.6},
        ]
    )
    monkeypatch.setattr(finetune_module, "kl_finetune_decoders", fine_tune)
    monkeypatch.setattr(finetune_module, "_val_ce_recovered", lambda *a: next(validation))
    records = finetune_on_validation(
        tiny_model, saes, texts[:32], texts[32:],
        lr=1e-4, batch_size=8, epochs=1, context_length=64, seed=0,
    )  # fmt: skip
    record, other_record = records
    assert record["hook"] == HOOK and other_record["kept"] is True
    assert record["kept"] is kept
    assert (record["ce_val_before"], record["ce_val_after"]) == scores
    changed = {name for name, p in sae.named_parameters() if not torch.equal(p, state[name])}
    assert changed == ({"W_dec", "b_dec"} if kept else set())


def test_split_finetune_texts():
    texts = [f"text {i}" for i in range(10)]
    finetune, val = split_finetune_texts(texts, 100, 3)
    assert finetune == texts[:7] and val == texts[7:]
    assert split_finetune_texts(texts, 2, 3)[0] == texts[:2]
    with pytest.raises(ConfigError, match="kl_finetune_val_texts"):
        split_finetune_texts(texts, 5, 10)


def test_finetune_options_are_checked():
    with pytest.raises(ConfigError, match="saes.kl_finetune_texts"):
        SAEConfig(architecture="l1", tied=True, kl_finetune_texts=10)
    with pytest.raises(ConfigError, match="saes.kl_finetune_texts"):
        SAEConfig(kl_finetune_texts=-1)
    with pytest.raises(ConfigError, match="saes.kl_finetune_lr"):
        SAEConfig(kl_finetune_texts=10, kl_finetune_lr=0.0)


def test_stage_fine_tunes_tuned_and_base_dictionaries(tiny_hf, tiny_model, tmp_path):
    run_dir = saes_stage_inputs_with_base(tiny_hf, tiny_model, tmp_path / "run")
    options = dict(
        batch_size=128, training_tokens=128 * 20, k=8, eval_tokens=1024, ce_texts=8,
        ce_batch_size=4, expansion_factors=(2,),
    )  # fmt: skip
    plain = _run(run_dir, SAEConfig(**options))
    plain_metrics = SAEsResults(run_dir / "saes").metrics
    assert SAEsResults(run_dir / "saes").kl_finetune is None  # no fine-tune, no table
    summary = _run(run_dir, SAEConfig(**options, kl_finetune_texts=64, kl_finetune_val_texts=16))
    out = run_dir / "saes"
    table = SAEsResults(out).kl_finetune
    assert list(table.columns) == saes_stage.KL_FINETUNE_COLUMNS
    assert sorted(table["model"]) == ["base", "base", "tuned", "tuned"]
    assert (table["finetune_texts"] == 64).all() and (table["val_texts"] == 16).all()
    assert (table["kept"] == (table["ce_val_after"] > table["ce_val_before"])).all()
    for row in table.itertuples():
        folder = out / ("base/" if row.model == "base" else "") / f"L{row.layer}_small"
        info = read_json(folder / "training.json")
        assert ("kl_finetune" in info) == bool(row.kept)
    metrics = SAEsResults(out).metrics
    # the encoder is frozen: every dictionary fires the same latents as without the fine-tune
    assert metrics["l0"].tolist() == pytest.approx(plain_metrics["l0"].tolist())
    assert metrics["dead_fraction"].tolist() == plain_metrics["dead_fraction"].tolist()
    assert summary["n_saes"] == plain["n_saes"] == 2
    assert set(read_json(out / "summary.json")["seconds"]) >= {
        "kl_finetune_tuned",
        "kl_finetune_base",
    }


def _run(run_dir, config):
    run_config = RunConfig(model="tiny-llama", stages=StagesConfig(saes=config))
    return saes_stage.run(StageContext(run_dir, "saes", run_config, manifest={"stages": {}}))


def test_too_few_training_texts_stop_the_stage_before_training(tiny_hf, tiny_model, tmp_path):
    run_dir = saes_stage_inputs(tiny_hf, tiny_model, tmp_path / "run")
    config = SAEConfig(
        architecture="topk", base_model=False, batch_size=128, training_tokens=128 * 2,
        kl_finetune_texts=10, kl_finetune_val_texts=100_000,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="kl_finetune_val_texts"):
        _run(run_dir, config)
    assert not (run_dir / "saes" / "L0_small").exists()  # stopped before any training
