"""The ``model`` stage: resolve the base model, load it both ways, check log-prob parity.

Before any stage of a run runs, its config's
[`check_environment`][lfp_mech.models.config.ModelConfig.check_environment] reads the model's HF
config and fails with one line if TransformerLens cannot hook the architecture or if a stage
option names a decoder block the model does not have
([`check_depths`][lfp_mech.config_base.check_depths]): the run stops before anything is written.

Writes ``model.json`` (the model card: architecture, sizes, parity, the MLP-output hooks, the
run's dtype) and ``summary.json``.

The parity gate compares the float32 conversion (a property of the conversion, not of rounding);
with a lower-precision run dtype the model is also loaded and converted in that dtype on the run's
device, and its parity recorded (``parity_in_dtype``: rounding makes it larger, ~1e-2 in bf16).
"""

import logging
import math
from typing import Any

from lfp_mech._io import write_json
from lfp_mech.devices import torch_dtype
from lfp_mech.errors import LfpMechError
from lfp_mech.models.loading import (
    hooked_from_hf,
    load_hf_model,
    logprob_parity,
    parity_tokens,
)
from lfp_mech.models.results import CARD_FILE
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Load the model as HF and TransformerLens models and record its card and parity (its
    architecture and the run's block options were checked before the run started)."""
    name, options = ctx.config.model, ctx.options
    hf_model, tokenizer = load_hf_model(name, seed=ctx.config.seed)
    hooked = hooked_from_hf(hf_model, tokenizer, device=ctx.device)
    logger.info(
        "%s: %s with %d decoder blocks", name, hooked.cfg.original_architecture, hooked.cfg.n_layers
    )
    parity = logprob_parity(hf_model, hooked, parity_tokens(tokenizer))
    if parity > options.parity_tolerance:
        raise LfpMechError(
            f"{name}: TransformerLens log-probs differ from HF by {parity:.2e} (> "
            f"model.parity_tolerance {options.parity_tolerance}); this architecture is not "
            "converted faithfully"
        )
    parity_in_dtype = parity
    if ctx.dtype != "float32":
        del hooked
        hf_model, tokenizer = load_hf_model(
            name, seed=ctx.config.seed, device=ctx.device, dtype=torch_dtype(ctx.dtype)
        )
        hooked = hooked_from_hf(hf_model, tokenizer, device=ctx.device, dtype=hf_model.dtype)
        parity_in_dtype = logprob_parity(hf_model, hooked, parity_tokens(tokenizer))
        if not math.isfinite(parity_in_dtype):
            raise LfpMechError(
                f"{name} in {ctx.dtype} gives non-finite log-probs: use --set dtype=float32"
            )
    cfg = hooked.cfg
    card = {
        "model": name,
        "architecture": cfg.original_architecture,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "n_params": sum(p.numel() for p in hf_model.parameters()),
        "parity_max_abs_logprob_diff": parity,
        "dtype": ctx.dtype,
        "device": ctx.device,
        "parity_in_dtype": parity_in_dtype,
        "hooked_dtype": str(cfg.dtype).removeprefix("torch."),
        "mlp_out_hooks": [f"blocks.{i}.hook_mlp_out" for i in range(cfg.n_layers)],
    }
    write_json(ctx.dir / CARD_FILE, card)
    summary = {k: card[k] for k in ("architecture", "n_layers", "d_model", "n_params")}
    summary |= {"parity": parity, "dtype": ctx.dtype}
    write_json(ctx.dir / SUMMARY_FILE, summary)
    return summary
