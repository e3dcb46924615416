"""Controls: what an IRL accuracy should be compared with.

* [`supervised_ceiling`][lfp_mech.irl.controls.supervised_ceiling] — a logistic probe *told the true
  labels*, on the same features: what a linear head on this representation can reach from these
  training texts.
* [`log_ratio_reward`][lfp_mech.irl.controls.log_ratio_reward] — the policy's implicit reward
  ``log π/π_ref``, which reads the two models' probabilities instead of their texts (no training);
  [`log_ratio_control`][lfp_mech.irl.controls.log_ratio_control] thresholds it like an IRL reward.
* [`expressed_lexicon_bound`][lfp_mech.irl.controls.expressed_lexicon_bound] — for a lexicon reward:
  the true lexicon kept on the words whose use the expert moved, the part of the reward its
  behaviour shows."""

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel

from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.evaluation import IRLEval, fit_threshold, irl_metrics
from lfp_mech.irl.readout import bos_tokenize, length_sorted_batches
from lfp_mech.models.coerce import ModelLike, as_hf_model

__all__ = [
    "LEXICON_SUBSETS",
    "expressed_lexicon_bound",
    "log_ratio_control",
    "log_ratio_reward",
    "supervised_ceiling",
]

logger = logging.getLogger(__name__)

LEXICON_SUBSETS: tuple[str, ...] = ("seen", "expressed")
"""The word sets [`expressed_lexicon_bound`][lfp_mech.irl.controls.expressed_lexicon_bound] keeps,
from most to least generous."""


def supervised_ceiling(
    train_features: Float[Tensor, "train d_model"],
    train_true: Float[Tensor, " train"],
    heldout_features: Float[Tensor, "held d_model"],
    heldout_true: Float[Tensor, " held"],
    *,
    C: float = 0.1,
) -> IRLEval:
    """Control: a logistic probe *told the true labels*, on the untrained reward model's features.

    Fitted on the training texts' binarized true reward (standardized features, L2 strength
    ``1/C``), evaluated like an IRL reward (decision function, threshold 0) on the held-out
    texts. It bounds what a linear head on this representation can reach from these training
    texts, so an IRL accuracy far below it is the objective's fault and one near it is the
    representation's or the texts' limit.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = (train_true > 0).cpu().numpy()
    if labels.all() or not labels.any():
        nan = float("nan")
        blank = {f.name: nan for f in dataclasses.fields(IRLEval)}
        return IRLEval(**blank | {"n": len(heldout_true), "threshold": 0.0})
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(train_features.double().numpy(), labels)
    scores = torch.as_tensor(clf.decision_function(heldout_features.double().numpy()))
    return irl_metrics(scores, heldout_true, 0.0)


def expressed_lexicon_bound(
    expert_texts: Sequence[str],
    non_expert_texts: Sequence[str],
    heldout_texts: Sequence[str],
    heldout_true: Float[Tensor, " held"],
    *,
    lexicon: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Control for a lexicon reward: how much of it the demonstrations reveal *at all*.

    The true reward (``lexicon``, default VADER's, summed over
    [`lfp_mech.rewards.words`][lfp_mech.rewards.words]) is kept only on some words, and the held-out
    texts are scored with that partial lexicon (threshold 0, like the true reward):

    * ``"seen"``: the words that occur in any training demonstration (expert or non-expert).
    * ``"expressed"``: the words whose count moved the way their valence says: the expert uses
      a positive word more often than the non-expert, or a negative word less often. This is
      the part of the reward the behaviour shows; a learned reward reaches further only by
      generalising from these words to others through its representation.

    Returns ``{subset: {"n_words": ..., **IRLEval.as_dict(), "scores": tensor}}``. An IRL
    accuracy near ``"expressed"`` means the demonstrations, not the reward model, are the
    limit. Only meaningful when the true reward is this lexicon sum (the ``"vader"`` task).
    """
    from lfp_mech.rewards import vader_lexicon, words

    lexicon = vader_lexicon() if lexicon is None else lexicon
    expert_counts = _word_counts(expert_texts, lexicon)
    non_expert_counts = _word_counts(non_expert_texts, lexicon)
    keep = {
        "seen": set(expert_counts) | set(non_expert_counts),
        "expressed": {
            w for w in lexicon if (expert_counts[w] - non_expert_counts[w]) * lexicon[w] > 0
        },
    }
    heldout_words = [words(t) for t in heldout_texts]
    out: dict[str, Any] = {}
    for subset in LEXICON_SUBSETS:
        kept = keep[subset]
        scores = torch.tensor(
            [sum(lexicon[w] for w in ws if w in kept) for ws in heldout_words], dtype=torch.float64
        )
        metrics = irl_metrics(scores, heldout_true.float().cpu(), 0.0).as_dict()
        out[subset] = {"n_words": len(kept), **metrics, "scores": scores.float()}
    return out


def _word_counts(texts: Sequence[str], lexicon: Mapping[str, float]) -> Counter[str]:
    from lfp_mech.rewards import words

    return Counter(w for t in texts for w in words(t) if w in lexicon)


@torch.no_grad()
def log_ratio_reward(
    policy: ModelLike,
    reference: ModelLike,
    texts: Sequence[str],
    *,
    max_length: int = 192,
    batch_size: int = 16,
    device: str = "cpu",
) -> Float[Tensor, " text"]:
    """Control: the policy's *implicit* reward, ``mean_t [log π(y_t|y_<t) − log π_ref(y_t|y_<t)]``.

    KL-regularised RLHF has the closed-form optimum ``π ∝ π_ref · exp(r / β)``, so ``β log π/π_ref``
    recovers the reward up to a per-prompt constant (the inverse that DPO trains). It needs the two
    models' probabilities rather than only their texts, and no training: a reference point for what
    the max-margin reward recovers from behaviour alone. Tokens are BOS-prefixed and truncated like
    [`RewardModel.tokenize`][lfp_mech.irl.reward_model.RewardModel.tokenize]; the mean over a text's
    tokens (BOS excluded) keeps short and long texts comparable."""
    texts = list(texts)
    if not texts:
        raise ValueError("log_ratio_reward needs at least one text")
    # float32 whatever the run's dtype: the control is a small difference of two models'
    # log-probs, which bf16 rounding (~1e-2) would swamp
    policy_model, tokenizer = as_hf_model(policy, device=device)
    reference_model, _ = as_hf_model(reference, device=device)
    input_ids, mask = bos_tokenize(tokenizer, texts, max_length)
    out = torch.zeros(len(texts))
    for idx, width in length_sorted_batches(mask, batch_size, desc="log-ratio"):
        ids, m = input_ids[idx, :width].to(device), mask[idx, :width].to(device)
        ratio = _token_logprobs(policy_model, ids, m) - _token_logprobs(reference_model, ids, m)
        weights = m[:, 1:].to(ratio.dtype)
        out[idx] = ((ratio * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)).float().cpu()
    return out


def _token_logprobs(
    model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch next"]:
    """log p(token_t | tokens_<t) for t = 1..pos-1 (padding positions hold garbage; mask them)."""
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    targets = rearrange(input_ids[:, 1:], "batch next -> batch next 1")
    return rearrange(logprobs.gather(-1, targets), "batch next 1 -> batch next")


def log_ratio_control(
    expert: ModelLike,
    base: ModelLike,
    train_texts: Sequence[str],
    train_true: Float[Tensor, " train"],
    heldout_texts: Sequence[str],
    heldout_true: Float[Tensor, " held"],
    config: IRLConfig,
) -> tuple[Float[Tensor, " held"], dict[str, float | int]]:
    """[`log_ratio_reward`][lfp_mech.irl.controls.log_ratio_reward] on the held-out texts,
    thresholded like an IRL reward (the cut fitted on the training texts); returns the held-out
    scores and their metrics."""
    train_texts = list(train_texts)
    scores = log_ratio_reward(
        expert,
        base,
        train_texts + list(heldout_texts),
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
        device=config.device,
    )
    fit, held = scores[: len(train_texts)], scores[len(train_texts) :]
    threshold = fit_threshold(fit, train_true > 0, config.threshold_method)
    metrics = irl_metrics(held, heldout_true, threshold).as_dict()
    logger.info("log-ratio control (no training): acc %.3f", metrics["acc"])
    return held, metrics
