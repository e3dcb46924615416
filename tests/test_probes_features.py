"""Probe features (A_concat at word spans) and the probe reward, on the tiny model and random SAEs."""

import re

import numpy as np
import pytest
import torch
from probes_helpers import HOOK0, HOOK1, SPANS, TEXTS, make_sae, make_saes, manual_concat

from lfp_mech import data
from lfp_mech._io import save_tensors
from lfp_mech.errors import ConfigError
from lfp_mech.probes import (
    LinearProbe,
    collect_feature_sets,
    concat_activations,
    concat_features,
    load_probe,
    mean_pooled_features,
    ordered_hooks,
    probe_reward,
)
from lfp_mech.probes.features import pad_batch


@pytest.fixture
def saes():
    return make_saes()


def test_concat_features_equals_manual_span_average(tiny_model, saes):
    # mapping given in reverse layer order: A_concat must still be layer 0 then layer 1
    reversed_saes = {HOOK1: saes[HOOK1], HOOK0: saes[HOOK0]}
    out = concat_features(tiny_model, reversed_saes, TEXTS, SPANS, batch_size=2)
    assert out.shape == (3, 32 + 48)
    # a word that splits into several tokens is really averaged over several positions
    s, e = data.char_span_to_token_span(tiny_model.tokenizer, TEXTS[2], SPANS[2], offset=1)
    assert e - s > 1 and s >= 1
    with torch.no_grad():
        for i in range(3):
            expected = manual_concat(tiny_model, saes, TEXTS[i], SPANS[i])
            torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-4)


def test_sequence_of_saes_uses_hook_metadata(tiny_model, saes):
    a = concat_features(tiny_model, [saes[HOOK1], saes[HOOK0]], TEXTS, SPANS)
    b = concat_features(tiny_model, saes, TEXTS, SPANS)
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="hook_name"):
        concat_features(tiny_model, [make_sae(None, 8, 0)], TEXTS, SPANS)


def test_raw_and_embedding_activations(tiny_model):
    raw = concat_activations(tiny_model, [HOOK1, HOOK0], TEXTS, SPANS, batch_size=3)
    assert raw.shape == (3, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            raw[1], manual_concat(tiny_model, {HOOK0: None, HOOK1: None}, TEXTS[1], SPANS[1])
        )
    emb = concat_activations(tiny_model, ["hook_embed"], TEXTS, SPANS)
    tokens = tiny_model.to_tokens(TEXTS[0])[0]
    s, e = data.char_span_to_token_span(tiny_model.tokenizer, TEXTS[0], SPANS[0], offset=1)
    torch.testing.assert_close(emb[0], tiny_model.W_E[tokens[s:e]].mean(0).detach())


def test_collect_feature_sets_one_pass_matches_separate_calls(tiny_model, saes):
    sets = collect_feature_sets(
        tiny_model,
        {"sae": saes, "mlp": dict.fromkeys(saes), "embed": {"hook_embed": None}},
        TEXTS,
        SPANS,
    )
    torch.testing.assert_close(sets["sae"], concat_features(tiny_model, saes, TEXTS, SPANS))
    torch.testing.assert_close(
        sets["mlp"], concat_activations(tiny_model, [HOOK0, HOOK1], TEXTS, SPANS)
    )
    assert sets["embed"].shape == (3, 64)


def test_mean_pooled_features_average_all_tokens_but_bos(tiny_model):
    out = mean_pooled_features(tiny_model, {HOOK0: None}, TEXTS[:2])
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(TEXTS[1]))
    torch.testing.assert_close(out[1], cache[HOOK0][0, 1:].mean(0))


def test_feature_errors_name_the_problem(tiny_model):
    with pytest.raises(ConfigError, match="layer 5 out of range.*0–1"):
        concat_activations(tiny_model, ["blocks.5.hook_mlp_out"], TEXTS, SPANS)
    with pytest.raises(ConfigError, match="d_in=32"):
        concat_features(tiny_model, {HOOK0: make_sae(HOOK0, 8, 0, d_in=32)}, TEXTS, SPANS)
    with pytest.raises(ValueError, match="one span per text"):
        concat_activations(tiny_model, [HOOK0], TEXTS, SPANS[:2])
    with pytest.raises(ValueError, match="outside the text"):
        concat_activations(tiny_model, [HOOK0], ["short"], [(2, 40)])
    with pytest.raises(ConfigError, match="duplicate hooks"):
        ordered_hooks([make_sae(HOOK0, 8, 0), make_sae(HOOK0, 8, 1)])


def test_ordered_hooks_is_by_layer():
    hooks = ordered_hooks(dict.fromkeys(["blocks.10.hook_mlp_out", "blocks.2.x", "hook_embed"]))
    assert [h for h, _ in hooks] == ["hook_embed", "blocks.2.x", "blocks.10.hook_mlp_out"]


def test_pad_batch_right_pads_and_normalises_the_span_mask():
    tokens, attention, span = pad_batch([([1, 5, 6], [1, 2]), ([1, 7], [1]), ([1], [])], pad_id=0)
    assert tokens.tolist() == [[1, 5, 6], [1, 7, 0], [1, 0, 0]]
    assert attention.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert span.tolist() == [[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.slow
def test_smollm2_span_features_match_manual(smollm2):
    """Real tokenizer (no BOS of its own; TL prepends <|im_start|>): spans land on the word."""
    texts = ["The acting is breathtaking.", "It was a dull, lifeless film."]
    spans = [(14, 26), (11, 16)]
    hooks = {"blocks.3.hook_mlp_out": None}
    out = concat_activations(smollm2, list(hooks), texts, spans, batch_size=2)
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(
                out[i], manual_concat(smollm2, hooks, texts[i], spans[i]), atol=1e-4, rtol=1e-4
            )


def test_probe_reward_is_the_vader_formula_over_word_features(tiny_model, saes, tmp_path):
    d = sum(s.cfg.d_sae for s in saes.values())
    rng = np.random.default_rng(0)
    probe = LinearProbe(weight=rng.normal(size=d), bias=0.1, scale=0.5)
    texts = ["The plot was wonderful, and the ending didn't drag.", "Bad acting", "!!"]
    got = probe_reward(tiny_model, saes, probe, texts, batch_size=2)
    expected = []
    for text in texts:
        spans = [m.span() for m in re.finditer(r"[^\W_]+(?:'[^\W_]+)*", text)]
        if not spans:
            expected.append(0.0)
            continue
        feats = concat_features(tiny_model, saes, [text] * len(spans), spans)
        expected.append(float(np.clip(probe.predict(feats).sum() / 5, -10, 10)))
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert got[2] == 0.0

    save_tensors(
        tmp_path / "p.safetensors", {f"tuned_sae.{k}": v for k, v in probe.state_dict().items()}
    )
    loaded = load_probe(tmp_path / "p.safetensors")
    np.testing.assert_allclose(loaded.weight, probe.weight, atol=1e-6)
    assert loaded.scale == pytest.approx(0.5) and loaded.bias == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="no probe 'xavier'.*tuned_sae"):
        load_probe(tmp_path / "p.safetensors", "xavier")
