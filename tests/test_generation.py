"""The shared sampling path: TransformerLens hook names applied on the HF model while generating."""

import pytest
import torch

from lfp_mech.errors import ConfigError
from lfp_mech.models.generation import generate_texts
from lfp_mech.models.hf_hooks import decoder_layers, hf_hooks
from lfp_mech.models.tiny import TINY_ARCHITECTURES, build_tiny_model

PROMPTS = ["The film was", "I think that the", "a", "Once upon a time there was"]


def _edits(d_model: int) -> dict[str, list]:
    """Per hook site, an edit that really changes the activation (non-linear in it)."""
    g = torch.Generator().manual_seed(1)
    vector = torch.randn(d_model, generator=g)
    direction = torch.randn(d_model, generator=g)
    direction = direction / direction.norm()

    def ablate_direction(x):  # non-linear in x, like an SAE-feature ablation (and large)
        coef = torch.relu(x @ direction)
        return x - coef[..., None] * direction + 3 * torch.tanh(100 * x)

    return {
        "zero_mlp": [("blocks.0.hook_mlp_out", torch.zeros_like)],
        "ablate_mlp": [("blocks.1.hook_mlp_out", ablate_direction)],
        "steer_post": [("blocks.0.hook_resid_post", lambda x: x + 3 * vector)],
        "scale_pre": [
            ("blocks.1.hook_resid_pre", lambda x: 0.5 * x),
            ("blocks.1.hook_resid_pre", ablate_direction),
        ],
    }


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_hf_hooks_match_transformer_lens_run_with_hooks(arch):
    from lfp_mech import hooked_from_hf

    hf, tok = build_tiny_model(arch, seed=0)
    hf.eval()
    hooked = hooked_from_hf(hf, tok)
    tokens = hooked.to_tokens(PROMPTS[3])
    with torch.no_grad():
        clean = hf(tokens).logits.log_softmax(-1)
        for name, edits in _edits(hf.config.hidden_size).items():
            with hf_hooks(hf, edits):
                ours = hf(tokens).logits.log_softmax(-1)
            theirs = hooked.run_with_hooks(
                tokens, fwd_hooks=[(h, lambda x, hook, f=f: f(x)) for h, f in edits]
            ).log_softmax(-1)
            assert (ours - theirs).abs().max() < 1e-3, (arch, name)
            assert (ours - clean).abs().max() > 1e-2, (arch, name)  # the edit did something
        assert torch.equal(hf(tokens).logits.log_softmax(-1), clean)  # all hooks removed


def test_hooked_generation_matches_transformer_lens_cached_generation(tiny_hf):
    """Greedy decoding with a steering hook and the KV cache: HF + hooks == TL + hooks."""
    from lfp_mech import hooked_from_hf

    hf, tok = tiny_hf
    hooked = hooked_from_hf(hf, tok)
    vector = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(0))
    edit = [("blocks.0.hook_resid_post", lambda x: x + 4 * vector)]
    ours, _ = generate_texts(
        hf, tok, PROMPTS[:1], max_new_tokens=12, do_sample=False, hooks=edit, batch_size=1
    )
    plain, _ = generate_texts(hf, tok, PROMPTS[:1], max_new_tokens=12, do_sample=False)
    with hooked.hooks(fwd_hooks=[(edit[0][0], lambda x, hook: edit[0][1](x))]):
        out = hooked.generate(
            PROMPTS[0], max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False
        )
    assert ours[0] == out.removeprefix(tok.bos_token or "").removeprefix(PROMPTS[0])
    assert ours != plain


def test_generate_without_hooks_unchanged_and_hooks_removed(tiny_hf):
    hf, tok = tiny_hf
    kwargs = dict(max_new_tokens=8, seed=3, batch_size=2)
    before, n_before = generate_texts(hf, tok, PROMPTS, **kwargs)
    again, n_again = generate_texts(hf, tok, PROMPTS, hooks=(), **kwargs)
    assert (before, n_before) == (again, n_again)
    boom = [("blocks.0.hook_mlp_out", lambda x: x + 100.0)]
    edited, _ = generate_texts(hf, tok, PROMPTS, hooks=boom, **kwargs)
    assert edited != before

    def fail(x):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        generate_texts(hf, tok, PROMPTS, hooks=[("blocks.1.hook_resid_post", fail)], **kwargs)
    assert all(not layer._forward_hooks for layer in decoder_layers(hf))
    assert generate_texts(hf, tok, PROMPTS, **kwargs) == (before, n_before)


def test_bad_hook_names_fail_clearly(tiny_hf):
    hf, _ = tiny_hf
    with pytest.raises(ConfigError, match="hook_mlp_out"):
        with hf_hooks(hf, [("blocks.0.attn.hook_z", torch.zeros_like)]):
            pass
    with pytest.raises(ConfigError, match="blocks 0–1"):
        with hf_hooks(hf, [("blocks.7.hook_mlp_out", torch.zeros_like)]):
            pass


@pytest.mark.parametrize("sampler", ["exponential_race", "multinomial"])
@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2", "tiny-neox", "tiny-gemma2"])
def test_sample_batch_draws_what_hf_generate_draws(arch, sampler):
    """Either sampler, same seed -> the same tokens as ``model.generate`` (sampling with
    repetition penalty, minimum length, temperature, top-p; and greedy), left-padded batch: the
    loop reproduces HF's arithmetic exactly, and the race is ``torch.multinomial``'s draw."""
    from transformers import GenerationConfig

    from lfp_mech.models.sampling import sample_batch

    hf, tok = build_tiny_model(arch, seed=0)
    hf.eval()
    batch = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    settings = [
        dict(do_sample=True, temperature=0.7, repetition_penalty=1.3, min_new_tokens=5),
        dict(do_sample=True, temperature=1.0, top_p=0.9),
        dict(do_sample=False, repetition_penalty=1.2),
    ]
    special = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for kwargs in settings:
        top_k = {"top_k": 0} if kwargs["do_sample"] else {}
        config = GenerationConfig(max_new_tokens=16, use_cache=True, **top_k, **kwargs, **special)
        with torch.inference_mode():
            torch.manual_seed(1)
            theirs = hf.generate(**batch, generation_config=config)
            rng_after_theirs = torch.get_rng_state()
            torch.manual_seed(1)
            ours = sample_batch(
                hf, batch.input_ids, batch.attention_mask, max_new_tokens=16, **kwargs,
                **special, sampler=sampler,
            )  # fmt: skip
        assert torch.equal(ours, theirs[:, batch.input_ids.shape[1] :]), kwargs
        assert torch.equal(torch.get_rng_state(), rng_after_theirs), kwargs  # same draws used


def test_exponential_race_draws_from_the_softmax_distribution():
    """The HF-identical draw: token frequencies over 40,000 draws match ``softmax(scores)``
    (chi-square), ``-inf`` tokens are never drawn, and the same seed gives ``torch.multinomial``'s
    tokens, also over a 49,152-token vocabulary with a long tail."""
    from scipy.stats import chisquare

    from lfp_mech.models.sampling import _exponential_race as draw

    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, -float("inf"), 0.5, -3.0, 1.5]])
    probs = torch.softmax(scores.double(), dim=-1)[0]
    torch.manual_seed(0)
    draws = torch.cat([draw(scores.expand(4000, -1)) for _ in range(10)])
    counts = torch.bincount(draws, minlength=scores.shape[1]).double()
    assert counts[4] == 0  # masked token
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts.sum()
    test = chisquare(counts[keep].numpy(), expected.numpy())
    assert test.pvalue > 1e-3, test
    for logits in (scores.expand(64, -1), 4 * torch.randn(64, 49_152)):
        torch.manual_seed(5)
        first = draw(logits)
        torch.manual_seed(5)
        assert torch.equal(first, torch.multinomial(logits.softmax(dim=-1), 1)[:, 0])


def test_exponential_race_evaluates_only_the_clocks_that_can_win():
    """The race computes ``-log1p(-U)`` only where ``p / U`` (an upper bound) can reach the
    winner; it picks the full race's token on peaked, flat, tied and masked rows."""
    from lfp_mech.models.sampling import _clocks, _race_winners

    torch.manual_seed(0)
    logits = torch.randn(256, 4_096) * torch.linspace(0.1, 12.0, 256)[:, None]
    logits[::7, 100:] = -float("inf")  # top-p-like masks
    logits[1::9] = 0.0  # flat rows: every token ties on probability
    for _ in range(20):
        uniforms = torch.rand(logits.shape, dtype=torch.float64)
        uniforms[3::11, :50] = uniforms[3::11, 50:100]  # tied clocks on flat-ish rows
        probs = logits.softmax(dim=-1)
        full = (probs / _clocks(uniforms, probs.dtype)).argmax(dim=-1)
        assert torch.equal(_race_winners(probs, uniforms), full)


def test_keyed_uniforms_are_splitmix64_outputs():
    """Uniform ``id`` of key ``k`` is splitmix64's output ``id`` for seed ``k`` (its reference
    arithmetic in Python integers), top 53 bits, centred in (0, 1): int64 products wrap in
    torch as the unsigned reference does modulo 2**64."""
    from lfp_mech.models.sampling import _keyed_uniforms

    def splitmix64(seed: int, index: int) -> int:
        z = (seed + (index + 1) * 0x9E3779B97F4A7C15) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        return z ^ (z >> 31)

    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF  # the published first output of seed 0
    keys = [0, 1, 12_345_678_901_234, 2**62 - 1, 2**61 + 17]
    ids = [0, 7, 49_151, 3, 262_143]
    expected = [((splitmix64(k, i) >> 11) + 0.5) * 2.0**-53 for k, i in zip(keys, ids, strict=True)]
    assert _keyed_uniforms(torch.tensor(keys), torch.tensor(ids)).tolist() == expected


@pytest.mark.parametrize("head_min", [1e-5, 0.1, 0.3, 0.99])
def test_keyed_race_draws_from_the_softmax_distribution(head_min):
    """The default draw: token frequencies over 40,000 draws (independent keys) match
    ``softmax(scores)`` (chi-square) whichever tokens race one by one (``p >= head_min``) and
    which as the tail group (0.99: the whole vocabulary is the tail); ``-inf`` never drawn."""
    from scipy.stats import chisquare

    from lfp_mech.models.sampling import _keyed_race

    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, -float("inf"), 0.5, -3.0, 1.5]])
    probs = torch.softmax(scores.double(), dim=-1)[0]
    generator = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 2**62, (40_000,), generator=generator)
    draws = _keyed_race(scores.expand(len(keys), -1), keys, head_min=head_min)
    counts = torch.bincount(draws, minlength=scores.shape[1]).double()
    assert counts[4] == 0
    keep = probs > 0
    test = chisquare(counts[keep].numpy(), (probs[keep] * counts.sum()).numpy())
    assert test.pvalue > 1e-3, test


def test_keyed_race_never_draws_a_masked_token():
    """Top-p-like masks (``-inf`` outside a few tokens) leave the tail with no mass at all: the
    tail never wins, whatever the keys, the head threshold and the softmax's rounding."""
    from lfp_mech.models.sampling import _keyed_race

    generator = torch.Generator().manual_seed(0)
    scores = torch.full((20_000, 4_096), -float("inf"))
    scores[:, :3] = torch.randn(20_000, 3, generator=generator) * 4.0
    keys = torch.randint(0, 2**62, (len(scores),), generator=generator)
    for head_min in (1e-5, 0.2):  # at 0.2 the finite tokens below it race in the tail
        assert int(_keyed_race(scores, keys, head_min=head_min).max()) < 3


def test_keyed_race_draws_the_tail_at_its_mass_on_a_long_vocabulary():
    """49,152 tokens, most below the head threshold: the share of draws that land in the tail
    matches the tail's probability mass (binomial test), and head tokens keep their own
    frequencies (chi-square over the head)."""
    from scipy.stats import binomtest, chisquare

    from lfp_mech.models.sampling import HEAD_MIN, _keyed_race

    logits = torch.randn(1, 49_152, generator=torch.Generator().manual_seed(1)) * 2.0
    logits[0, :20] += 9.0  # a peaked head over a long tail
    probs = logits.double().softmax(dim=-1)[0]
    head = probs >= HEAD_MIN
    keys = torch.randint(0, 2**62, (20_000,), generator=torch.Generator().manual_seed(2))
    draws = torch.cat([_keyed_race(logits.expand(2_000, -1), k) for k in keys.split(2_000)])
    in_tail = int((~head[draws]).sum())
    assert 0.01 < probs[~head].sum() < 0.5
    assert binomtest(in_tail, len(draws), float(probs[~head].sum())).pvalue > 1e-3
    head_ids = head.nonzero()[:, 0]
    counts = torch.bincount(draws, minlength=len(probs))[head_ids].double()
    top = probs[head_ids] >= 1e-3  # enough draws per cell for a chi-square test
    expected = probs[head_ids][top] / probs[head_ids][top].sum() * counts[top].sum()
    assert chisquare(counts[top].numpy(), expected.numpy()).pvalue > 1e-3


def test_keyed_race_couples_paired_runs():
    """Two runs with the same keys and slightly different logits (an ablation's size of change)
    draw the same token in nearly every row; with independent keys they agree only as often as
    two independent draws do (``sum p^2``)."""
    from lfp_mech.models.sampling import _keyed_race

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4_096, 5_000, generator=generator) * 3.0
    nudged = logits + 0.01 * torch.randn(logits.shape, generator=generator)
    keys = torch.randint(0, 2**62, (len(logits),), generator=generator)
    same = (_keyed_race(logits, keys) == _keyed_race(nudged, keys)).double().mean()
    other = torch.randint(0, 2**62, (len(logits),), generator=generator)
    independent = (_keyed_race(logits, keys) == _keyed_race(nudged, other)).double().mean()
    collision = (logits.softmax(dim=-1) ** 2).sum(dim=-1).mean()
    assert same > 0.98
    assert abs(independent - collision) < 0.05


def test_sample_batch_keyed_race_is_seeded_and_respects_the_processors(tiny_hf):
    """The default draw through ``sample_batch``: the same seed gives the same tokens, another
    seed other tokens; EOS never before ``min_new_tokens``; greedy decoding is the argmax path
    whichever sampler is named."""
    from lfp_mech.models.sampling import sample_batch

    hf, tok = tiny_hf
    batch = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    special = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    def draw(seed, **kwargs):
        torch.manual_seed(seed)
        with torch.inference_mode():
            return sample_batch(
                hf, batch.input_ids, batch.attention_mask, max_new_tokens=12, **special, **kwargs
            )

    first, again, other = draw(0), draw(0), draw(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not (draw(3, min_new_tokens=12) == tok.eos_token_id).any()
    greedy = [draw(4, do_sample=False, sampler=s) for s in ("keyed_race", "multinomial")]
    assert torch.equal(*greedy)


def test_completion_cache_hits_identical_requests_only(tiny_hf, tmp_path, monkeypatch):
    from lfp_mech.models import generation
    from lfp_mech.models.completions import completion_cache

    hf, tok = tiny_hf
    kwargs = dict(max_new_tokens=6, batch_size=2)
    calls = []
    sample_all = generation._sample_all
    monkeypatch.setattr(
        generation, "_sample_all", lambda *a, **k: calls.append(1) or sample_all(*a, **k)
    )
    plain = generate_texts(hf, tok, PROMPTS, seed=1, **kwargs)
    assert len(calls) == 1  # no cache outside a run
    with completion_cache(tmp_path / "completions"):
        first = generate_texts(hf, tok, PROMPTS, seed=1, **kwargs)
        again = generate_texts(hf, tok, PROMPTS, seed=1, **kwargs)
        assert first == again == plain and len(calls) == 2  # the second one hit
        assert len(list((tmp_path / "completions").glob("*.json"))) == 1
        generate_texts(hf, tok, PROMPTS, seed=2, **kwargs)  # another seed: a miss
        assert len(calls) == 3
        steer = [("blocks.0.hook_resid_post", lambda x: x + 1.0)]
        hooked = generate_texts(hf, tok, PROMPTS, seed=1, hooks=steer, hooks_id="plus1", **kwargs)
        assert len(calls) == 4 and hooked != plain  # hooks: a miss
        generate_texts(hf, tok, PROMPTS, seed=1, hooks=steer, hooks_id="plus1", **kwargs)
        assert len(calls) == 4  # the same hooks id: a hit
        generate_texts(hf, tok, PROMPTS, seed=1, hooks=steer, **kwargs)
        generate_texts(hf, tok, PROMPTS, seed=1, hooks=steer, **kwargs)
        assert len(calls) == 6  # unnamed hooks: never cached
        handle = hf.get_output_embeddings().register_forward_hook(lambda m, i, out: -out)
        try:  # a hook the caller registered on the model itself: never served from the cache
            edited = generate_texts(hf, tok, PROMPTS, seed=1, **kwargs)
        finally:
            handle.remove()
        assert len(calls) == 7 and edited != plain
        with torch.no_grad():
            next(hf.parameters()).add_(0.5)  # other weights: a miss
        generate_texts(hf, tok, PROMPTS, seed=1, **kwargs)
        assert len(calls) == 8
    assert len(list((tmp_path / "completions").glob("*.json"))) == 4


def test_fast_generate_reproduces_trl_rollout_generation(tiny_hf, monkeypatch):
    """The GenerationConfig GRPO builds (lfp_mech's RLHF settings): patched ``generate`` returns
    exactly HF's tokens with the multinomial sampler (the same distribution with the default);
    unsupported settings fall back to HF's own ``generate``."""
    from transformers import GenerationConfig

    from lfp_mech.models import sampling
    from lfp_mech.models.sampling import fast_generate

    calls = []
    original = sampling.sample_batch
    monkeypatch.setattr(
        sampling, "sample_batch", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    hf, tok = tiny_hf
    batch = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    trl_like = GenerationConfig(
        max_new_tokens=12,
        do_sample=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id],
        temperature=0.9,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.2,
        cache_implementation=None,
        min_new_tokens=4,
        disable_compile=True,
    )
    beams = GenerationConfig(max_new_tokens=6, num_beams=2, do_sample=False)
    with torch.no_grad():
        expected = []
        for config in (trl_like, beams):
            torch.manual_seed(3)
            expected.append(hf.generate(**inputs, generation_config=config))
        fast_generate(hf, sampler="multinomial")
        for config, theirs in zip((trl_like, beams), expected, strict=True):
            torch.manual_seed(3)
            assert torch.equal(hf.generate(**inputs, generation_config=config), theirs)
    assert len(calls) == 1  # the TRL-like call took the fast path, beam search did not
