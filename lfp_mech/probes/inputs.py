"""The tuned SAE probe's inputs (dataset D) per hook, with its predictions: paper Table 7's inputs.

The ``probes`` stage saves them with [`save_probe_inputs`][lfp_mech.probes.inputs.save_probe_inputs]
(``probe_inputs.safetensors``); the ``validate`` stage reads them back
([`load_probe_inputs`][lfp_mech.probes.inputs.load_probe_inputs], or
``ProbesResults(run / "probes").probe_inputs()``) and selects the inputs the probe predicts with
delta > 3."""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from safetensors import safe_open
from torch import Tensor

from lfp_mech._io import load_tensors, save_tensors
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.probes.dataset import ProbeDataset
from lfp_mech.probes.fit import LinearProbe

__all__ = ["ProbeInputs", "load_probe_inputs", "save_probe_inputs"]

_VECTORS = ("predicted_delta", "predicted_delta_raw", "label_delta")


@dataclass
class ProbeInputs:
    """The tuned SAE probe's inputs (the paper's dataset D), one feature block per hook.

    Input ``i`` is ``A(x⁺)`` of triple ``i`` for ``i < n_triples`` and ``A(x⁻)`` of triple
    ``i − n_triples`` after that (the order of
    [`activation_deltas`][lfp_mech.probes.dataset.activation_deltas]). The probe was fitted on all
    of them (its evaluation uses held-out lexicon words, which are not in D)."""

    features: dict[str, Tensor]
    """``{hook_name: Float[n_inputs, d_sae]}``: the SAE features at the substituted word (mean over
    its tokens), in [`ordered_hooks`][lfp_mech.probes.features.ordered_hooks] order; concatenated
    they are ``A_concat``."""
    predicted_delta: Float[Tensor, " sample"]
    """The probe's prediction, normalised to [-4, 4] like every probe output
    ([`LinearProbe.predict`][lfp_mech.probes.fit.LinearProbe.predict])."""
    predicted_delta_raw: Float[Tensor, " sample"]
    """The same before normalisation
    ([`LinearProbe.raw_predict`][lfp_mech.probes.fit.LinearProbe.raw_predict])."""
    label_delta: Float[Tensor, " sample"]
    """The implicit feedback the probe regressed on: ``+Δ⁺`` / ``−Δ⁻`` (feature-space norms)."""
    words: list[str]
    """The substituted word of each input."""
    texts: list[str]
    """The sentence of each input."""

    @property
    def n_inputs(self) -> int:
        return int(self.predicted_delta.shape[0])


def save_probe_inputs(
    path: str | os.PathLike[str],
    dataset: ProbeDataset,
    widths: Mapping[str, int],
    probe: LinearProbe,
    *,
    texts: Sequence[str] | None = None,
) -> ProbeInputs:
    """Save a probe's inputs per hook with its predictions, atomically as safetensors.

    Args:
        path: the ``.safetensors`` file to write.
        dataset: the probe's dataset D
            ([`build_probe_dataset`][lfp_mech.probes.dataset.build_probe_dataset]).
        widths: ``{hook_name: d_sae}`` in the concatenation order of ``dataset.inputs``
            ([`ordered_hooks`][lfp_mech.probes.features.ordered_hooks]); the widths must add up to
            the input width.
        probe: the probe fitted on ``dataset``; its predictions of every input are saved.
        texts: the sentence of each input (optional, for reading).

    Tensors ``features.<hook_name>`` (float32 ``[n_inputs, d_sae]``), ``predicted_delta``,
    ``predicted_delta_raw`` and ``label_delta`` (float32 ``[n_inputs]``); the hook order, the
    words and the texts are JSON in the file's metadata. Returns what was saved.
    """
    inputs = dataset.inputs.detach().float().cpu()
    sizes = [int(w) for w in widths.values()]
    if sum(sizes) != inputs.shape[1]:
        raise ConfigError(
            f"the hook widths {dict(widths)} add up to {sum(sizes)}, but the probe inputs have "
            f"{inputs.shape[1]} features"
        )
    texts = list(texts) if texts is not None else [""] * inputs.shape[0]
    if len(texts) != inputs.shape[0]:
        raise ConfigError(f"{len(texts)} texts for {inputs.shape[0]} probe inputs")
    blocks = torch.split(inputs, sizes, dim=1)
    saved = ProbeInputs(
        features={h: b.contiguous() for h, b in zip(widths, blocks, strict=True)},
        predicted_delta=torch.from_numpy(probe.predict(inputs)).float(),
        predicted_delta_raw=torch.from_numpy(probe.raw_predict(inputs)).float(),
        label_delta=dataset.labels.detach().float().cpu(),
        words=list(dataset.words),
        texts=texts,
    )
    tensors = {f"features.{h}": b for h, b in saved.features.items()}
    tensors |= {name: getattr(saved, name) for name in _VECTORS}
    metadata = {
        "what": "inputs of the tuned SAE probe (dataset D: A(x+) of every triple, then A(x-)), "
        "SAE features per hook, with the probe's predicted delta of each (normalised to [-4, 4])",
        "hooks": json.dumps(list(widths)),
        "words": json.dumps(saved.words),
        "texts": json.dumps(saved.texts),
    }
    save_tensors(path, tensors, metadata)
    return saved


def load_probe_inputs(path: str | os.PathLike[str]) -> ProbeInputs:
    """Read a file written by [`save_probe_inputs`][lfp_mech.probes.inputs.save_probe_inputs]
    (``probes/probe_inputs.safetensors``)."""
    if not os.path.isfile(path):
        raise LfpMechError(f"{path} not found: run (or --force) the probes stage to write it")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = load_tensors(path)
    hooks = json.loads(metadata.get("hooks", "[]"))
    missing = [k for k in _VECTORS if k not in tensors]
    missing += [f"features.{h}" for h in hooks if f"features.{h}" not in tensors]
    if missing or not hooks:
        raise LfpMechError(f"{path} is not a probe-inputs file (missing {missing or ['hooks']})")
    return ProbeInputs(
        features={h: tensors[f"features.{h}"] for h in hooks},
        **{name: tensors[name] for name in _VECTORS},
        words=json.loads(metadata.get("words", "[]")),
        texts=json.loads(metadata.get("texts", "[]")),
    )
