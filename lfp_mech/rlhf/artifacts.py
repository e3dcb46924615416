"""File names inside the ``rlhf`` stage folder, shared by the trainers, ``stage.py`` and
``results.py``.

Tables are named by their stem: `lfp_mech._io.write_table` writes ``<stem>.csv``, ``.md``
and ``.json``.
"""

__all__ = [
    "BASE_COPY_DIR",
    "CHECKPOINT_DIR",
    "COMPLETIONS_FILE",
    "EVAL_TABLE",
    "HELDOUT_PAIRS_FILE",
    "PAIRS_FILE",
    "POLICY_DIR",
    "POLICY_METADATA",
    "REWARD_CURVE_FILE",
    "TRAIN_LOG",
]

POLICY_DIR = "policy"
"""The tuned policy: an HF checkpoint folder (safetensors + tokenizer)."""
POLICY_METADATA = "lfp_mech_training.json"
"""Inside the policy folder: base model, method, steps, stop reason, training seconds, config."""
CHECKPOINT_DIR = "checkpoints"
"""Resumable Trainer checkpoints (deleted after export unless ``keep_checkpoints``)."""
BASE_COPY_DIR = "base"
"""An in-memory base model saved once, so that TRL can rebuild the reference model from it."""
TRAIN_LOG = "train_log"
"""Table stem of the per-step training log ([`lfp_mech.rlhf.logs`][lfp_mech.rlhf.logs])."""
EVAL_TABLE = "eval"
"""Table stem of the base-vs-tuned evaluation
([`lfp_mech.rlhf.compare_policies`][lfp_mech.rlhf.evaluation.compare_policies])."""
COMPLETIONS_FILE = "completions.jsonl"
"""Held-out completions of both policies: policy, prompt, completion, reward, length."""
PAIRS_FILE = "pairs.jsonl"
"""DPO preference pairs (cached: a resumed run trains on the same pairs)."""
HELDOUT_PAIRS_FILE = "heldout_pairs.jsonl"
"""DPO only: preference pairs on the held-out (test) prompts, made like the training pairs
(offline: base samples ranked by the reward; hub: the dataset's test split); the preference
probe (paper Table 3) is fitted and evaluated on them."""
REWARD_CURVE_FILE = "reward_curve.png"
"""The training curve (reward and distinct-2 per step, or the DPO loss and margins)."""
