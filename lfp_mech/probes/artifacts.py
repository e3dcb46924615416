"""Names of what the ``probes`` stage writes, shared by ``stage.py`` (writer) and ``results.py``.

A leaf module (no heavy imports): the results class and later stages read these names without
importing torch.
"""

__all__ = [
    "KENDALL_TABLE",
    "PER_WORD_TABLE",
    "PREFERENCE_SUMMARY_FILE",
    "PREFERENCE_TABLE",
    "PRIMARY_PROBE",
    "PROBES_FILE",
    "PROBE_INPUTS_FILE",
    "SIGN_ACCURACY_TABLE",
]

PRIMARY_PROBE = "tuned_sae"
"""The probe under test: Ridge on the tuned model's SAE features (every other probe is a baseline).
"""

PROBES_FILE = "probes.safetensors"
"""Every fitted probe's ``<name>.weight``, ``<name>.bias`` and ``<name>.scale`` (metadata ``hooks``:
the SAE hooks in ``A_concat`` order); read with
[`lfp_mech.probes.load_probe`][lfp_mech.probes.reward.load_probe]."""

PROBE_INPUTS_FILE = "probe_inputs.safetensors"
"""The tuned SAE probe's inputs per hook and its predictions
([`lfp_mech.probes.save_probe_inputs`][lfp_mech.probes.inputs.save_probe_inputs]); the inputs of
paper Table 7."""

KENDALL_TABLE = "kendall"
"""Kendall τ (p, CI, τ on negative / positive words) per probe, with paired differences."""
SIGN_ACCURACY_TABLE = "sign_accuracy"
"""Sign accuracy on positive and on negative words per probe (paper Table 5)."""
PER_WORD_TABLE = "per_word"
"""One row per held-out word: true valence, every probe's prediction, error and frequency."""

PREFERENCE_TABLE = "preference_probe"
"""Table of
[`lfp_mech.probes.run_preference_probe`][lfp_mech.probes.preference.run_preference_probe] (accuracy
per label mode)."""
PREFERENCE_SUMMARY_FILE = "preference_summary.json"
"""Summary of
[`lfp_mech.probes.run_preference_probe`][lfp_mech.probes.preference.run_preference_probe]."""
