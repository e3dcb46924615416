"""Generation tokens/s over forward-pass tokens/s on the same sequences (issue 22).

One left-padded batch of review prefixes (``--batch`` 64), ``--new-tokens`` 24 sampled tokens
(EOS suppressed, so every variant produces the same number of tokens), KV cache on, fp32. Timed
side by side, interleaved:

* ``forward``: one HF forward over the finished sequences (prompt + new tokens), the reference;
* ``HF generate``: ``model.generate`` (the old path of lfp_mech);
* ``lfp_mech plain``: [`sample_batch`][lfp_mech.models.sampling.sample_batch], the shared path
  with its default draw (the keyed race: clocks hashed from a per-row key and the token id, for
  the head of the distribution only);
* ``lfp_mech plain, exponential race``: the same with the race over float64 uniforms for the
  whole vocabulary (``torch.multinomial``'s arithmetic: the tokens of ``HF generate`` for the
  same seed; the default before the keyed race);
* ``lfp_mech plain, multinomial``: the same with HF's ``torch.multinomial`` draw (also
  ``HF generate``'s tokens);
* ``lfp_mech ablated``: the shared path with an SAE-feature ablation on ``--layers``'
  ``hook_mlp_out`` (``x - (acts[..., F] - 0) @ W_dec[F]``, error term kept: validate's
  ``ablate_activation``), random SAE-Lens TopK SAEs (``k`` = 64; the saes stage's default BatchTopK is
  saved as a JumpReLU SAE, whose encoder skips the top-k) of width ``--sae-width`` x d_model,
  ``--n-features`` features each;
* ``lfp_mech steered``: a vector added to ``blocks.{mid}.hook_resid_post``;
* with ``--compile``, ``lfp_mech plain, torch.compile``: the plain path with every one-token
  decoding step through ``torch.compile(model.forward, dynamic=True)`` (an option weighed, not a
  path of the package; its first call's compile time and whether its tokens equal the eager
  path's are printed).

Tokens/s of every variant count the same sequences (batch x (padded prompt + new tokens)), so a
ratio is forward time / generation time. The fp32 GEMM peak is measured in the same run (a
2048x576 @ 576x1536 matmul, SmolLM2's MLP shape), and the forward's achieved GFLOP/s is given as a
fraction of it. Target: plain and ablated >= 0.55x forward.

Same outputs: ``--n-compare`` (256) completions of distinct prompts from each sampler (batches of
``--batch``, the same seeds): the share that the exponential race and HF's multinomial draw make
identical, token for token; and, for the keyed race (another random stream, the same
distribution), the VADER reward and distinct-2 of its completions against the exponential
race's: mean rewards with 95% bootstrap CIs (``scipy.stats.bootstrap``), and permutation tests
(``scipy.stats.permutation_test``) of the difference in mean reward and in distinct-2.

    python benchmarks/bench_generation.py [--model smollm2-135m] [--batch 64] [--new-tokens 24]
        [--compile]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from _common import machine, print_table, report_result, time_rounds
from transformers import GenerationConfig

from lfp_mech.data import load_prompts
from lfp_mech.models.hf_hooks import hf_hooks
from lfp_mech.models.loading import load_hf_model
from lfp_mech.models.sampling import sample_batch


def ablation_hooks(d_model: int, layers: list[int], width: int, n_features: int) -> list:
    from sae_lens import TopKSAE, TopKSAEConfig

    from lfp_mech.validate.ablation import ablate_activation, ablation_of

    hooks = []
    generator = torch.Generator().manual_seed(0)
    for layer in layers:
        torch.manual_seed(layer)
        sae = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=width * d_model, k=64)).eval()
        ids = torch.randperm(width * d_model, generator=generator)[:n_features]
        spec = ablation_of(f"blocks.{layer}.hook_mlp_out", sae, ids)  # validate's zero mode
        hooks.append((spec.hook_name, lambda x, spec=spec: ablate_activation(x, spec)))
    return hooks


def gemm_gflops(repeats: int = 20) -> float:
    a, w = torch.randn(2048, 576), torch.randn(576, 1536)
    a @ w
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return repeats * 2 * 2048 * 576 * 1536 / (time.perf_counter() - start) / 1e9


def compare_samplers(model, tok, n: int, batch: int, new: int) -> None:
    """``n`` completions of distinct prompts from each sampler, same seeds: how many are
    identical token for token between the exponential race and ``torch.multinomial`` (the race
    is ``torch.multinomial``'s draw on a CPU), and the keyed race's reward and distinct-2 against
    the exponential race's (another random stream: the same distribution is what can hold)."""
    prompts = load_prompts("reviews", "train")[:n]
    special = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tokens = {sampler: [] for sampler in ("multinomial", "exponential_race", "keyed_race")}
    for start in range(0, n, batch):
        enc = tok(prompts[start : start + batch], return_tensors="pt", padding=True,
                  padding_side="left")  # fmt: skip
        for sampler, out in tokens.items():
            torch.manual_seed(start)
            with torch.inference_mode():
                out.extend(sample_batch(
                    model, enc["input_ids"], enc["attention_mask"], max_new_tokens=new,
                    do_sample=True, sampler=sampler, **special,
                ))  # fmt: skip
    n_same = sum(
        torch.equal(a, b)
        for a, b in zip(tokens["multinomial"], tokens["exponential_race"], strict=True)
    )
    print(f"\nsame seed: {n_same} of {n} completions ({new} new tokens, base model) identical "
          "between the exponential race and torch.multinomial")  # fmt: skip
    report_result("sampler: identical completions (share)", n_same / n, 1.0)
    compare_distributions(prompts, {
        name: tok.batch_decode([t.tolist() for t in out], skip_special_tokens=True)
        for name, out in tokens.items() if name != "multinomial"
    })  # fmt: skip


def compare_distributions(prompts: list[str], completions: dict[str, list[str]]) -> None:
    """Mean VADER reward (prompt + completion) of each sampler's completions with its 95%
    bootstrap CI, distinct-2 of each, and permutation tests of the keyed race against the
    exponential race (independent draws: different random streams) for both. Distinct-2 gets no
    bootstrap CI: resampling texts with replacement repeats bigrams, which biases it down."""
    from scipy.stats import bootstrap, permutation_test

    from lfp_mech import distinct_n
    from lfp_mech.rewards import get_reward

    reward = get_reward("vader")
    rewards = {}
    print(f"\n{len(prompts)} completions per sampler: mean VADER reward [95% CI], distinct-2")
    for name, texts in completions.items():
        rewards[name] = reward([p + c for p, c in zip(prompts, texts, strict=True)]).numpy()
        ci = bootstrap((rewards[name],), np.mean, random_state=0).confidence_interval
        print(f"  {name:<18} reward {rewards[name].mean():.3f} [{ci.low:.3f}, {ci.high:.3f}]   "
              f"distinct-2 {distinct_n(texts, 2):.3f}")  # fmt: skip
    keyed, old = rewards["keyed_race"], rewards["exponential_race"]
    test = permutation_test(
        (keyed, old), lambda a, b: np.mean(a) - np.mean(b), n_resamples=9999, random_state=0
    )
    texts = completions["keyed_race"] + completions["exponential_race"]
    half = len(completions["keyed_race"])

    def distinct_gap(a, b):  # the data are indices into ``texts``
        return distinct_n([texts[i] for i in a], 2) - distinct_n([texts[i] for i in b], 2)

    d2 = permutation_test(
        (np.arange(half), np.arange(half, len(texts))), distinct_gap, vectorized=False,
        n_resamples=999, random_state=0,
    )  # fmt: skip
    print(f"  keyed - exponential race: mean reward {test.statistic:+.3f} (permutation p = "
          f"{test.pvalue:.2f}), distinct-2 {d2.statistic:+.3f} (p = {d2.pvalue:.2f})")  # fmt: skip
    report_result("keyed race vs exponential race: reward p-value", test.pvalue, 0.05)
    report_result("keyed race vs exponential race: distinct-2 p-value", d2.pvalue, 0.05)


class CompiledDecoder(torch.nn.Module):
    """``model`` whose one-token decoding steps run ``torch.compile(model.forward,
    dynamic=True)`` (one graph for every batch size and cache length); the prefill stays eager.
    An option weighed for issue 22, not a path of the package (see benchmarks/RESULTS.md)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config
        self.step = torch.compile(model.forward, dynamic=True)

    def forward(self, **kwargs):
        one_token = kwargs["input_ids"].shape[1] == 1
        return self.step(**kwargs) if one_token else self.model(**kwargs)


def print_round_ratios(rounds: dict[str, list[float]]) -> None:
    """Each round's forward time over each variant's time in the same round: the spread shows
    how much the machine's load moved the ratio within the run (the RESULT is the ratio of the
    medians)."""
    print("\nratio to the forward pass of the same round (min / median / max over rounds)")
    for name, times in rounds.items():
        if name != "forward":
            per_round = [f / t for f, t in zip(rounds["forward"], times, strict=True)]
            spread = (min(per_round), statistics.median(per_round), max(per_round))
            print(f"  {name:<31}" + " / ".join(f"{r:.2f}" for r in spread))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--layers", default="25,26,27,28,29")
    parser.add_argument("--sae-width", type=int, default=4)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-compare", type=int, default=256)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time decoding through torch.compile(model.forward, dynamic=True)",
    )
    args = parser.parse_args()

    model, tok = load_hf_model(args.model)
    prompts = load_prompts("reviews", "test")[: args.batch]
    batch = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    ids, mask, new = batch["input_ids"], batch["attention_mask"], args.new_tokens
    special = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    sampling = dict(do_sample=True, temperature=1.0, min_new_tokens=new)
    d_model, depth = model.config.hidden_size, model.config.num_hidden_layers
    ablate = ablation_hooks(
        d_model, [int(x) for x in args.layers.split(",")], args.sae_width, args.n_features
    )
    steer_vec = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    steer = [(f"blocks.{depth // 2}.hook_resid_post", lambda x: x + 4.0 * steer_vec)]
    config = GenerationConfig(max_new_tokens=new, top_k=0, use_cache=True, **sampling, **special)

    def ours(hooks=(), sampler="keyed_race", model=model):
        def run():
            torch.manual_seed(0)
            with torch.inference_mode(), hf_hooks(model, hooks):
                return sample_batch(
                    model, ids, mask, max_new_tokens=new, **sampling, **special, sampler=sampler
                )

        return run

    def hf_generate():
        torch.manual_seed(0)
        with torch.inference_mode():
            return model.generate(**batch, generation_config=config)

    full = hf_generate()
    same = {
        sampler: torch.equal(full[:, ids.shape[1] :], ours(sampler=sampler)())
        for sampler in ("multinomial", "exponential_race")
    }
    full_mask = torch.cat([mask, torch.ones(len(prompts), new, dtype=mask.dtype)], dim=1)

    def forward():
        with torch.inference_mode():
            model(input_ids=full, attention_mask=full_mask)

    fns = {
        "forward": forward,
        "HF generate": hf_generate,
        "lfp_mech plain": ours(),
        "lfp_mech plain, exponential race": ours(sampler="exponential_race"),
        "lfp_mech plain, multinomial": ours(sampler="multinomial"),
        "lfp_mech ablated": ours(ablate),
        "lfp_mech steered": ours(steer),
    }
    if args.compile:
        compiled = CompiledDecoder(model)
        fns["lfp_mech plain, torch.compile"] = ours(model=compiled)
        start = time.perf_counter()
        same["torch.compile decode"] = torch.equal(fns["lfp_mech plain"](), ours(model=compiled)())
        print(f"torch.compile: first call (tracing, compiling) {time.perf_counter() - start:.0f} s")
    peak_before = gemm_gflops()
    rounds = time_rounds(fns, repeats=args.repeats)
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    peak = max(peak_before, gemm_gflops())
    n_tokens = full.numel()
    ref = n_tokens / seconds["forward"]
    rows = [(name, n_tokens / s, n_tokens / s / ref) for name, s in seconds.items()]
    n_params = sum(p.numel() for p in model.parameters())
    fwd_gflops = ref * 2 * n_params / 1e9
    print(
        f"machine: {machine()}; model {args.model}; batch {len(prompts)} x ({ids.shape[1]} "
        f"prompt + {new} new) tokens, sampled, KV cache"
    )
    for sampler, equal in same.items():
        if sampler == "torch.compile decode":
            print(f"sample_batch, torch.compile decode == eager (same seed): {equal}")
        else:
            print(f"sample_batch(sampler={sampler!r}) == HF generate (same seed): {equal}")
    print(
        f"fp32 GEMM peak {peak:.1f} GFLOP/s; forward {fwd_gflops:.1f} GFLOP/s "
        f"({fwd_gflops / peak:.2f} of peak, 2 x {n_params / 1e6:.1f}M params per token)"
    )
    print_table("tokens/s over the same sequences (ratio to one forward pass)", rows, "tok/s")
    ratios = dict((name, ratio) for name, _, ratio in rows)
    print_round_ratios(rounds)
    report_result("plain generation / forward", ratios["lfp_mech plain"], 0.55)
    report_result("ablated generation / forward", ratios["lfp_mech ablated"], 0.55)
    report_result("steered generation / forward", ratios["lfp_mech steered"], 0.55)
    if args.n_compare:
        compare_samplers(model, tok, args.n_compare, args.batch, new)


if __name__ == "__main__":
    main()
