"""The stages of ``lfp-mech run``, registered in order. Each wrapper only moves files:
it reads earlier stages' folders, calls a stage module's public function, writes its own folder.
"""

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from lfp_mech._io import read_json, write_json
from lfp_mech.errors import LfpMechError
from lfp_mech.pipeline import StageContext, build_options, register_stage

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-3


@register_stage("model", description="resolve the base model and check HF ↔ TransformerLens parity")
def model_stage(ctx: StageContext) -> dict[str, Any]:
    """Load the base model both ways and record its card and log-prob parity."""
    from lfp_mech.models import hooked_from_hf, load_hf_model, logprob_parity, parity_tokens

    hf_model, tokenizer = load_hf_model(ctx.config.model, seed=ctx.config.seed)
    hooked = hooked_from_hf(hf_model, tokenizer, device=ctx.config.device)
    parity = logprob_parity(hf_model, hooked, parity_tokens(tokenizer))
    if parity > PARITY_TOLERANCE:
        raise LfpMechError(
            f"{ctx.config.model}: TransformerLens log-probs differ from HF by {parity:.2e} "
            f"(> {PARITY_TOLERANCE}); this architecture is not converted faithfully."
        )
    cfg = hooked.cfg
    card = {
        "model": ctx.config.model,
        "architecture": cfg.original_architecture,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "n_params": sum(p.numel() for p in hf_model.parameters()),
        "parity_max_abs_logprob_diff": parity,
        "mlp_out_hooks": [f"blocks.{i}.hook_mlp_out" for i in range(cfg.n_layers)],
    }
    write_json(ctx.dir / "model.json", card)
    return {k: card[k] for k in ("architecture", "n_layers", "d_model", "n_params")} | {
        "parity": parity
    }


def _with_run_defaults(cls: type, ctx: StageContext):
    """The stage's config dataclass from the run's seed and device and the user's options."""
    options = {"seed": ctx.config.seed, "device": ctx.config.device, **ctx.options}
    valid = {f.name for f in dataclasses.fields(cls)}
    return build_options(
        cls, {k: v for k, v in options.items() if k in valid or k in ctx.options}, ctx.name
    )


def _policy_dir(ctx: StageContext) -> Path:
    return ctx.stage_dir("rlhf") / "policy"


def _completions(ctx: StageContext, policy: str) -> list[str]:
    """Held-out prompt + completion texts sampled in the RLHF stage's evaluation."""
    rows = read_jsonl(ctx.stage_dir("rlhf") / "completions.jsonl")
    return [r["prompt"] + r["completion"] for r in rows if r["policy"] == policy]


def _top_layers(ctx: StageContext) -> list[int]:
    return list(read_json(ctx.stage_dir("divergence") / "summary.json")["top_layers_sorted"])


def small_sae_dirs(run_dir: str | Path) -> dict[str, Path]:
    """``{hook_name: folder}`` of a run's small SAEs (the dictionaries the probes use)."""
    saes_dir = Path(run_dir) / "saes"
    summary = read_json(saes_dir / "summary.json")
    return {
        hook: saes_dir / f"L{layer}_small"
        for layer, hook in zip(summary["layers"], summary["hook_names"], strict=True)
    }


@register_stage("rlhf", requires=["model"], description="RLHF-tune the base model on the reward")
def rlhf_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.rlhf import RLHFConfig, run_rlhf_stage

    return run_rlhf_stage(ctx.config.model, ctx.dir, _with_run_defaults(RLHFConfig, ctx))


@register_stage(
    "divergence", requires=["rlhf"], description="per-layer parameter divergence base ↔ tuned"
)
def divergence_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.divergence import DivergenceConfig, run_divergence_stage

    config = _with_run_defaults(DivergenceConfig, ctx)
    return run_divergence_stage(ctx.config.model, _policy_dir(ctx), ctx.dir, config)


@register_stage(
    "activations",
    requires=["divergence"],
    description="capture MLP outputs of the most divergent layers from the tuned policy",
)
def activations_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.activations import ActivationConfig, activation_corpus, run_activations_stage
    from lfp_mech.data import load_prompts

    config = _with_run_defaults(ActivationConfig, ctx)
    prompts = load_prompts("reviews", "train")
    texts = activation_corpus([], prompts, seed=config.seed)
    return run_activations_stage(
        _policy_dir(ctx), texts, _top_layers(ctx), ctx.dir, config, prompts=prompts
    )


@register_stage(
    "saes", requires=["activations"], description="train SAE-Lens dictionaries (small/big, tied)"
)
def saes_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.saes import SAEConfig, run_saes_stage

    config = _with_run_defaults(SAEConfig, ctx)
    return run_saes_stage(ctx.stage_dir("activations"), _policy_dir(ctx), ctx.dir, config)


@register_stage(
    "probes", requires=["saes"], description="feedback probes on SAE features vs VADER + baselines"
)
def probes_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.probes import ProbesConfig, run_probes_stage

    config = _with_run_defaults(ProbesConfig, ctx)
    return run_probes_stage(
        ctx.config.model,
        _policy_dir(ctx),
        small_sae_dirs(ctx.run_dir),
        _completions(ctx, "tuned"),
        ctx.dir,
        config,
    )


@register_stage(
    "validate",
    requires=["probes"],
    description="describe the LFP features, activation frequency, ablation during generation",
)
def validate_stage(ctx: StageContext) -> dict[str, Any]:
    from lfp_mech.data import load_prompts
    from lfp_mech.validate.ablation import ValidateConfig, run_validate_stage

    config = _with_run_defaults(ValidateConfig, ctx)
    sae_dirs = small_sae_dirs(ctx.run_dir)
    choice = _feature_choice(ctx, sae_dirs, n_per_hook=8)
    write_json(ctx.dir / "feature_choice.json", choice)
    corpus = read_json(ctx.stage_dir("activations") / "heldout" / "texts.json")
    probe_acts, probe_predictions = _probe_inputs(ctx)
    return run_validate_stage(
        ctx.config.model,
        _policy_dir(ctx),
        sae_dirs,
        choice,
        corpus,
        load_prompts("reviews", "test"),
        ctx.dir,
        config,
        probe_acts=probe_acts,
        probe_predictions=probe_predictions,
    )


def _probe_inputs(ctx: StageContext) -> tuple[dict[str, Any] | None, Any]:
    """The probes stage's probe inputs per hook and predicted deltas (paper Table 7's inputs).

    ``(None, None)`` with a warning if the probes stage predates ``probe_inputs.safetensors``;
    Table 7 then uses corpus tokens of VADER words and says so in its ``source`` column.
    """
    from lfp_mech.probes import PROBE_INPUTS_FILE, load_probe_inputs

    path = ctx.stage_dir("probes") / PROBE_INPUTS_FILE
    if not path.is_file():
        logger.warning(
            "%s is missing (probes stage from an older version): Table 7 uses corpus tokens of "
            "VADER words instead of the probe inputs; rerun with --force probes",
            path,
        )
        return None, None
    inputs = load_probe_inputs(path)
    return inputs.features, inputs.predicted_delta


def _feature_choice(
    ctx: StageContext, sae_dirs: dict[str, Path], n_per_hook: int
) -> dict[str, list[int]]:
    """Per hook: the highest-MMCS features and the probe's most positively weighted features."""
    from lfp_mech._io import load_tensors
    from lfp_mech.probes import ordered_hooks

    high = read_json(ctx.stage_dir("saes") / "high_mmcs_features.json")
    choice = {
        entry["hook_name"]: list(entry["top_features"][:n_per_hook]) for entry in high.values()
    }
    weights = load_tensors(ctx.stage_dir("probes") / "probes.safetensors")["tuned_sae.weight"]
    offset = 0
    for hook, _ in ordered_hooks(dict.fromkeys(sae_dirs)):  # the probe's concatenation order
        width = read_json(sae_dirs[hook] / "cfg.json")["d_sae"]
        top = weights[offset : offset + width].abs().argsort(descending=True)[:n_per_hook]
        offset += width
        choice[hook] = sorted(set(choice.get(hook, [])) | {int(i) for i in top})
    if offset != weights.numel():
        raise LfpMechError(
            f"probe has {weights.numel()} weights but the SAEs have {offset} features"
        )
    return choice


@register_stage(
    "irl",
    requires=["probes"],
    description="recover the reward from behaviour (max-margin IRL), compare with the probe, "
    "re-train a policy on the recovered reward",
)
def irl_stage(ctx: StageContext) -> dict[str, Any]:
    """Options: IRLConfig fields, ``preset`` ("default"/"paper"), ``rlhf_steps`` /
    ``rlhf_eval_prompts`` for IRL-RLHF (``rlhf_steps=0`` skips it), and the toxicity task:
    ``toxicity_rlhf_steps`` (GRPO steps of the detoxified expert; 0 skips the task),
    ``toxicity_lr``, ``toxicity_irl_rlhf_steps`` (IRL-RLHF on the toxicity reward, 20; 0 skips) and
    ``toxicity_log_ratio_control`` (default off: on these prompts every reward's binarized
    accuracy is the majority class, and the control costs about a minute of the budget)."""
    from lfp_mech.irl import IRLConfig, run_irl_stage

    options = {"seed": ctx.config.seed, "device": ctx.config.device, **ctx.options}
    preset = options.pop("preset", "default")
    rlhf_steps = int(options.pop("rlhf_steps", 20))
    n_eval = int(options.pop("rlhf_eval_prompts", 128))
    tox_steps = int(options.pop("toxicity_rlhf_steps", 20))
    tox_lr = float(options.pop("toxicity_lr", 1e-4))
    tox_irl_steps = int(options.pop("toxicity_irl_rlhf_steps", 20))
    tox_log_ratio = bool(options.pop("toxicity_log_ratio_control", False))
    config = IRLConfig.preset(preset, **options)
    summary = run_irl_stage(
        ctx.config.model,
        _policy_dir(ctx),
        "vader",
        ctx.dir / "vader",
        config,
        probe_fn=_probe_reward_fn(ctx),
    )
    if rlhf_steps > 0:
        table = _irl_rlhf(
            ctx,
            "vader",
            ctx.dir / "vader",
            ctx.dir / "irl_rlhf",
            _policy_dir(ctx),
            rlhf_steps,
            n_eval,
            config,
        )
        summary["irl_rlhf_true_reward"] = {row["policy"]: row["mean_reward"] for row in table}
    if tox_steps > 0:
        tox_config = dataclasses.replace(config, log_ratio_control=tox_log_ratio)
        tox = _toxicity_task(ctx, tox_config, tox_steps, tox_lr, tox_irl_steps, n_eval)
        summary.update(
            {f"toxicity_{k}": v for k, v in tox.items() if k not in ("task", "reward_model_dir")}
        )
    return summary


def _toxicity_task(
    ctx: StageContext, config: Any, steps: int, lr: float, irl_rlhf_steps: int, n_eval: int
) -> dict[str, Any]:
    """The IRL paper's task: detoxify the base model with GRPO on the offline toxicity reward,
    recover that reward from the detoxified model's behaviour, and compare the policies."""
    from lfp_mech.data import load_prompts
    from lfp_mech.irl import evaluate_policies, run_irl_stage
    from lfp_mech.rewards import get_reward
    from lfp_mech.rlhf import RLHFConfig, train_policy

    out = ctx.dir / "toxicity"
    rlhf_config = RLHFConfig(
        task="toxicity",
        max_steps=steps,
        learning_rate=lr,
        budget_minutes=None,
        n_eval_prompts=n_eval,
        seed=config.seed,
        device=config.device,
    )
    expert = train_policy(
        ctx.config.model,
        get_reward("toxicity"),
        load_prompts("toxicity", "train"),
        rlhf_config,
        out / "rlhf",
    )
    summary = run_irl_stage(ctx.config.model, expert, "toxicity", out, config)
    if irl_rlhf_steps > 0:
        table = _irl_rlhf(
            ctx, "toxicity", out, out / "irl_rlhf", expert, irl_rlhf_steps, n_eval, config, lr=lr
        )
    else:
        table = evaluate_policies(
            {"base": ctx.config.model, "RLHF (true reward)": str(expert)},
            _test_prompts("toxicity", n_eval, config.seed),
            "toxicity",
            out / "policies",
            rlhf_config=rlhf_config,
            stem="policies",
        )
    summary["policy_toxicity"] = " → ".join(
        f"{row['policy']} {row['toxicity_mean']:.4f}" for row in table
    )
    return summary


def _irl_rlhf(
    ctx: StageContext,
    task: str,
    irl_dir: Path,
    out_dir: Path,
    true_policy: Path,
    steps: int,
    n_eval: int,
    config: Any,
    *,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """IRL-RLHF: a policy trained on ``irl_dir``'s recovered reward (into ``out_dir``), compared
    with the base model and ``true_policy`` under the true reward; returns the table rows."""
    from lfp_mech.data import load_prompts
    from lfp_mech.irl import TASKS, irl_rlhf
    from lfp_mech.rlhf import RLHFConfig

    rlhf_config = RLHFConfig(
        task=task,
        max_steps=steps,
        n_eval_prompts=n_eval,
        seed=config.seed,
        device=config.device,
        **({} if lr is None else {"learning_rate": lr}),
    )
    prompt_set = TASKS[task].prompt_set
    result = irl_rlhf(
        ctx.config.model,
        irl_dir / "reward_model",
        load_prompts(prompt_set, "train"),
        rlhf_config,
        out_dir,
        true_policy=true_policy,
        task=task,
        eval_prompts=_test_prompts(prompt_set, n_eval, config.seed),
        device=config.device,
    )
    return result["table"]


def _test_prompts(prompt_set: str, n: int, seed: int) -> list[str]:
    """``n`` held-out prompts of ``prompt_set`` (all of them if the set is smaller)."""
    from lfp_mech.data import load_prompts

    available = len(load_prompts(prompt_set, "test"))
    return load_prompts(prompt_set, "test", n=min(n, available), seed=seed)


def _probe_reward_fn(ctx: StageContext):
    """texts -> the probes stage's reward estimate on the tuned policy (loaded on first use)."""
    loaded: dict[str, Any] = {}

    def estimate(texts):
        from lfp_mech.models import load_model
        from lfp_mech.probes import load_probe, load_saes, probe_reward

        if not loaded:
            loaded["model"] = load_model(_policy_dir(ctx), device=ctx.config.device)
            loaded["saes"] = load_saes(small_sae_dirs(ctx.run_dir), device=ctx.config.device)
            loaded["probe"] = load_probe(ctx.stage_dir("probes") / "probes.safetensors")
        return probe_reward(
            loaded["model"], loaded["saes"], loaded["probe"], texts, device=ctx.config.device
        )

    return estimate


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
