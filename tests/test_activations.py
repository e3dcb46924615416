"""Hooked activation capture on tiny-llama: exact values, BOS/pad excluded, streamed reader,
the stage in a run directory and its results class."""

import math

import pytest
import torch

from lfp_mech._io import read_json, write_json
from lfp_mech.activations import (
    ActivationConfig,
    ActivationsResults,
    ActivationStore,
    activation_corpus,
    capture_activations,
    capture_train_heldout,
    hook_name,
    tokenization,
)
from lfp_mech.activations import stage as activations_stage
from lfp_mech.activations.corpus import source_prompt, split_corpus
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.runner.config import RunConfig, StagesConfig
from lfp_mech.stage_api import StageContext

TEXTS = [
    "The film opens with a long shot of the city at night.",
    "I loved it.",
    "A slow, quiet drama about two brothers who run a farm in the hills.",
    "Bad.",
    "The soundtrack was composed by a young musician from Lisbon, and it shows.",
    "We watched it twice.",
    "Nothing happens for an hour, then everything happens at once.",
]


@pytest.mark.parametrize("kind", ["mlp_out", "mlp_post"])
def test_captured_activations_equal_run_with_cache(tiny_model, tmp_path, kind):
    config = ActivationConfig(hook=kind, batch_size=3, shard_tokens=17, n_tokens=10_000)
    store = capture_activations(tiny_model, TEXTS, [0, 1], tmp_path / "store", config)
    text_index, position = store.token_index()
    assert (position >= 1).all(), "BOS position must be excluded"
    expected_total = sum(tiny_model.to_tokens(t).shape[1] - 1 for t in TEXTS)
    assert store.n_tokens == expected_total == text_index.shape[0]
    for layer in (0, 1):
        name = hook_name(layer, kind)
        stored = store.load_all(name)
        width = tiny_model.cfg.d_model if kind == "mlp_out" else tiny_model.cfg.d_mlp
        assert stored.shape == (expected_total, width) == (store.n_tokens, store.d_in_of(name))
        for i, text in enumerate(TEXTS):
            _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(text), names_filter=[name])
            reference = cache[name][0, 1:]  # drop BOS
            rows = text_index == i
            assert torch.equal(position[rows].sort().values, torch.arange(1, rows.sum() + 1))
            got = stored[rows][position[rows].argsort()]
            torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)


def test_shards_bounded_and_reader_yields_every_token_once(tiny_model, tmp_path):
    config = ActivationConfig(batch_size=2, shard_tokens=16)
    store = capture_activations(tiny_model, TEXTS, [1], tmp_path / "s", config)
    meta = read_json(tmp_path / "s" / "store.json")
    assert len(meta["shards"]) == math.ceil(store.n_tokens / 16)
    assert all(s["n_tokens"] == 16 for s in meta["shards"][:-1])
    name = store.hook_names[0]
    everything = store.load_all(name)
    for seed in (0, 1):
        batches = list(store.iter_batches(name, 5, shuffle=True, seed=seed))
        assert all(b.shape[0] == 5 for b in batches[:-1])
        got = torch.cat(batches)
        assert got.shape == everything.shape
        # the same multiset of rows: compare after sorting by a fingerprint
        key = torch.randn(everything.shape[1], dtype=torch.float64)
        assert torch.allclose(
            (got.double() @ key).sort().values, (everything.double() @ key).sort().values
        )
    unshuffled = torch.cat(list(store.iter_batches(name, 7, shuffle=False)))
    assert torch.equal(unshuffled, everything)
    shuffled = torch.cat(list(store.iter_batches(name, 7, shuffle=True, seed=0)))
    assert not torch.equal(shuffled, everything)
    dropped = list(store.iter_batches(name, 5, drop_last=True))
    assert all(b.shape[0] == 5 for b in dropped)
    assert store.load_all(name, max_tokens=20).shape[0] == 20


def test_max_tokens_stops_after_the_text_reaching_it(tiny_model, tmp_path):
    store = capture_activations(
        tiny_model, TEXTS, [0], tmp_path / "s", ActivationConfig(n_tokens=20, batch_size=4)
    )
    lengths = [tiny_model.to_tokens(t).shape[1] - 1 for t in TEXTS]
    cumulative = [sum(lengths[: i + 1]) for i in range(len(lengths))]
    n_texts = next(i + 1 for i, c in enumerate(cumulative) if c >= 20)
    assert store.n_tokens == cumulative[n_texts - 1]
    assert store.meta["n_texts"] == n_texts


def test_context_length_truncates(tiny_model, tmp_path):
    config = ActivationConfig(context_length=4)
    store = capture_activations(tiny_model, TEXTS, [0], tmp_path / "s", config)
    _, position = store.token_index()
    assert position.max() == 3
    assert store.n_tokens == sum(min(tiny_model.to_tokens(t).shape[1] - 1, 3) for t in TEXTS)


def test_clear_errors(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"out of range.*layers 0–1"):
        capture_activations(tiny_model, TEXTS, [2], tmp_path / "s")
    with pytest.raises(ConfigError, match="no texts"):
        capture_activations(tiny_model, [], [0], tmp_path / "s")
    with pytest.raises(ConfigError, match="no layers"):
        capture_activations(tiny_model, TEXTS, [], tmp_path / "s")
    config = ActivationConfig()
    config.hook = "resid"  # set after __init__: the test run type-checks __init__'s arguments
    with pytest.raises(ConfigError, match=r"activations.hook = 'resid': must be one of"):
        config.__post_init__()
    with pytest.raises(ConfigError, match=r"activations.context_length = 1: must be >= 2"):
        ActivationConfig(context_length=1)
    with pytest.raises(LfpMechError, match="not an activation store"):
        ActivationStore(tmp_path)
    store = capture_activations(tiny_model, TEXTS[:2], [0], tmp_path / "s")
    with pytest.raises(ConfigError, match="not in"):
        store.load_all("blocks.1.hook_mlp_out")


def test_activation_corpus_mixes_and_dedups():
    corpus = activation_corpus(["a b", "c d", "a b"], ["p", "", "q"], seed=0)
    assert sorted(corpus) == ["a b", "c d", "p", "q"]
    assert corpus == activation_corpus(["a b", "c d"], ["p", "q"], seed=0)
    with pytest.raises(ConfigError, match="empty"):
        activation_corpus([], [" "])


def test_stage_splits_and_tops_up_with_policy_samples(tiny_hf, tmp_path):
    hf, tok = tiny_hf
    checkpoint = tmp_path / "policy"
    hf.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)
    config = ActivationConfig(
        n_tokens=150, heldout_tokens=40, max_new_tokens=8, shard_tokens=64, batch_size=8
    )
    summary = capture_train_heldout(
        checkpoint, TEXTS[:2], [1], tmp_path / "acts", config, prompts=["The film", "I think"]
    )
    assert summary["n_sampled_completions"] > 0
    assert summary["n_train_tokens"] >= 150 and summary["n_heldout_tokens"] >= 40
    train, heldout = (
        ActivationStore(tmp_path / "acts/train"),
        ActivationStore(tmp_path / "acts/heldout"),
    )
    assert train.hook_names == heldout.hook_names == ["blocks.1.hook_mlp_out"]
    assert not set(train.texts()) & set(heldout.texts())
    assert summary["n_train_tokens"] == train.n_tokens
    assert summary["n_heldout_tokens"] == heldout.n_tokens


def test_no_top_up_without_prompts_and_clear_error_when_all_texts_are_held_out(tiny_hf, tmp_path):
    hf, tok = tiny_hf
    checkpoint = tmp_path / "policy"
    hf.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)
    config = ActivationConfig(n_tokens=10_000, heldout_tokens=30, batch_size=8)
    summary = capture_train_heldout(checkpoint, TEXTS, [0], tmp_path / "acts", config)
    assert summary["n_sampled_completions"] == 0
    assert summary["n_train_tokens"] + summary["n_heldout_tokens"] == sum(
        len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS
    )
    config = ActivationConfig(heldout_tokens=10_000, top_up=False)
    with pytest.raises(ConfigError, match="held-out split"):
        capture_train_heldout(checkpoint, TEXTS, [0], tmp_path / "acts2", config)


def _run_dir(tmp_path, tiny_hf, top_layers):
    """A run directory with what the activations stage reads: the policy and the top layers."""
    hf, tok = tiny_hf
    run_dir = tmp_path / "run"
    hf.save_pretrained(run_dir / "rlhf" / "policy")
    tok.save_pretrained(run_dir / "rlhf" / "policy")
    write_json(
        run_dir / "divergence" / "summary.json",
        {"top_layers": top_layers, "top_layers_sorted": sorted(top_layers)},
    )
    return run_dir


def test_stage_run_in_a_run_directory_and_results(tiny_hf, tmp_path):
    run_dir = _run_dir(tmp_path, tiny_hf, [1, 0])
    options = ActivationConfig(n_tokens=200, heldout_tokens=60, shard_tokens=64, batch_size=16)
    config = RunConfig(model="tiny-llama", stages=StagesConfig(activations=options))
    ctx = StageContext(run_dir, "activations", config, manifest={"stages": {}})
    summary = activations_stage.run(ctx)
    assert summary["layers"] == [0, 1]
    assert summary["hook_names"] == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert summary["n_sampled_completions"] == 0  # the 790 review prompts are enough
    assert read_json(run_dir / "activations" / "summary.json") == summary

    results = ActivationsResults(run_dir / "activations")
    assert results.exists and results.layers == [0, 1]
    assert results.hook_names == summary["hook_names"]
    assert results.train_store.n_tokens == summary["n_train_tokens"] >= 200
    assert results.heldout_store.n_tokens == summary["n_heldout_tokens"] >= 60
    assert results.heldout_store.hook_names == results.hook_names
    heldout_texts = results.heldout_texts()
    assert heldout_texts and not set(heldout_texts) & set(results.train_texts())
    assert results.config["n_tokens"] == 200
    assert summary["heldout_prompts_disjoint"] and summary["n_heldout_prompts"] > 0
    # the base model (the run's model, tiny-llama seed 0 = this policy) on exactly the same tokens
    assert results.has_base and summary["base_model"] == "tiny-llama"
    for split in ("train", "heldout"):
        tuned, base = results.store(split), results.store(split, "base")
        assert base.n_tokens == tuned.n_tokens and base.texts() == tuned.texts()
        for a, b in zip(tuned.token_index(), base.token_index(), strict=True):
            assert torch.equal(a, b)
        hook = results.hook_names[1]
        torch.testing.assert_close(base.load_all(hook), tuned.load_all(hook))
    with pytest.raises(ConfigError, match="model must be"):
        results.store("train", "reference")


def test_heldout_texts_share_no_prompt_with_training_texts(tiny_hf):
    hf, tok = tiny_hf
    prompts = ["The film", "I think", "This movie", "A story", "My friend", "The plot", "We saw"]
    config = ActivationConfig(n_tokens=150, heldout_tokens=40, max_new_tokens=8, batch_size=8)
    split = split_corpus(prompts, hf, tok, config, prompts=prompts)
    assert split.n_sampled > 0 and split.heldout and split.train

    def sources(texts):
        return {source_prompt(text, prompts) for text in texts}

    # completions of a prompt go where the prompt goes: no held-out token comes from a prompt
    # (or a completion of a prompt) that training saw
    assert not sources(split.heldout) & sources(split.train)
    assert sources(split.heldout) == set(split.heldout_prompts)
    assert sources(split.train) == set(split.train_prompts)
    assert any(text not in prompts for text in split.heldout)  # topped up with completions
    assert source_prompt("I think so", ["I", "I think"]) == "I think"
    assert source_prompt("elsewhere", prompts) == "elsewhere"


def test_results_without_heldout_store_say_what_to_do(tiny_model, tmp_path):
    capture_activations(tiny_model, TEXTS, [0], tmp_path / "acts" / "train")
    results = ActivationsResults(tmp_path / "acts")
    assert not results.has_heldout
    assert results.train_store.layers == [0]
    with pytest.raises(LfpMechError, match="heldout_tokens > 0"):
        _ = results.heldout_store


@pytest.mark.slow
def test_capture_on_smollm2_matches_run_with_cache(smollm2, tmp_path):
    texts = ["The film opens at night.", "I watched this movie with my family on a rainy day."]
    store = capture_activations(smollm2, texts, [3], tmp_path / "s", ActivationConfig())
    text_index, position = store.token_index()
    stored = store.load_all("blocks.3.hook_mlp_out")
    for i, text in enumerate(texts):
        tokens = smollm2.to_tokens(text)
        assert tokens[0, 0] == 1  # TL prepends <|im_start|>
        _, cache = smollm2.run_with_cache(
            tokens, names_filter=["blocks.3.hook_mlp_out"], stop_at_layer=4
        )
        rows = text_index == i
        assert rows.sum() == tokens.shape[1] - 1
        got = stored[rows][position[rows].argsort()]
        torch.testing.assert_close(got, cache["blocks.3.hook_mlp_out"][0, 1:], atol=1e-4, rtol=1e-4)


def test_token_ids_are_compact_and_equal_to_tokenize(tiny_model, monkeypatch):
    monkeypatch.setattr(tokenization, "TOKENIZE_CHUNK", 3)  # several chunks, one partial
    texts = [*TEXTS, ""]
    expected = tokenization.tokenize_texts(tiny_model.tokenizer, texts, 6)
    ids = tokenization.TokenIds(tiny_model.tokenizer, texts, 6)
    assert ids.flat.dtype == torch.int32 and ids.flat.numel() == sum(map(len, expected))
    assert ids.lengths == [len(e) for e in expected]
    assert [ids[i] for i in range(len(texts))] == expected
    assert tokenization.token_counts(tiny_model.tokenizer, texts, 6) == ids.lengths
    assert tokenization.take_until([5, 4, 5, 2], 9) == [0, 1]  # stops once the limit is reached
    assert tokenization.take_until([5, 4, 5, 2], 10) == [0, 1, 2]
    assert tokenization.take_until([3, 0, 4], 0) == [0, 2]  # no limit; empty texts skipped


def test_tokenize_for_model_prepends_bos_pads_and_masks(tiny_model):
    tok = tiny_model.tokenizer
    tokens, mask = tokenization.tokenize_for_model(tok, ["I loved it.", "", "Bad."], 128)
    assert tokens.shape[0] == 2, "empty texts are dropped"
    assert (tokens[:, 0] == tokenization.bos_id(tok)).all()
    for row, text in enumerate(["I loved it.", "Bad."]):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert int(mask[row].sum()) == len(ids) + 1
        assert tokens[row, 1 : len(ids) + 1].tolist() == ids
        assert (tokens[row, len(ids) + 1 :] == tokenization.pad_id(tok)).all()
    reference = tiny_model.to_tokens("I loved it.")
    assert torch.equal(tokens[0, : reference.shape[1]], reference[0])
    with pytest.raises(ConfigError, match="no non-empty texts"):
        tokenization.tokenize_for_model(tok, ["", ""])


def test_lazy_package_exports_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, lfp_mech.activations as a, lfp_mech.saes as s; "
        "a.ActivationConfig; s.SAEConfig; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert a.hook_name(3) == 'blocks.3.hook_mlp_out'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
