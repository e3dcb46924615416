"""``lfp-mech push``: share a run's tuned policy and its SAEs on the Hugging Face hub.

The folder that is uploaded (``--local-dir DIR`` writes exactly it, without the hub)::

    README.md                      model card: base model, task, training, SAE table, how to load
    config.json, model.safetensors, tokenizer files, lfp_mech_training.json
                                   the tuned policy, HF format at the root, so that
                                   AutoModelForCausalLM.from_pretrained("USER/NAME") loads it
    blocks.{l}.hook_mlp_out/small/ one folder per SAE in SAE-Lens's hub layout (cfg.json,
    blocks.{l}.hook_mlp_out/big/   sae_weights.safetensors, sparsity.safetensors if any), so that
                                   sae_lens.SAE.from_pretrained("USER/NAME", "<folder>") loads it
    pretrained_saes.yaml           the entry that would register the SAEs as a SAE-Lens release
    lfp_mech_run.json              the run's resolved config and package versions

SAE-Lens's own uploader (``sae_lens.upload_saes_to_huggingface``) writes the same SAE folders, but
only SAEs, one commit each, always into a public repo; here policy, SAEs and card go up in one
commit (``HfApi.upload_folder``) into a public or private repo. Hub access (a token, the hub
answering, the token valid) is checked before anything is copied.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.hooks import layer_of_hook
from lfp_mech.runner.results import Run, load_run

__all__ = ["PUSHABLE", "build_push_folder", "check_hub_access", "push_run"]

logger = logging.getLogger(__name__)

PUSHABLE = ("policy", "saes")
"""What ``--what`` can name."""
SAE_FILES = ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")
"""The files of one SAE that SAE-Lens uploads (and ``SAE.from_pretrained`` reads)."""
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def push_run(
    run_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    what: Sequence[str] = PUSHABLE,
    private: bool = False,
    local_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Upload a run's tuned policy and/or SAEs to the hub repo ``repo_id`` (``USER/NAME``).

    With ``local_dir`` nothing is uploaded: the folder that would be is written there (it must
    not exist or be empty). Returns the repo URL, or the folder.
    """
    what = _check_what(what)
    if not _REPO_ID.fullmatch(repo_id):
        raise ConfigError(f"--repo-id {repo_id!r}: must be USER/NAME (or ORG/NAME)")
    run = load_run(run_dir)
    for part in what:  # a clear error now if a stage is missing
        _ = run.rlhf.policy_dir if part == "policy" else run.saes.sae_dirs("small")
    if local_dir is not None:
        folder = build_push_folder(run, repo_id, Path(local_dir), what=what)
        logger.info("wrote the folder that would be pushed to %s: %s", repo_id, folder)
        return str(folder)
    user = check_hub_access()
    with tempfile.TemporaryDirectory(prefix="lfp_mech_push_") as tmp:
        folder = build_push_folder(run, repo_id, Path(tmp) / "repo", what=what)
        message = f"lfp_mech push: {' and '.join(what)} of run {run.config.name!r}"
        url = upload(folder, repo_id, private=private, message=message)
    logger.info("pushed %s of %s to %s (as %s)", " and ".join(what), run.path, url, user)
    return url


def check_hub_access() -> str:
    """The logged-in hub user; a one-line error when there is no token, the hub does not answer,
    or the token is refused (checked before anything is built)."""
    import huggingface_hub

    from lfp_mech.hub import hub_reachable

    if huggingface_hub.get_token() is None:
        raise LfpMechError(
            "not logged in to the Hugging Face hub: run `hf auth login` or set HF_TOKEN (or "
            "write the folder without uploading: --local-dir DIR)"
        )
    if not hub_reachable():
        raise LfpMechError(
            "the Hugging Face hub is not reachable (offline or HF_HUB_OFFLINE set): push from a "
            "machine that reaches it, or write the folder with --local-dir DIR"
        )
    try:
        info = huggingface_hub.HfApi().whoami()
    except Exception as err:  # HTTP 401, network errors: all mean "cannot push"
        raise LfpMechError(f"the hub refused the token ({err}): run `hf auth login`") from err
    return str(info.get("name", "?"))


def upload(folder: Path, repo_id: str, *, private: bool, message: str = "lfp_mech push") -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` in one commit; the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        commit_message=message,
    )
    return f"https://huggingface.co/{repo_id}"


def build_push_folder(
    run: Run, repo_id: str, out_dir: Path, *, what: Sequence[str] = PUSHABLE
) -> Path:
    """Write the folder ``push`` uploads for ``run`` into ``out_dir`` (see the module doc)."""
    what = _check_what(what)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty: pick a new folder for --local-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    if "policy" in what:
        _copy_tree(run.rlhf.policy_dir, out_dir)
    saes = _copy_saes(run, out_dir, repo_id if "policy" in what else None) if "saes" in what else []
    if saes:
        _write(out_dir / "pretrained_saes.yaml", _release_yaml(run, repo_id, saes, what))
    run_info = {"config": run.manifest["run"]["config"], "versions": run.versions}
    _write(out_dir / "lfp_mech_run.json", json.dumps(run_info, indent=2, default=str))
    _write(out_dir / "README.md", model_card(run, repo_id, what, saes))
    return out_dir


def _copy_saes(run: Run, out_dir: Path, model_repo: str | None) -> list[dict[str, Any]]:
    """Each of the run's main SAEs as ``<hook>/<size>/`` (SAE-Lens files only); their table rows.

    When the policy goes into the same repo, ``cfg.metadata.model_name`` becomes the repo id
    (the SAEs read the tuned policy, which is that repo)."""
    metrics = run.saes.metrics
    main = metrics[metrics["variant"] == run.saes.variant]
    rows = []
    for size in run.saes.sizes:
        for hook, folder in run.saes.sae_dirs(size).items():
            sae_id = f"{hook}/{size}"
            target = out_dir / sae_id
            target.mkdir(parents=True)
            for name in SAE_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, target / name)
            cfg = json.loads((target / "cfg.json").read_text(encoding="utf-8"))
            if model_repo is not None:
                cfg.setdefault("metadata", {})["model_name"] = model_repo
                _write(target / "cfg.json", json.dumps(cfg))
            layer = layer_of_hook(hook)
            match = main[(main["layer"] == layer) & (main["size"] == size)]
            row = match.iloc[0].to_dict() if len(match) else {}
            rows.append({"sae_id": sae_id, "hook": hook, "size": size, "d_in": cfg["d_in"],
                         "d_sae": cfg["d_sae"], **{k: row.get(k) for k in
                         ("fvu", "l0", "dead_fraction", "ce_recovered")}})  # fmt: skip
    return rows


def _release_yaml(run: Run, repo_id: str, saes: list[dict[str, Any]], what: Sequence[str]) -> str:
    """The ``pretrained_saes.yaml`` entry of the pushed SAEs (SAE-Lens's release format)."""
    import yaml

    model = repo_id if "policy" in what else str(run.config.model)
    entry = {
        "repo_id": repo_id,
        "model": model,
        "conversion_func": None,
        "links": {"model": f"https://huggingface.co/{repo_id}"},
        "saes": [
            {
                "id": row["sae_id"],
                "path": row["sae_id"],
                **({"l0": round(float(row["l0"]), 3)} if row.get("l0") is not None else {}),
                **(
                    {"variance_explained": round(1 - float(row["fvu"]), 4)}
                    if row.get("fvu") is not None
                    else {}
                ),
            }
            for row in saes
        ],
    }
    release = repo_id.split("/", 1)[1].lower()
    return yaml.safe_dump({release: entry}, sort_keys=False)


def model_card(run: Run, repo_id: str, what: Sequence[str], saes: list[dict[str, Any]]) -> str:
    """The README.md of the pushed repo: what it holds, how it was made, how to load it."""
    from lfp_mech.models.registry import MODEL_REGISTRY

    base = str(run.config.model)
    spec = MODEL_REGISTRY.get(base)
    hub_base = spec.hf_id if spec is not None and spec.hf_id else None
    front = ["---", f"library_name: {'transformers' if 'policy' in what else 'saelens'}"]
    front += [f"base_model: {hub_base}"] if hub_base and "policy" in what else []
    front += ["tags: [lfp_mech, rlhf, sparse-autoencoder, saelens]", "---", ""]
    lines = [*front, f"# {repo_id}", ""]
    rlhf = run.rlhf.summary if run.is_complete("rlhf") else {}
    task = f"task `{rlhf.get('task', '?')}`, method `{rlhf.get('method', '?')}`"
    lines += [
        f"From an lfp_mech run on `{base}` ({task}, "
        f"{rlhf.get('steps', '?')} steps, seed {run.config.seed}). "
        + ("It holds the RLHF-tuned policy" if "policy" in what else "It holds")
        + (" and " if len(what) == 2 else "")
        + ("SAE-Lens sparse autoencoders on the policy's activations." if "saes" in what else ".")
        + (
            " (The SAEs read the RLHF-tuned policy, which is not in this repo.)"
            if what == ("saes",)
            else ""
        )
        + (" Numbers from a tiny random test model mean nothing." if run.is_smoke else ""),
        "",
    ]
    if "policy" in what and rlhf:
        lines += [
            "| held-out reward | base | tuned |",
            "|---|---|---|",
            f"| mean over {rlhf.get('n_eval_prompts', '?')} prompts | "
            f"{_fmt(rlhf.get('base_reward'))} | {_fmt(rlhf.get('tuned_reward'))} |",
            "",
        ]
    if saes:
        lines += [
            "| SAE id | hook | d_in | d_sae | FVU | L0 | dead fraction | CE loss recovered |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{r['sae_id']}` | `{r['hook']}` | {r['d_in']} | {r['d_sae']} | {_fmt(r['fvu'])} "
            f"| {_fmt(r['l0'])} | {_fmt(r['dead_fraction'])} | {_fmt(r['ce_recovered'])} |"
            for r in saes
        ]
        lines.append("")
    lines += ["## Load", "", "```python", *_load_snippet(repo_id, what, saes), "```", ""]
    return "\n".join(lines)


def _load_snippet(repo_id: str, what: Sequence[str], saes: list[dict[str, Any]]) -> list[str]:
    lines = []
    if "policy" in what:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'policy = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        ]
    if saes:
        lines += [
            *([""] if lines else []),
            "from sae_lens import SAE",
            "",
            f'sae = SAE.from_pretrained("{repo_id}", "{saes[0]["sae_id"]}")',
            f"# or reuse them in a run: lfp-mech run --set saes.pretrained={repo_id}",
        ]
    return lines


def _fmt(value: Any) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return "-"


def _check_what(what: Sequence[str]) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(str(w).strip() for w in what if str(w).strip()))
    bad = [p for p in parts if p not in PUSHABLE]
    if bad or not parts:
        raise ConfigError(
            f"--what {','.join(what)!r}: must name some of {', '.join(PUSHABLE)} (comma-separated)"
        )
    return parts


def _copy_tree(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def _write(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
