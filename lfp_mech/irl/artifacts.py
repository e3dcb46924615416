"""Names of what the IRL stage writes, shared by the writers and
[`lfp_mech.irl.results`][lfp_mech.irl.results].

Layout of the stage folder (``runs/<name>/irl``)::

    vader/                      one IRL experiment (run_task) per task folder:
        demonstrations.jsonl    (+ demonstrations.meta.json, the cache key)
        reward_inputs_<pooling>_<context>.safetensors (+ _heldout)  cached frozen-part
                                outputs per readout (cached mode)
        validation_grid.csv/.md/.json  the readout × lr grid on the validation split
        irl_epochs.csv/.md/.json  validation metrics per seed × epoch
        irl_runs.csv/.md/.json  one row per seed: held-out metrics at its validation-chosen epoch
        heldout_scores.jsonl    text, source, true reward, best IRL reward, controls, probe
        summary.json            summarize_runs + task details and controls
        irl_heatmaps.png, irl_seed_agreement.png, irl_vs_true.png
        reward_model/           the run selected on validation (config.json, weights)
    irl_rlhf/                   IRL-RLHF on the VADER task: policy/, irl_rlhf.csv/.md/.json
    toxicity/                   the toxicity task: the files of vader/ plus
        rlhf/policy/            the GRPO-detoxified expert
        irl_rlhf/               IRL-RLHF on the toxicity reward (or policies/policies.csv
                                when toxicity_irl_rlhf_steps = 0)

A module with no heavy imports: the results class reads these names without torch.
"""

__all__ = [
    "CONFIG_FILE",
    "DEMONSTRATIONS_FILE",
    "DEMONSTRATIONS_META_FILE",
    "EPOCHS_STEM",
    "EXPERT_DIR",
    "GRID_STEM",
    "HEATMAPS_FIGURE",
    "HELDOUT_STEM",
    "IRL_RLHF_DIR",
    "IRL_RLHF_STEM",
    "POLICIES_DIR",
    "POLICIES_STEM",
    "POLICY_DIR",
    "REWARD_INPUTS_FILE",
    "REWARD_MODEL_DIR",
    "RUNS_STEM",
    "SEED_AGREEMENT_FIGURE",
    "TASK_SUMMARY_FILE",
    "THREE_WAY_FIGURE",
    "WEIGHTS_FILE",
]

DEMONSTRATIONS_FILE = "demonstrations.jsonl"
DEMONSTRATIONS_META_FILE = "demonstrations.meta.json"
REWARD_INPUTS_FILE = "reward_inputs.safetensors"
RUNS_STEM = "irl_runs"
EPOCHS_STEM = "irl_epochs"
GRID_STEM = "validation_grid"
HELDOUT_STEM = "heldout_scores"
"""``heldout_scores.jsonl``: one line per held-out text."""
TASK_SUMMARY_FILE = "summary.json"
REWARD_MODEL_DIR = "reward_model"
WEIGHTS_FILE = "reward_model.safetensors"
CONFIG_FILE = "config.json"
HEATMAPS_FIGURE = "irl_heatmaps.png"
SEED_AGREEMENT_FIGURE = "irl_seed_agreement.png"
THREE_WAY_FIGURE = "irl_vs_true.png"
IRL_RLHF_DIR = "irl_rlhf"
IRL_RLHF_STEM = "irl_rlhf"
EXPERT_DIR = "rlhf"
"""The toxicity task's expert: GRPO on the toxicity reward, written into ``toxicity/rlhf``."""
POLICY_DIR = "policy"
POLICIES_DIR = "policies"
POLICIES_STEM = "policies"
