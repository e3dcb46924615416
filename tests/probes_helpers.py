"""What the probes tests share: texts with word spans, tiny random SAE-Lens SAEs, a manual A_concat."""

from pathlib import Path

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from lfp_mech import data

HOOK0, HOOK1 = "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"
TEXTS = [
    "The film has wonderful dialogue and long pauses.",
    "It was dreadful.",
    "Her performance in the final scene was extraordinarily moving.",
]
WORDS = ["wonderful", "dreadful", "extraordinarily"]
SPANS = [(t.index(w), t.index(w) + len(w)) for t, w in zip(TEXTS, WORDS, strict=True)]


def make_sae(hook: str | None, d_sae: int, seed: int, d_in: int = 64) -> StandardSAE:
    """A random SAE-Lens SAE with a nonzero encoder bias (so features are not all zero)."""
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.1)
    return sae.eval()


def make_saes() -> dict[str, StandardSAE]:
    """Two SAEs of different widths on the two blocks of the tiny models (32 + 48 features)."""
    return {HOOK0: make_sae(HOOK0, 32, seed=1), HOOK1: make_sae(HOOK1, 48, seed=2)}


def save_saes(saes: dict[str, StandardSAE], folder: Path) -> dict[str, Path]:
    """Each SAE in its SAE-Lens folder under ``folder``: ``{hook: folder}``."""
    dirs = {}
    for hook, sae in saes.items():
        dirs[hook] = folder / hook
        sae.save_model(dirs[hook])
    return dirs


def manual_concat(model, hook_to_sae, text, span):
    """A_concat by hand: one unpadded forward, data.char_span_to_token_span with offset 1 (BOS)."""
    tokens = model.to_tokens(text)  # TL prepends BOS
    _, cache = model.run_with_cache(tokens)
    start, end = data.char_span_to_token_span(model.tokenizer, text, span, offset=1)
    parts = []
    for hook, sae in sorted(hook_to_sae.items(), key=lambda kv: int(kv[0].split(".")[1])):
        acts = cache[hook][0, start:end]
        feats = acts if sae is None else sae.encode(acts)
        parts.append(feats.mean(0))
    return torch.cat(parts)
