"""Preference tuning with TRL's ``DPOTrainer``, and its preference pairs (offline or from the hub).

The paper's helpful/harmless (Anthropic HH-RLHF) and toxicity (toxic-dpo) tasks used DPO.
[`train_dpo`][lfp_mech.rlhf.dpo.train_dpo] runs it on ``{prompt, chosen, rejected}`` pairs, either
from those hub datasets ([`load_preference_pairs`][lfp_mech.rlhf.dpo.load_preference_pairs]) or,
offline, from pairs made by sampling the base model several times per prompt and ranking the samples
by a reward ([`make_preference_pairs`][lfp_mech.rlhf.dpo.make_preference_pairs])."""

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lfp_mech.errors import ConfigError, HubUnavailableError, LfpMechError
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.rlhf.config import PREFERENCE_DATASETS, DPOConfigLite
from lfp_mech.rlhf.logs import DPO_LOG_COLUMNS, DPO_LOG_KEYS
from lfp_mech.rlhf.sampling import RewardLike, check_prompts, sample_completions, score_texts
from lfp_mech.rlhf.session import GuardCallback, TrainingSession, policy_metadata, trainer_kwargs

logger = logging.getLogger(__name__)

__all__ = ["load_preference_pairs", "make_preference_pairs", "train_dpo"]


def train_dpo(
    base: ModelLike,
    pairs: Sequence[Mapping[str, Any]],
    config: DPOConfigLite,
    out_dir: str | os.PathLike[str],
) -> Path:
    """Preference-tune ``base`` with TRL's ``DPOTrainer``; return the policy dir.

    Args:
        base: a registered model name, a local HF checkpoint dir, or ``(hf_model, tokenizer)``.
        pairs: dicts with ``prompt``, ``chosen`` and ``rejected`` texts (``chosen``/``rejected`` are
            completions of ``prompt``), e.g. from
            [`make_preference_pairs`][lfp_mech.rlhf.dpo.make_preference_pairs] (offline) or
            [`load_preference_pairs`][lfp_mech.rlhf.dpo.load_preference_pairs] (hub).
        config: [`DPOConfigLite`][lfp_mech.rlhf.config.DPOConfigLite].
        out_dir: folder for ``checkpoints/``, ``train_log.csv``
            ([`DPO_LOG_COLUMNS`][lfp_mech.rlhf.logs.DPO_LOG_COLUMNS]) and ``policy/`` (same layout
            and resume rule as [`lfp_mech.rlhf.train_policy`][lfp_mech.rlhf.grpo.train_policy])."""
    rows = _check_pairs(pairs)
    out_dir = Path(out_dir)
    model, tokenizer = as_hf_model(base, seed=config.seed, copy_model=True)
    session = TrainingSession(out_dir, DPO_LOG_COLUMNS, DPO_LOG_KEYS, config.budget_minutes)
    metadata = policy_metadata(base, config, "dpo") | {"n_pairs": len(rows)}
    if session.finished(config.max_steps):
        return session.export_checkpoint(tokenizer, metadata)

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(max_length=config.max_length, **trainer_kwargs(config, session.checkpoint_dir))
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[GuardCallback(session)],
    )
    return session.train_and_export(
        trainer, tokenizer, metadata, keep_checkpoints=config.keep_checkpoints
    )


def make_preference_pairs(
    model_or_path: ModelLike,
    prompts: Sequence[str],
    reward: RewardLike,
    n_samples: int = 4,
    *,
    n_new_tokens: int = 20,
    min_new_tokens: int = 8,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
) -> list[dict[str, Any]]:
    """Offline DPO data: sample ``n_samples`` completions per prompt, pair the best with the worst.

    Completions are ranked by ``reward(prompt + completion)``; prompts whose samples all score
    the same carry no preference and are dropped. Each pair is
    ``{"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}``. ``dtype``: sample
    with the model in that precision (None: float32 or as given).
    """
    if n_samples < 2:
        raise ConfigError(f"n_samples must be >= 2 (best vs worst), got {n_samples}")
    prompts = check_prompts(prompts, need=1)
    model, tokenizer = as_hf_model(model_or_path, device=device, seed=seed, dtype=dtype)
    repeated = [p for p in prompts for _ in range(n_samples)]
    completions, _ = sample_completions(
        model, tokenizer, repeated,
        n_new_tokens=n_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
        repetition_penalty=1.0, batch_size=batch_size, seed=seed, device=device,
        desc="preference samples",
    )  # fmt: skip
    scores = score_texts(reward, [p + c for p, c in zip(repeated, completions, strict=True)])
    pairs = []
    for i, prompt in enumerate(prompts):
        group = range(i * n_samples, (i + 1) * n_samples)
        best = max(group, key=lambda j: scores[j])
        worst = min(group, key=lambda j: scores[j])
        if scores[best] > scores[worst]:
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": completions[best],
                    "rejected": completions[worst],
                    "chosen_reward": scores[best],
                    "rejected_reward": scores[worst],
                }
            )
    logger.info(
        "%d preference pairs from %d prompts (%d ties dropped)",
        len(pairs),
        len(prompts),
        len(prompts) - len(pairs),
    )
    if not pairs:
        raise LfpMechError(
            "every prompt's samples got the same reward, so there are no preference pairs: use "
            "more samples per prompt (n_samples), more prompts, or a reward that varies"
        )
    return pairs


def load_preference_pairs(
    name: str, split: str = "train", *, n: int | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """The paper's DPO data from the hub: "hh-rlhf" (Anthropic HH-RLHF) or "toxic-dpo".

    HH-RLHF rows are whole dialogues; the shared prefix up to the last ``"\\n\\nAssistant:"`` is the
    prompt and the two final answers are chosen/rejected. toxic-dpo (unalignment/toxic-dpo-v0.2) has
    prompt/chosen/rejected columns; its "chosen" answer is the toxic one (the paper trained toward
    it). Raises [`HubUnavailableError`][lfp_mech.errors.HubUnavailableError] offline, naming the
    offline alternative."""
    if name not in PREFERENCE_DATASETS:
        raise ConfigError(
            f"unknown preference dataset {name!r}; hub sets: {', '.join(PREFERENCE_DATASETS)}. "
            "Offline, build pairs with make_preference_pairs(...) (preference_data='offline')."
        )
    from lfp_mech.models import hub_reachable

    dataset_id = PREFERENCE_DATASETS[name]
    if not hub_reachable():
        raise HubUnavailableError(
            f"preference dataset {name!r} ({dataset_id}) needs the Hugging Face hub, which is "
            "unreachable (offline). Use the offline alternative: pairs sampled from the base "
            "model and ranked by a reward (make_preference_pairs, or preference_data='offline')."
        )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except (OSError, ValueError) as err:
        raise HubUnavailableError(
            f"could not load {dataset_id!r} ({err}); use preference_data='offline'"
        ) from err
    indices = list(range(len(ds)))
    if n is not None:
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(ds), generator=generator)[:n].tolist()
    return [_preference_row(name, ds[i]) for i in indices]


def _preference_row(name: str, row: Mapping[str, Any]) -> dict[str, str]:
    if name == "toxic-dpo":
        return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    marker = "\n\nAssistant:"
    cut = row["chosen"].rfind(marker) + len(marker)
    return {
        "prompt": row["chosen"][:cut],
        "chosen": row["chosen"][cut:],
        "rejected": row["rejected"][row["rejected"].rfind(marker) + len(marker) :],
    }


def _check_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if not pairs:
        raise ConfigError("no preference pairs: DPO needs at least one {prompt, chosen, rejected}")
    rows = []
    for i, pair in enumerate(pairs):
        missing = {"prompt", "chosen", "rejected"} - set(pair)
        if missing:
            raise ConfigError(
                f"preference pair {i} lacks {sorted(missing)}; each pair needs "
                "'prompt', 'chosen' and 'rejected' texts"
            )
        rows.append({k: str(pair[k]) for k in ("prompt", "chosen", "rejected")})
    return rows
