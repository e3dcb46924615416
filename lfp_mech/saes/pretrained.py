"""Reuse SAEs instead of training them: SAE-Lens releases, hub repos and local SAE folders.

``--set saes.pretrained=SOURCE`` makes the saes stage load its dictionaries from ``SOURCE``:

* a **SAE-Lens release** (a name in SAE-Lens's ``pretrained_saes.yaml``, e.g.
  ``pythia-70m-deduped-mlp-sm``): ``sae_lens.SAE.from_pretrained(release, sae_id)`` for the ids
  named after the captured hooks (``blocks.3.hook_mlp_out``, or ``blocks.3.hook_mlp_out/...``).
  Needs the hub, and the release's model must be the run's model;
* a **hub repo** in SAE-Lens's layout (one folder per SAE id with ``cfg.json`` and
  ``sae_weights.safetensors``, as ``lfp-mech push`` uploads): downloaded, then read as a folder;
* a **local folder** holding SAE-Lens SAE folders at any depth (a run's ``saes/`` folder, a
  ``lfp-mech push --local-dir`` folder, SAEs saved with ``save_inference_model``): each SAE is
  matched to a captured hook by its ``cfg.json``'s ``metadata.hook_name``. Works offline.

Per hook, the SAEs nearest the top of the source are candidates; the one labelled ``small`` by
lfp_mech (or else the narrowest) is the small dictionary the probes read, the one labelled ``big``
(or else the widest, if wider) the big one for the MMCS tables. ``saes.pretrained_ids`` restricts
the candidates to the named SAE ids (release ids, or folder paths inside the source).
"""

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.hooks import HOOK_TEMPLATES

__all__ = [
    "PretrainedSAE",
    "check_pretrained",
    "find_pretrained",
    "load_pretrained",
    "pretrained_kind",
    "reuse_pretrained",
    "scan_folder",
]

logger = logging.getLogger(__name__)

SAE_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")
"""The files of one SAE in SAE-Lens's hub layout (``runner_cfg.json`` aside)."""
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class PretrainedSAE:
    """One SAE of a source, as its ``cfg.json`` describes it (no weights loaded)."""

    sae_id: str
    """Its id: the release's SAE id, or its folder path inside the source."""
    hook: str
    """The hook it reads (``cfg.metadata.hook_name``)."""
    d_in: int
    d_sae: int
    label: str = ""
    """``"small"``/``"big"`` when lfp_mech trained it, else empty."""
    folder: Path | None = None
    """Its folder (local sources)."""

    @property
    def depth(self) -> int:
        return self.sae_id.count("/")


def pretrained_kind(source: str) -> str:
    """``"folder"``, ``"release"`` (in SAE-Lens's ``pretrained_saes.yaml``) or ``"repo"`` (a hub
    repo id); a one-line error for anything else."""
    if Path(source).expanduser().is_dir():
        return "folder"
    if source in _directory():
        return "release"
    if _REPO_ID.fullmatch(source) and not source.startswith((".", "/")):
        return "repo"
    raise ConfigError(
        f"saes.pretrained = {source!r}: not a folder, a SAE-Lens release (see "
        "https://decoderesearch.github.io/SAELens/latest/pretrained_saes/) or a hub repo id"
    )


def check_pretrained(source: str, model: str, hook_site: str = "mlp_out") -> None:
    """What can be checked before any stage runs: the source exists; a release is for the run's
    ``model`` and has SAEs on ``hook_site``; the hub is reachable when the source needs it."""
    from lfp_mech.hub import hub_reachable

    kind = pretrained_kind(source)
    if kind == "folder":
        if not scan_folder(Path(source).expanduser()):
            raise ConfigError(
                f"saes.pretrained = {source!r}: no SAE-Lens SAE in that folder (no cfg.json with "
                "sae_weights.safetensors beside it)"
            )
        return
    if kind == "release":
        entry = _directory()[source]
        _check_release_model(source, entry.model, model)
        pattern = re.compile(HOOK_TEMPLATES[hook_site].replace(".", r"\.").format(layer=r"\d+"))
        if not any(pattern.match(sae_id) for sae_id in entry.saes_map):
            raise ConfigError(
                f"saes.pretrained = {source!r}: the release has no SAE on "
                f"{HOOK_TEMPLATES[hook_site].format(layer='N')} (activations.hook = "
                f"{hook_site!r}); its SAE ids: {_some(entry.saes_map)}"
            )
    if not hub_reachable():
        what = "a SAE-Lens release" if kind == "release" else "a hub repo"
        raise ConfigError(
            f"saes.pretrained = {source!r} is {what} on the Hugging Face hub, which is not "
            "reachable (offline or HF_HUB_OFFLINE set): download it where the hub is reachable "
            "and pass its local folder instead"
        )


def find_pretrained(
    source: str, hooks: Sequence[str], ids: Sequence[str] = ()
) -> dict[str, dict[str, PretrainedSAE]]:
    """``{hook: {"small": sae, "big": sae}}`` (``"big"`` only where the source has a wider one)
    for every hook in ``hooks``; a one-line error naming a hook with no SAE in the source."""
    kind = pretrained_kind(source)
    if kind == "release":
        available = _release_saes(source, hooks, ids)
    else:
        folder = Path(source).expanduser() if kind == "folder" else _download(source)
        available = scan_folder(folder, ids)
    by_hook: dict[str, list[PretrainedSAE]] = {}
    for sae in available:
        by_hook.setdefault(sae.hook, []).append(sae)
    missing = [hook for hook in hooks if hook not in by_hook]
    if missing:
        raise ConfigError(
            f"saes.pretrained = {source!r} has no SAE for {', '.join(missing)} (its SAEs read: "
            f"{_some(sorted(by_hook)) or 'nothing'}); capture other layers or hooks, or name "
            "the SAEs with saes.pretrained_ids"
        )
    return {hook: _roles(by_hook[hook]) for hook in hooks}


def load_pretrained(
    source: str, chosen: Mapping[str, Mapping[str, PretrainedSAE]], device: str = "cpu"
) -> dict[tuple[str, str], Any]:
    """``{(hook, size): SAE}``: the SAEs [`find_pretrained`][lfp_mech.saes.pretrained.find_pretrained]
    chose, loaded (SAE-Lens ``SAE``s in eval mode, ``cfg.metadata.hook_name`` set)."""
    from sae_lens import SAE

    from lfp_mech.saes.io import load_sae

    loaded = {}
    for hook, roles in chosen.items():
        for size, entry in roles.items():
            if entry.folder is not None:
                sae = load_sae(entry.folder, device)
            else:
                sae = SAE.from_pretrained(source, entry.sae_id, device=device).eval()
            sae.cfg.metadata.hook_name = hook
            loaded[(hook, size)] = sae
    return loaded


def reuse_pretrained(
    store: Any, hooks: Mapping[int, str], out_dir: Path, config: Any
) -> tuple[dict[tuple[int, str], Path], bool]:
    """The saes stage's reuse step: find the SAEs of ``config.pretrained`` for ``hooks``
    (``{layer: hook}`` of the activation ``store``), check their width against the store, and
    save them where the stage saves trained ones (``L{layer}_{size}/``, with a ``training.json``
    naming the source), so everything downstream reads them as it reads trained SAEs.

    Returns ``({(layer, size): folder}, tied)``, ``tied`` when every SAE's encoder is its
    decoder's transpose."""
    import torch

    from lfp_mech.saes.artifacts import sae_folder
    from lfp_mech.saes.io import save_sae

    source = config.pretrained
    chosen = find_pretrained(source, list(hooks.values()), config.pretrained_ids)
    for hook, roles in chosen.items():
        for entry in roles.values():
            if entry.d_in != store.d_in_of(hook):
                raise ConfigError(
                    f"saes.pretrained = {source!r}: SAE {entry.sae_id} reads {entry.d_in}-wide "
                    f"activations but {hook} of the run's model is {store.d_in_of(hook)} wide: "
                    "those SAEs are for another model"
                )
    loaded = load_pretrained(source, chosen, config.device)
    paths, tied = {}, True
    for layer, hook in hooks.items():
        for size, entry in chosen[hook].items():
            sae = loaded[(hook, size)]
            tied = tied and torch.equal(sae.W_enc, sae.W_dec.T)
            path = Path(out_dir) / sae_folder(layer, size)
            info = pretrained_info(entry, source) | {"layer": layer, "size": size}
            paths[(layer, size)] = save_sae(sae, path, info)
            logger.info(
                "reused SAE %s for %s (%s, d_sae %d)", entry.sae_id, hook, size, entry.d_sae
            )
    return paths, bool(tied)


def scan_folder(root: Path, ids: Sequence[str] = ()) -> list[PretrainedSAE]:
    """Every SAE-Lens SAE folder under ``root`` (``cfg.json`` + ``sae_weights.safetensors``),
    restricted to the folder paths ``ids`` when given."""
    found = []
    for cfg_path in sorted(root.rglob("cfg.json")):
        folder = cfg_path.parent
        if not (folder / "sae_weights.safetensors").is_file():
            continue
        sae_id = folder.relative_to(root).as_posix()
        if ids and sae_id not in ids:
            continue
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        metadata = cfg.get("metadata") or {}
        hook = metadata.get("hook_name") or cfg.get("hook_name")
        if not hook:
            logger.warning("%s has no hook name in cfg.json: skipped", folder)
            continue
        label = (metadata.get("lfp_mech") or {}).get("size", "")
        found.append(
            PretrainedSAE(sae_id, hook, int(cfg["d_in"]), int(cfg["d_sae"]), label, folder)
        )
    return found


def _roles(candidates: list[PretrainedSAE]) -> dict[str, PretrainedSAE]:
    top = min(sae.depth for sae in candidates)
    nearest = sorted((s for s in candidates if s.depth == top), key=lambda s: (s.d_sae, s.sae_id))
    labelled = {sae.label: sae for sae in nearest if sae.label in ("small", "big")}
    small = labelled.get("small", nearest[0])
    big = labelled.get("big", nearest[-1])
    roles = {"small": small}
    if big is not small and ("big" in labelled or big.d_sae > small.d_sae):
        roles["big"] = big
    return roles


def _release_saes(release: str, hooks: Sequence[str], ids: Sequence[str]) -> list[PretrainedSAE]:
    """The release's SAEs on ``hooks`` (ids ``hook`` or ``hook/...``, or ``ids``), their sizes
    read from the hub's ``cfg.json``."""
    from sae_lens.loading.pretrained_sae_loaders import get_sae_lens_config_from_hf

    entry = _directory()[release]
    wanted = list(ids) or [
        sae_id
        for sae_id in entry.saes_map
        if any(sae_id == hook or sae_id.startswith(f"{hook}/") for hook in hooks)
    ]
    found = []
    for sae_id in wanted:
        if sae_id not in entry.saes_map:
            raise ConfigError(
                f"saes.pretrained_ids: {sae_id!r} is not in release {release!r}; its ids: "
                f"{_some(entry.saes_map)}"
            )
        try:
            cfg = get_sae_lens_config_from_hf(entry.repo_id, entry.saes_map[sae_id])
        except Exception as err:  # offline, the file is gone: huggingface_hub raises many kinds
            raise LfpMechError(f"cannot read {release}/{sae_id} from the hub: {err}") from err
        hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name") or sae_id
        found.append(PretrainedSAE(sae_id, hook, int(cfg["d_in"]), int(cfg["d_sae"])))
    return found


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = [f"*{name}" for name in SAE_FILES]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # huggingface_hub raises many kinds; all mean "cannot get it"
        raise LfpMechError(f"cannot download the SAEs of hub repo {repo_id!r}: {err}") from err


def _check_release_model(release: str, release_model: str, model: str) -> None:
    """A one-line error when the release's SAEs were trained on another model than the run's."""
    if Path(model).expanduser().is_dir():
        logger.warning(
            "saes.pretrained = %r is for %s; the run's model is a local folder (%s): make sure "
            "it is that model",
            release, release_model, model,
        )  # fmt: skip
        return
    if _canonical(release_model) != _canonical(model):
        raise ConfigError(
            f"saes.pretrained = {release!r}: that release's SAEs were trained on "
            f"{release_model}, but the run's model is {model}; pick a release for {model} or "
            f"run with --set model={release_model}"
        )


def _canonical(name: str) -> str:
    """A model's hub id in lower case (TransformerLens aliases and lfp_mech names resolved)."""
    from lfp_mech.models.registry import MODEL_REGISTRY

    spec = MODEL_REGISTRY.get(name)
    if spec is not None and spec.hf_id:
        name = spec.hf_id
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        name = get_official_model_name(name)
    except ValueError:  # not a model TransformerLens knows: compare the names as given
        pass
    return name.lower().rsplit("/", 1)[-1]


def _directory() -> Mapping[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def _some(names: Any, n: int = 6) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def pretrained_info(sae: PretrainedSAE, source: str) -> dict[str, Any]:
    """What the stage records beside a reused SAE (its ``training.json``)."""
    return {
        "pretrained": os.fspath(source),
        "sae_id": sae.sae_id,
        "hook_name": sae.hook,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
    }
