"""The diff stage: a planted difference is recovered and undone; edits, statistics, the stage."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from lfp_mech import build_tiny_model
from lfp_mech.data import load_prompts
from lfp_mech.diff import (
    DiffConfig,
    DiffDictionary,
    DiffResults,
    ablate_latents,
    ablate_sae_features,
    add_latents,
    add_vector,
    diff_features,
    gap_share,
    permutation_p,
    project_out,
    residual_hooks,
    run_diff,
)
from lfp_mech.diff.residual import capture_resid
from lfp_mech.diff.scoring import group_latents, matched_random_latents
from lfp_mech.errors import ConfigError, LfpMechError

SMALL = {"d_dict": 64, "top_k": 4, "ks": (1, 2), "control_k": 2, "n_random": 2}


def _planted(layer: int = 0, norm: float = 2.0):
    base, tok = build_tiny_model("tiny-llama", seed=0)
    tuned = copy.deepcopy(base)
    v = torch.randn(base.config.hidden_size, generator=torch.Generator().manual_seed(3))
    v = norm * v / v.norm()
    # the plant: a fixed direction added to the tuned copy's MLP output at `layer`
    tuned.model.layers[layer].mlp.down_proj.bias = nn.Parameter(v.clone())
    return base, tuned, tok, v


def _logprobs(model, batch):
    with torch.no_grad():
        return model(**batch).logits.log_softmax(-1)


def test_planted_direction_is_top_feature_and_its_ablation_undoes_it():
    base, tuned, tok, v = _planted(layer=0)
    config = DiffConfig(layers=(0,), corpus_new_tokens=10, n_epochs=100, **SMALL)
    features = diff_features(
        (base, tok), (tuned, tok), load_prompts("reviews", "train")[:64], config
    )
    top = features.groups[0]
    cos = features.dictionary.W_dec[top.members[0]].detach() @ v / v.norm()
    assert float(cos) > 0.99
    assert top.score == pytest.approx(float(v.norm()), rel=0.05)  # it carries the whole plant
    assert top.frequency > 0.99  # the plant is on every token
    batch = tok(load_prompts("reviews", "test")[:16], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    lb, lt = _logprobs(base, batch), _logprobs(tuned, batch)
    with residual_hooks(tuned, {0: ablate_latents(features.dictionary, features.top(1))}):
        la = _logprobs(tuned, batch)
    planted = (lt - lb).abs()[mask].mean()
    assert (la - lb).abs()[
        mask
    ].mean() < 0.05 * planted  # ablated tuned ≈ base (≥ 95% of the plant undone)
    # the hook is gone after the block
    assert torch.equal(_logprobs(tuned, batch), lt)


def test_residual_hooks_edit_block_and_mlp_outputs():
    base, tok = build_tiny_model("tiny-llama", seed=0)
    ids = tok(["a good film"], return_tensors="pt").input_ids
    mask = torch.ones_like(ids, dtype=torch.bool)
    clean = capture_resid(base, ids, mask, 1)
    with residual_hooks(base, {"blocks.0.hook_resid_post": lambda x: x}):
        assert torch.allclose(capture_resid(base, ids, mask, 1), clean)
    with residual_hooks(base, {"blocks.1.hook_resid_post": lambda x: x + 1.0}):
        assert torch.allclose(capture_resid(base, ids, mask, 1), clean + 1.0)
    with residual_hooks(base, {"blocks.1.hook_mlp_out": lambda x: x + 1.0}):
        assert torch.allclose(capture_resid(base, ids, mask, 1), clean + 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="does not exist"):
        with residual_hooks(base, {5: lambda x: x}):
            pass
    with pytest.raises(ConfigError, match="unsupported hook"):
        with residual_hooks(base, {"blocks.0.attn.hook_z": lambda x: x}):
            pass


def test_one_pass_capture_of_several_blocks_equals_one_capture_per_block():
    from lfp_mech.diff.residual import capture_resids

    base, tok = build_tiny_model("tiny-llama", seed=0)
    batch = tok(load_prompts("reviews", "test")[:20], return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    both = capture_resids(base, ids, mask, [1, 0], batch_size=8)
    assert sorted(both) == [0, 1]
    for layer in (0, 1):
        assert torch.equal(both[layer], capture_resid(base, ids, mask, layer, batch_size=8))


def _dictionary(d_model=8, d_dict=6, k=2):
    d = DiffDictionary(d_model, d_dict, k)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        d.W_enc.copy_(torch.randn(d_model, d_dict, generator=gen))
        d.b_enc.fill_(0.5)
        d.W_dec.copy_(torch.randn(d_dict, d_model, generator=gen))
        d.normalize_decoder()
    return d


def test_edit_functions_are_the_formulas():
    d = _dictionary()
    x = torch.randn(3, 5, 8)
    assert torch.equal(ablate_latents(d, [])(x), x)
    z = d.encode(x)
    assert (z > 0).sum(-1).max() <= 2
    expected = x - z[..., [1, 4]] @ d.W_dec[[1, 4]]
    assert torch.allclose(ablate_latents(d, [4, 1, 1])(x), expected.detach(), atol=1e-6)
    assert torch.allclose(ablate_latents(d, range(6))(x), (x - d(x)).detach(), atol=1e-6)
    means = torch.arange(6, dtype=torch.float32)
    vec = 2 * (means[2] * d.W_dec[2] + means[3] * d.W_dec[3])
    assert torch.allclose(add_latents(d, [2, 3], means, 2.0)(x), (x + vec).detach(), atol=1e-6)
    u = torch.randn(8)
    projected = project_out(u)(x)
    assert torch.allclose(projected @ u, torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(add_vector(u, 3.0)(x), x + 3 * u)
    with pytest.raises(ConfigError, match="latent ids"):
        ablate_latents(d, [6])
    with pytest.raises(ConfigError, match="zero"):
        project_out(torch.zeros(8))


def test_sae_feature_ablation_keeps_the_error_term():
    sae = _dictionary(d_model=8, d_dict=6, k=6)  # anything with encode() and W_dec
    x = torch.randn(2, 3, 8)
    a = sae.encode(x)
    expected = x - a[..., [0, 5]] @ sae.W_dec[[0, 5]]
    assert torch.allclose(ablate_sae_features(sae, [5, 0])(x), expected.detach(), atol=1e-6)
    assert torch.equal(ablate_sae_features(sae, [])(x), x)


def test_edits_read_a_cpu_dictionary_on_the_activations_device():
    """Dictionaries stay on the CPU; a hook on another device gets a moved copy, once."""
    from lfp_mech.diff.interventions import on_device

    dictionary = _dictionary(d_model=8, d_dict=6, k=2)
    assert on_device(dictionary, torch.device("cpu")) is dictionary
    moved = on_device(dictionary, torch.device("meta"))
    assert moved is not dictionary and moved.W_dec.device.type == "meta"
    assert dictionary.W_dec.device.type == "cpu"  # the original is not moved
    x = torch.randn(2, 3, 8, device="meta")
    for edit in (ablate_latents(dictionary, [1, 4]), ablate_sae_features(dictionary, [1, 4])):
        out = edit(x)
        assert out.device.type == "meta" and out.shape == x.shape
    assert dictionary.W_dec.device.type == "cpu"


def test_dictionary_round_trip(tmp_path):
    d = _dictionary()
    d.save(str(tmp_path / "d.safetensors"))
    again = DiffDictionary.load(str(tmp_path / "d.safetensors"))
    x = torch.randn(4, 8)
    assert again.k == 2 and torch.allclose(again(x), d(x))


def test_grouping_merges_copies_of_one_direction():
    w = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [1.0, 0.01]])
    z = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.5, 0.2, 0.0]])
    groups = group_latents(w, z, z.mean(0), threshold=0.9)
    assert [g.members for g in groups] == [(0, 1), (2,)]  # latent 3 never fires: no group
    assert groups[0].score == pytest.approx(1.0) and groups[0].frequency == 1.0


def test_matched_random_latents_match_frequency_and_avoid_chosen():
    freq = torch.tensor([0.9, 0.1, 0.88, 0.12, 0.5, 0.87, 0.11])
    picks = matched_random_latents(freq, [0, 1], seed=0, pool=2)
    assert len(set(picks)) == 2 and not set(picks) & {0, 1}
    assert picks[0] in (2, 5) and picks[1] in (3, 6)


def test_gap_share_and_permutation_test():
    rng = np.random.default_rng(0)
    tuned, base = 2.0 + rng.normal(0, 0.1, 40), rng.normal(0, 0.1, 40)
    half = 1.0 + rng.normal(0, 0.1, 40)
    share, low, high = gap_share(tuned, base, half, removes=True, n_resamples=500)
    assert share == pytest.approx(0.5, abs=0.05) and low < share < high
    share, *_ = gap_share(tuned, base, tuned, removes=False, n_resamples=200)
    assert share == pytest.approx(1.0)
    assert permutation_p(half, [tuned, tuned], n_permutations=500) < 0.01
    assert permutation_p(tuned, [tuned + rng.normal(0, 0.1, 40)], n_permutations=500) > 0.01


def test_config_validation():
    with pytest.raises(ConfigError, match="diff.top_k"):
        DiffConfig(d_dict=4, top_k=8)
    with pytest.raises(ConfigError, match="diff.ks"):
        DiffConfig(ks=())
    with pytest.raises(ConfigError, match="diff.attribution_fluency"):
        DiffConfig(attribution_fluency=-1.0)
    assert DiffConfig().resolved_layers(30) == [20, 22, 24]
    assert DiffConfig().resolved_layers(2) == [1]  # duplicates dropped
    assert DiffConfig(layers=(5, 3)).resolved_layers(30) == [3, 5]
    with pytest.raises(ConfigError, match="diff.layers"):
        DiffConfig(layers=())
    with pytest.raises(ConfigError, match="diff.layer_fractions"):
        DiffConfig(layer_fractions=(0.5, 1.5))
    with pytest.raises(ConfigError, match=r"diff.layers.*block\(s\) \[30\]"):
        DiffConfig(layers=(3, 30)).check_depth(30, "SmolLM2-135M")


def test_run_diff_writes_tables_dashboards_and_results(tmp_path):
    base, tuned, tok, _ = _planted(layer=1)
    config = DiffConfig(
        n_corpus_prompts=24,
        corpus_new_tokens=6,
        n_eval_prompts=16,
        max_new_tokens=6,
        n_bootstrap=100,
        n_permutations=100,
        n_dashboards=2,
        n_epochs=100,
        **SMALL,
    )
    summary = run_diff(
        (base, tok),
        (tuned, tok),
        load_prompts("reviews", "train")[:24],
        load_prompts("reviews", "test")[:144],
        tmp_path,
        config,
    )
    assert summary["layers"] == [1] and summary["blocks"]["1"]["n_tokens"] > 100
    results = DiffResults(tmp_path)
    table = results.interventions
    assert {
        "tuned", "base", "ablate_top1", "steer_top1", "dom_project", "dom_project_dictionary_blocks",
        "dom_add_x3",
    } <= set(table.condition)  # fmt: skip
    assert summary["n_features"] == 1  # the plant, learnt by copies grouped into one feature
    assert (table.perplexity > 0).all() and table.distinct_2.between(0, 1).all()
    ratio = table.set_index("condition")[["perplexity_vs_tuned", "ppl_ci_low", "ppl_ci_high"]]
    assert tuple(ratio.loc["tuned"]) == pytest.approx((1.0, 1.0, 1.0))
    assert (ratio.ppl_ci_low <= ratio.perplexity_vs_tuned + 1e-9).all()
    assert (ratio.perplexity_vs_tuned <= ratio.ppl_ci_high + 1e-9).all()
    assert len(results.latents) == 1 and results.latents.description.str.len().min() > 0
    top = results.latents.iloc[0]
    assert top.layer == 1 and top.block_rank == 1
    page = results.dashboard(int(top.latent), int(top.layer)).read_text()
    assert "Top activating contexts" in page and "data:image/png;base64" in page
    assert results.dashboard().is_file() and (tmp_path / "dose_response.png").is_file()
    assert results.dictionary().d_dict == 64 and results.dictionary(1).d_dict == 64
    with pytest.raises(LfpMechError, match="no dictionary at block 0"):
        results.dictionary(0)
    completions = results.completions
    assert set(completions.condition) == set(table.condition)
    by = completions.groupby("condition")["completion"].apply(list)
    # the plant undone / added during generation: same prompts and seeds, so the draws are
    # coupled and a text changes only where the plant matters. Measured on 144 prompts over
    # seeds 0-2 and both races (keyed / exponential): the plant leaves 41-53% of the texts as the
    # base model writes them, ablating it gives back 64-86% (a new random stream moves these by
    # ~10 points: the 48-prompt thresholds once pinned here held for seed 0 of one stream only),
    # adding it to the base model gives the tuned copy's 99-100%.
    n = len(by["tuned"])
    assert n == 144
    plant = same(by["tuned"], by["base"])
    undone = same(by["ablate_top1"], by["base"])
    added = same(by["steer_top1"], by["tuned"])
    assert plant.sum() <= 0.6 * n  # the plant changes at least 40% of the texts...
    assert undone.sum() >= 0.6 * n and more_often(undone, plant)  # ...its ablation undoes it
    assert added.sum() >= 0.95 * n and more_often(added, plant)  # ...and adding it redoes it


def same(a: list[str], b: list[str]) -> np.ndarray:
    return np.array([x == y for x, y in zip(a, b, strict=True)])


def more_often(first: np.ndarray, second: np.ndarray) -> bool:
    """Texts matched under ``first`` but not ``second`` outnumber the reverse (exact McNemar
    test, one-sided p < 1e-3)."""
    gained, lost = int((first & ~second).sum()), int((second & ~first).sum())
    return binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue < 1e-3


def test_random_draws_are_distinct_live_features_of_each_block_capped_when_too_few():
    from lfp_mech.diff.scoring import LatentGroup
    from lfp_mech.diff.study import random_draws

    def groups(n, offset):
        return [
            LatentGroup(members=(offset + i,), score=float(30 - i), frequency=i / 30)
            for i in range(n)
        ]

    config = DiffConfig(control_k=5, n_random=3, d_dict=64)
    by_block = {3: groups(30, 0), 7: groups(30, 100)}
    draws = random_draws(by_block, {3: [0, 1, 2], 7: [0, 1]}, config)
    assert len({tuple(sorted(d[3] + d[7])) for d in draws.values()}) == 3  # distinct repeats
    for d in draws.values():  # each block's own features, never a chosen one
        assert len(d[3]) == 3 and min(d[3]) >= 3 and max(d[3]) < 100
        assert len(d[7]) == 2 and min(d[7]) >= 102
    few = random_draws({3: groups(8, 0)}, {3: [0, 1, 2, 3, 4]}, config)
    assert all(len(d[3]) == 4 and min(d[3]) >= 4 for d in few.values())  # capped at 8 // 2


def test_rank_across_blocks_rules():
    from lfp_mech.diff.blocks import RankedFeature, rank_across_blocks
    from lfp_mech.diff.scoring import LatentGroup

    def block(scores):
        return [LatentGroup(members=(i,), score=s, frequency=0.5) for i, s in enumerate(scores)]

    blocks = {20: block([3.0, 1.0]), 28: block([8.0, 6.0, 6.0])}
    order = {
        rule: [(f.layer, f.index) for f in rank_across_blocks(blocks, rule)]
        for rule in ("round_robin", "score", "relative")
    }
    assert order["round_robin"] == [(20, 0), (28, 0), (20, 1), (28, 1), (28, 2)]
    assert order["score"] == [(28, 0), (28, 1), (28, 2), (20, 0), (20, 1)]
    # shares of the block: 0.75, 0.25 | 0.4, 0.3, 0.3
    assert order["relative"] == [(20, 0), (28, 0), (28, 1), (28, 2), (20, 1)]
    assert rank_across_blocks(blocks, "score")[0] == RankedFeature(28, 0)
    with pytest.raises(ValueError, match="unknown cross-block rule"):
        rank_across_blocks(blocks, "best")


def test_plants_at_two_blocks_are_recovered_and_undone_together_by_sequential_dictionaries():
    from lfp_mech.diff import diff_features_by_block

    base, tuned, tok, v0 = _planted(layer=0)
    v1 = torch.randn(base.config.hidden_size, generator=torch.Generator().manual_seed(5))
    v1 = 2.0 * v1 / v1.norm()
    tuned.model.layers[1].mlp.down_proj.bias = nn.Parameter(v1.clone())
    config = DiffConfig(
        layers=(0, 1),
        block_training="sequential",
        cross_block_rank="round_robin",
        corpus_new_tokens=10,
        n_epochs=100,
        **SMALL,
    )
    features = diff_features_by_block(
        (base, tok), (tuned, tok), load_prompts("reviews", "train")[:64], config
    )
    assert features.layers == [0, 1]
    # round robin: each block's best feature first; it is that block's plant
    first, second = features.ranking[:2]
    assert (first.layer, second.layer) == (0, 1)
    # block 1's dictionary was trained with block 0's ablated: it holds block 1's plant alone,
    # not block 0's carried on by the residual stream
    for feature, v in ((first, v0), (second, v1)):
        w = features.blocks[feature.layer].dictionary.W_dec[features.group(feature).members[0]]
        assert float(w.detach() @ v / v.norm()) > 0.99
    batch = tok(load_prompts("reviews", "test")[:16], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    lb, lt = _logprobs(base, batch), _logprobs(tuned, batch)
    planted = (lt - lb).abs()[mask].mean()
    with residual_hooks(tuned, features.ablation(features.top(2))):
        both = (_logprobs(tuned, batch) - lb).abs()[mask].mean()
    with residual_hooks(tuned, features.ablation(features.top(1))):
        one = (_logprobs(tuned, batch) - lb).abs()[mask].mean()
    assert both < 0.05 * planted < one  # both plants undone only with both blocks' features


def _corpus(tok, n: int = 8):
    from lfp_mech.diff.build import tokenize_corpus

    prompts = load_prompts("reviews", "test")[:n]
    completions = [" a good film, and I loved it"] * n
    return tokenize_corpus(tok, prompts, completions, max_len=24)


def _random_dictionary(d_model: int, d_dict: int, k: int) -> DiffDictionary:
    """Small encoder weights (first-order attribution estimates stay close), unit decoder rows."""
    d = DiffDictionary(d_model, d_dict, k=k)
    with torch.no_grad():
        d.W_enc.normal_(0, 0.02)
        d.W_dec.normal_()
        d.normalize_decoder()
    return d


@pytest.mark.parametrize("measure", ["kl", "base_cross_entropy"])
def test_kl_attribution_is_the_first_order_change_of_the_kl_when_a_latent_is_ablated(measure):
    from lfp_mech.diff import kl_attribution

    base, tuned, tok, _ = _planted(layer=0)
    corpus = _corpus(tok)
    d_model = base.config.hidden_size
    torch.manual_seed(0)
    dictionaries = {layer: _random_dictionary(d_model, 16, k=4) for layer in (0, 1)}
    clean = kl_attribution(base, tuned, corpus, dictionaries, measure=measure)
    assert clean.kl > 0 and set(clean.latents) == {0, 1}
    checked = 0
    for layer in (0, 1):
        for f in torch.argsort(clean.latents[layer].abs(), descending=True)[:3].tolist():
            estimate = float(clean.latents[layer][f])
            ablated = kl_attribution(
                base, tuned, corpus, dictionaries, ablated={layer: [f]}, measure=measure
            )
            actual = clean.kl - ablated.kl  # the decrease of the measure
            assert actual == pytest.approx(estimate, rel=0.1, abs=1e-4)
            checked += abs(estimate) > 1e-3
    assert checked >= 2  # not only vanishing effects were compared
    # the tuned model's parameters keep their gradient flags
    assert all(p.requires_grad for p in tuned.parameters())


def test_base_log_probs_over_the_memory_limit_are_recomputed_not_kept(caplog):
    from lfp_mech.diff import kl_attribution
    from lfp_mech.diff.attribution import base_targets

    base, tuned, tok, _ = _planted(layer=0)
    corpus = _corpus(tok, n=5)
    kept = base_targets(base, corpus, batch_size=2)
    assert isinstance(kept, list) and len(kept) == 3  # 5 texts in batches of 2
    with caplog.at_level("INFO", logger="lfp_mech.diff.attribution"):
        lazy = base_targets(base, corpus, batch_size=2, max_bytes=0)
    assert not isinstance(lazy, list) and "recomputed at each round" in caplog.text
    assert len(lazy) == 3 and [t.shape for t in lazy] == [t.shape for t in kept]
    assert all(torch.equal(a, b) for a, b in zip(lazy, kept, strict=True))
    with pytest.raises(IndexError):
        lazy[3]
    torch.manual_seed(0)
    d = _random_dictionary(base.config.hidden_size, 8, k=2)
    a = kl_attribution(base, tuned, corpus, {0: d}, batch_size=2, base_targets=kept)
    b = kl_attribution(base, tuned, corpus, {0: d}, batch_size=2, base_targets=lazy)
    assert a.kl == b.kl > 0 and a.latents[0].abs().sum() > 0
    assert torch.equal(a.latents[0], b.latents[0])


def test_greedy_attribution_discounts_a_change_already_removed_at_a_later_block():
    """Independent dictionaries at blocks 0 and 1 of a model with a plant at each: block 1's
    dictionary learns block 0's plant too (the residual stream carries it on). The first feature
    of the attribution ranking undoes most of both plants; given it is ablated, block 0's feature
    is worth little, while a one-shot attribution would rank it high (a change removed twice).
    Plants of half the residual stream's norm: the first-order estimate holds there."""
    from lfp_mech.diff import diff_features_by_block, kl_attribution
    from lfp_mech.diff.build import tokenize_corpus

    base, tuned, tok, _ = _planted(layer=0, norm=0.1)
    v1 = torch.randn(base.config.hidden_size, generator=torch.Generator().manual_seed(5))
    tuned.model.layers[1].mlp.down_proj.bias = nn.Parameter(0.1 * v1 / v1.norm())
    config = DiffConfig(
        layers=(0, 1),
        cross_block_rank="attribution",
        attribution_rounds=(1,),
        corpus_new_tokens=10,
        n_epochs=100,
        **SMALL,
    )
    assert config.block_training == "independent"
    prompts = load_prompts("reviews", "train")[:64]
    features = diff_features_by_block((base, tok), (tuned, tok), prompts, config)
    first, second = features.ranking[:2]
    assert (first.layer, second.layer) == (1, 0)
    batch = tok(load_prompts("reviews", "test")[:16], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    lb, lt = _logprobs(base, batch), _logprobs(tuned, batch)
    with residual_hooks(tuned, features.ablation(features.top(1))):
        left = (_logprobs(tuned, batch) - lb).abs()[mask].mean()
    assert left < 0.2 * (lt - lb).abs()[mask].mean()
    # the same corpus, measured once without conditioning
    from lfp_mech.diff.build import corpus_from_prompts

    _, completions = corpus_from_prompts((tuned, tok), prompts, config)
    corpus = tokenize_corpus(tok, prompts, completions, config.max_len)
    dictionaries = {layer: block.dictionary for layer, block in features.blocks.items()}
    one_shot = kl_attribution(base, tuned, corpus, dictionaries).latents[0]
    block0 = float(one_shot[list(features.group(second).members)].sum())
    assert features.attribution[first] > block0 > 0  # one-shot: block 0's plant also ranks high
    assert features.attribution[second] < 0.2 * block0  # given block 1's feature: little left


def test_fluency_term_adds_the_base_cross_entropy_attribution_on_the_ablated_policys_texts():
    """With ``fluency`` λ, each measurement also asks for the policy's texts with the features
    taken so far ablated, and a feature's value is its KL attribution on the corpus plus λ × its
    base-cross-entropy attribution on those texts (both with the same latents ablated)."""
    from lfp_mech.diff import kl_attribution
    from lfp_mech.diff.blocks import DiffFeatures, attribution_ranking
    from lfp_mech.diff.dictionary import TrainStats
    from lfp_mech.diff.scoring import LatentGroup

    base, tuned, tok, _ = _planted(layer=0)
    corpus, own = _corpus(tok), _corpus(tok, n=4)
    torch.manual_seed(0)
    d = _random_dictionary(base.config.hidden_size, 8, k=2)
    groups = [LatentGroup(members=(i,), score=0.0, frequency=0.0) for i in range(8)]
    n = torch.zeros(1, dtype=torch.long)
    blocks = {
        0: DiffFeatures(
            d,
            0,
            [],
            TrainStats(0.0, 0.0, 0.0, []),
            {},
            groups,
            torch.zeros(d.W_dec.shape[1]),
            torch.zeros(1, 8),
            n,
            n,
            n,
            n.bool(),
            n[None],
        )
    }
    asked = []

    def own_texts(ablated):
        asked.append({layer: sorted(ids) for layer, ids in ablated.items()})
        return own

    ranking, value, _ = attribution_ranking(
        base, tuned, corpus, blocks, (2,), fluency=0.5, own_texts=own_texts
    )
    assert asked[0] == {}  # the first measurement: nothing ablated yet
    assert asked[1] == {0: sorted(f.index for f in ranking[:2])}  # then the first round's two
    kl = kl_attribution(base, tuned, corpus, {0: d}).latents[0]
    ce = kl_attribution(base, tuned, own, {0: d}, measure="base_cross_entropy").latents[0]
    assert float(ce.abs().max()) > 0.2 * float(kl.abs().max())  # the term is not negligible
    combined = kl + 0.5 * ce
    assert [f.index for f in ranking[:2]] == torch.argsort(combined, descending=True)[:2].tolist()
    assert value[ranking[0]] == pytest.approx(float(combined.max()), rel=1e-4)
    with pytest.raises(ValueError, match="own_texts"):
        attribution_ranking(base, tuned, corpus, blocks, (2,), fluency=0.5)


def test_perplexity_ratio_and_its_bootstrap_interval():
    from lfp_mech.diff.causal import perplexity_ratio

    rng = np.random.default_rng(0)
    reference = [rng.uniform(1, 5, size=n) for n in rng.integers(5, 20, size=32)]
    assert perplexity_ratio(reference, reference) == pytest.approx((1.0, 1.0, 1.0))
    doubled = [r + np.log(2.0) for r in reference]  # every token twice as unlikely
    ratio, low, high = perplexity_ratio(doubled, reference)
    assert ratio == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    noisy = [r + rng.normal(np.log(1.5), 1.0, size=r.size) for r in reference]
    ratio, low, high = perplexity_ratio(noisy, reference)
    pooled = np.exp(np.concatenate(noisy).mean() - np.concatenate(reference).mean())
    assert ratio == pytest.approx(pooled) and low < ratio < high
    assert 1.0 < low and high < 2.5
    empty = [np.zeros(0)] * 4
    assert np.isnan(perplexity_ratio(empty, empty)[0])
