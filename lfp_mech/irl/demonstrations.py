"""Demonstrations: completions of the same prompts by the expert (RLHF'd) and non-expert models.

The IRL paper's demonstrations are greedy completions of train and test prompts by both models
([`generate_demonstrations`][lfp_mech.irl.demonstrations.generate_demonstrations]; batched
``generate`` with left padding and the KV cache). They are cached as JSONL in the run directory and
reused when the models, prompts and generation settings match."""

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech._io import read_json, read_jsonl, sha256_json, write_json, write_jsonl
from lfp_mech.irl.artifacts import DEMONSTRATIONS_FILE, DEMONSTRATIONS_META_FILE
from lfp_mech.irl.config import IRLConfig
from lfp_mech.models.coerce import ModelLike, as_hf_model

__all__ = [
    "ROLES",
    "SPLITS",
    "Demonstrations",
    "Role",
    "Split",
    "generate_completions",
    "generate_demonstrations",
    "model_stamp",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
Role = Literal["expert", "non_expert"]
ROLES: tuple[Role, Role] = ("expert", "non_expert")
SPLITS: tuple[Split, Split, Split] = ("train", "val", "test")
"""Training, validation (optional: may be absent or empty) and held-out prompts."""


@dataclass(frozen=True)
class Demonstrations:
    """Completions of the same prompts by the expert (RLHF'd) and non-expert (base) models.

    ``completions[(split, role)][i]`` continues ``prompts[split][i]``;
    [`texts`][lfp_mech.irl.demonstrations.Demonstrations.texts] joins them. The "val" split is
    optional (no validation prompts)."""

    prompts: dict[str, list[str]]
    completions: dict[tuple[str, str], list[str]]

    def __post_init__(self) -> None:
        for split in SPLITS:
            if split == "val" and "val" not in self.prompts:
                self.prompts["val"] = []
                for role in ROLES:
                    self.completions[("val", role)] = []
            for role in ROLES:
                got = len(self.completions[(split, role)])
                if got != len(self.prompts[split]):
                    raise ValueError(
                        f"{role} has {got} {split} completions for {len(self.prompts[split])} "
                        "prompts"
                    )

    def texts(self, split: Split, role: Role) -> list[str]:
        """Prompt + completion, the texts the reward model scores."""
        return [
            p + c for p, c in zip(self.prompts[split], self.completions[(split, role)], strict=True)
        ]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able row per completion (the JSONL format)."""
        return [
            {"split": s, "role": r, "index": i, "prompt": p, "completion": c}
            for s in SPLITS
            for r in ROLES
            for i, (p, c) in enumerate(zip(self.prompts[s], self.completions[(s, r)], strict=True))
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> "Demonstrations":
        """The inverse of [`rows`][lfp_mech.irl.demonstrations.Demonstrations.rows]."""
        prompts: dict[str, dict[int, str]] = {s: {} for s in SPLITS}
        comps: dict[tuple[str, str], dict[int, str]] = {(s, r): {} for s in SPLITS for r in ROLES}
        for row in rows:
            prompts[row["split"]][int(row["index"])] = row["prompt"]
            comps[(row["split"], row["role"])][int(row["index"])] = row["completion"]
        return cls(
            prompts={s: [v[i] for i in sorted(v)] for s, v in prompts.items()},
            completions={k: [v[i] for i in sorted(v)] for k, v in comps.items()},
        )


def generate_demonstrations(
    expert: ModelLike,
    non_expert: ModelLike,
    prompts_train: Sequence[str],
    prompts_test: Sequence[str],
    config: IRLConfig,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    prompts_val: Sequence[str] = (),
) -> Demonstrations:
    """Complete the train, validation and test prompts with both models (greedy by default, as
    the paper).

    With ``cache_dir``, the result is written to ``demonstrations.jsonl`` (+ a ``.meta.json``
    holding its key) and reused by later calls whose models (path + weight-file stamps, or a
    parameter checksum for in-memory models), prompts and generation settings match.
    """
    prompts = {"train": list(prompts_train), "val": list(prompts_val), "test": list(prompts_test)}
    if not prompts["train"] or not prompts["test"]:
        raise ValueError("generate_demonstrations needs at least one train and one test prompt")
    meta = {
        "generation": config.generation_key(),
        "expert": model_stamp(expert),
        "non_expert": model_stamp(non_expert),
    }
    key = sha256_json({**meta, "prompts": prompts})
    path = meta_path = None
    if cache_dir is not None:
        path = Path(cache_dir) / DEMONSTRATIONS_FILE
        meta_path = Path(cache_dir) / DEMONSTRATIONS_META_FILE
        if path.exists() and meta_path.exists() and read_json(meta_path).get("key") == key:
            logger.info("reusing demonstrations from %s", path)
            return Demonstrations.from_rows(read_jsonl(path))
    everything = [p for split in SPLITS for p in prompts[split]]
    completions: dict[tuple[str, str], list[str]] = {}
    for role, model_like in zip(ROLES, (expert, non_expert), strict=True):
        model, tokenizer = as_hf_model(model_like, device=config.device, dtype=config.dtype)
        logger.info("generating %d %s completions", len(everything), role)
        out = _complete(model, tokenizer, everything, config)
        start = 0
        for split in SPLITS:
            completions[(split, role)] = out[start : start + len(prompts[split])]
            start += len(prompts[split])
        del model
    demos = Demonstrations(prompts=prompts, completions=completions)
    if path is not None and meta_path is not None:
        write_jsonl(path, demos.rows())
        write_json(meta_path, {"key": key, **meta})
    return demos


def _complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: IRLConfig,
) -> list[str]:
    """[`generate_completions`][lfp_mech.irl.demonstrations.generate_completions] with the
    generation settings of ``config``."""
    return generate_completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.gen_batch_size,
        seed=config.seed,
        device=config.device,
    )


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 24,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> list[str]:
    """Completions (new text only, special tokens dropped) of ``prompts``, in input order.

    Prompts are sorted by length and generated in left-padded batches with the KV cache; with
    ``do_sample`` each batch draws from its own seeded RNG (``seed + batch start``), so results
    do not depend on what else ran before.
    """
    from lfp_mech.models.generation import generate_texts

    completions, _ = generate_texts(
        model.to(device),
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    return completions


def model_stamp(model_like: ModelLike) -> Any:
    """A cheap identity of a model for cache keys: its path and weight-file stamps, or (in
    memory) its class, name and a parameter checksum."""
    if isinstance(model_like, tuple):
        model = model_like[0]
        with torch.no_grad():
            checksum = sum(float(p.double().sum()) for p in model.parameters())
        return {
            "name": str(getattr(model, "name_or_path", "")),
            "class": type(model).__name__,
            "checksum": f"{checksum:.10e}",
        }
    path = Path(str(model_like)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        return {
            "path": str(path.resolve()),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        }
    return {"name": str(model_like)}
