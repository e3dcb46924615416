"""The stages of ``lfp-mech run``, registered in order. Each wrapper only moves files:
it reads earlier stages' folders, calls a stage module's public function, writes its own folder.
"""

import logging
from typing import Any

from lfp_mech._io import write_json
from lfp_mech.errors import LfpMechError
from lfp_mech.pipeline import StageContext, register_stage

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
