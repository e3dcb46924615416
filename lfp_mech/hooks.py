"""TransformerLens hook names: the one place that builds and parses them.

Every config, file and table of lfp_mech names activations by TransformerLens hook names
(``blocks.{layer}.hook_mlp_out``, ``blocks.{layer}.mlp.hook_post``, ``hook_embed``).
"""

import re
from collections.abc import Iterable
from typing import Literal

from lfp_mech.errors import ConfigError

__all__ = [
    "HOOK_TEMPLATES",
    "HookSite",
    "block_of_hook",
    "hook_name",
    "layer_of_hook",
    "sort_hooks",
]

HookSite = Literal["mlp_out", "mlp_post"]
HOOK_TEMPLATES: dict[str, str] = {
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
}
"""Hook site -> hook-name template: the MLP output (d_model) and the MLP's hidden units (d_mlp)."""

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def hook_name(layer: int, site: str = "mlp_out") -> str:
    """The TransformerLens hook name of ``site`` at ``layer`` (``blocks.3.hook_mlp_out``)."""
    if site not in HOOK_TEMPLATES:
        raise ConfigError(f"hook site must be one of {sorted(HOOK_TEMPLATES)}, got {site!r}")
    return HOOK_TEMPLATES[site].format(layer=layer)


def layer_of_hook(hook: str) -> int | None:
    """The block index of a hook name (``blocks.7.hook_mlp_out`` → 7); None outside the blocks
    (``hook_embed``, ``ln_final.hook_normalized``)."""
    match = _BLOCK.match(hook)
    return int(match.group(1)) if match else None


def block_of_hook(hook: str) -> int:
    """The block index of a hook that must lie inside a block;
    [`ConfigError`][lfp_mech.errors.ConfigError] otherwise."""
    layer = layer_of_hook(hook)
    if layer is None:
        raise ConfigError(
            f"hook {hook!r} is not inside a transformer block: use blocks.{{layer}}.hook_mlp_out"
        )
    return layer


def sort_hooks(hooks: Iterable[str]) -> list[str]:
    """Hooks in model order: those outside the blocks (embeddings) first, then by block index."""
    return sorted(hooks, key=lambda hook: (_position(hook), hook))


def _position(hook: str) -> int:
    layer = layer_of_hook(hook)
    return -1 if layer is None else layer
