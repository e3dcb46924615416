"""Sample completions with SAE features ablated.

[`generate_with_ablation`][lfp_mech.validate.ablated_generation.generate_with_ablation] samples
with an [`ablate_features`][lfp_mech.validate.ablation.ablate_features] ablation active (seeded
per batch, so clean and ablated runs share random numbers), on the fast Hugging Face path when
the model has an HF twin (the same ablation as torch hooks, see
[`hf_hooks`][lfp_mech.models.hf_hooks.hf_hooks]), else with TransformerLens's ``generate``."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from lfp_mech.devices import seeded
from lfp_mech.errors import ConfigError
from lfp_mech.models.generation import generate_texts, hf_twin
from lfp_mech.validate.ablation import (
    AblationSpec,
    ablate_activation,
    ablate_features,
    ablation_cache_id,
    resolve_ablations,
)

__all__ = ["generate_with_ablation"]


def generate_with_ablation(
    model: nn.Module,
    prompts: Sequence[str],
    ablations: AblationSpec | None = None,
    *,
    mode: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    max_new_tokens: int = 20,
    temperature: float | int = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    use_past_kv_cache: bool = True,
    stop_at_eos: bool = True,
) -> list[str]:
    """Completions (new text only, prompt excluded) of ``prompts`` with ``ablations`` active.

    ``ablations=None`` (or ``{}``) generates from the clean model. Sampling uses a seed per batch
    (``seed + batch index``) so clean and ablated runs of the same prompts share random numbers
    (common random numbers make their difference less noisy). ``temperature=0`` is greedy.
    Generation stops at EOS (its text is cut there).

    A model lfp_mech loaded itself (``load_model``, or ``as_hooked_model`` of a name or folder)
    generates on the Hugging Face model it was converted from, the ablation applied as torch
    hooks on the same activations (the shared fast path,
    [`generate_texts`][lfp_mech.models.generation.generate_texts]: prompts tokenized as the
    RLHF stage does, without TransformerLens's prepended BOS; batches of similar length seeded
    ``seed + batch start``). Other models (copies, hand-built ones), and ``use_past_kv_cache``
    or ``stop_at_eos`` off, use TransformerLens's ``generate``.
    """
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("generate_with_ablation: no prompts given")
    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError("batch_size and max_new_tokens must be >= 1")
    twin = hf_twin(model) if use_past_kv_cache and stop_at_eos else None
    if twin is not None:
        return _generate_hf(
            model,
            twin,
            prompts,
            ablations,
            mode,
            means,
            max_new_tokens,
            temperature,
            seed,
            batch_size,
        )
    tokenizer = model.tokenizer
    eos = tokenizer.eos_token_id
    outputs: list[str] = []
    with ablate_features(model, ablations or {}, mode=mode, means=means):
        starts = range(0, len(prompts), batch_size)
        for b, start in enumerate(
            tqdm(starts, desc="ablated generation", disable=None, leave=False)
        ):
            batch = prompts[start : start + batch_size]
            n_prompt = model.to_tokens(batch, padding_side="left").shape[1]
            with seeded(seed + b):
                tokens = model.generate(
                    batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0,
                    use_past_kv_cache=use_past_kv_cache,
                    stop_at_eos=stop_at_eos,
                    return_type="tokens",
                    verbose=False,
                )
            for row in tokens[:, n_prompt:].tolist():
                if stop_at_eos and eos is not None and eos in row:
                    row = row[: row.index(eos)]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    return outputs


def _generate_hf(
    model: nn.Module,
    twin: tuple[Any, Any],
    prompts: list[str],
    ablations: AblationSpec | None,
    mode: str,
    means: Mapping[str, Tensor] | None,
    max_new_tokens: int,
    temperature: float | int,
    seed: int,
    batch_size: int,
) -> list[str]:
    """[`generate_with_ablation`][lfp_mech.validate.ablated_generation.generate_with_ablation] on the HF
    model ``model`` was loaded from: the same ablation as torch hooks, the shared sampling path
    ([`generate_texts`][lfp_mech.models.generation.generate_texts])."""
    specs = resolve_ablations(model, ablations or {}, None, mode, means)
    hooks = [(spec.hook_name, partial(ablate_activation, spec=spec)) for spec in specs]
    hf_model, tokenizer = twin
    texts, _ = generate_texts(
        hf_model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=float(temperature) if temperature > 0 else 1.0,
        batch_size=batch_size,
        seed=seed,
        device=next(hf_model.parameters()).device,
        desc="generate (ablated)" if ablations else "generate",
        hooks=hooks,
        hooks_id=ablation_cache_id(specs),
    )
    return texts
