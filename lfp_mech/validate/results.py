"""What the ``validate`` stage wrote, read back: descriptions, Tables 6 and 7, completions."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech.stage_api import StageResults
from lfp_mech.validate.artifacts import (
    ABLATION_TABLE,
    COMPLETIONS_FILE,
    DESCRIPTIONS_TABLE,
    FEATURE_CHOICE_FILE,
    FEATURE_FREQUENCIES_FILE,
    FEATURES_FILE,
    FREQUENCY_TABLE,
    TOP_CONTEXTS_FILE,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["ValidateResults"]


class ValidateResults(StageResults):
    """The validate stage's folder: feature descriptions, Table 7, Table 6 and their inputs.

    Example::

        val = ValidateResults("runs/default/validate")
        val.descriptions                 # one row per chosen feature: description, p-value, ...
        val.ablation                     # Table 6: mean reward per (model, condition), CIs
        val.activation_frequency         # Table 7: active share per hook and feature group
        val.top_contexts(feature=12)     # the top-activating contexts of a feature
    """

    stage = "validate"

    # ------------------------------------------------------------------ tables

    @property
    def descriptions(self) -> "pd.DataFrame":
        """One row per chosen feature: hook, layer, feature, description, task_related, p_value,
        z_score, mean_abs_valence, mean_valence, sentiment_share, max_activation, frequency,
        top_tokens (and llm_explanation, llm_score, llm_task_related with an LLM labeler)."""
        return self.table(DESCRIPTIONS_TABLE)

    @property
    def activation_frequency(self) -> "pd.DataFrame":
        """Paper Table 7: per hook and group ("task-related", "chosen", "all features"): source,
        inputs, n_inputs, n_inputs_total, active_share, ratio_to_average,
        active_share_all_inputs."""
        return self.table(FREQUENCY_TABLE)

    @property
    def ablation(self) -> "pd.DataFrame":
        """Paper Table 6: per model and condition ("clean", "task", "random"): n_features, n,
        mean_reward, ci_low, ci_high, delta_vs_clean, delta_ci_low, delta_ci_high."""
        return self.table(ABLATION_TABLE)

    # ------------------------------------------------------------------ features

    @property
    def feature_choice(self) -> dict[str, list[int]]:
        """``{hook: feature ids}`` chosen for validation (highest MMCS, largest probe weights)."""
        return self._features_json(FEATURE_CHOICE_FILE)

    @property
    def ablated_set(self) -> str:
        """``"task_related"`` (the chosen features labelled task-related) or ``"chosen"``."""
        return str(self.json(Path(FEATURES_FILE).stem)["ablated_set"])

    @property
    def ablated_features(self) -> dict[str, dict[str, list[int]]]:
        """``{condition: {hook: feature ids}}`` ablated in each condition of Table 6."""
        ablated = self.json(Path(FEATURES_FILE).stem)["ablated"]
        return {
            c: {h: [int(i) for i in ids] for h, ids in hooks.items()}
            for c, hooks in ablated.items()
        }

    def task_related_features(self) -> dict[str, list[int]]:
        """``{hook: feature ids}`` labelled task-related by the configured labeler."""
        table = self.descriptions
        source = self.summary["config"]["autointerp"]["label_source"]
        column = "llm_task_related" if source == "llm" else "task_related"
        related = table[table[column].astype(str) == "True"]
        out: dict[str, list[int]] = {}
        for hook, feature in zip(related["hook"], related["feature"], strict=True):
            out.setdefault(str(hook), []).append(int(feature))
        return out

    def feature_frequencies(self) -> dict[str, "Tensor"]:
        """``{hook: share of corpus tokens on which each feature is active}`` (all features)."""
        from lfp_mech._io import load_tensors

        return load_tensors(self.file(FEATURE_FREQUENCIES_FILE))

    def top_contexts(self, hook: str | None = None, feature: int | None = None) -> "pd.DataFrame":
        """The chosen features' top-activating tokens, highest first per feature: hook, feature,
        rank, token, word, activation, context (the window's text), text_index, position."""
        import pandas as pd

        contexts = self.json(Path(TOP_CONTEXTS_FILE).stem)
        rows = [
            {
                "hook": h,
                "feature": int(f),
                "rank": rank,
                "token": ex["token"],
                "word": ex["word"],
                "activation": ex["activation"],
                "context": "".join(ex["context"]),
                "text_index": ex["text_index"],
                "position": ex["position"],
            }
            for h, feats in contexts.items()
            if hook is None or h == hook
            for f, examples in feats.items()
            if feature is None or int(f) == feature
            for rank, ex in enumerate(examples)
        ]
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ completions

    @property
    def completions(self) -> "pd.DataFrame":
        """The saved completions of every cell (the first ``n_examples_saved`` prompts): model,
        condition, index, prompt, completion, reward."""
        import pandas as pd

        data = self.json(Path(COMPLETIONS_FILE).stem)
        prompts = data["prompts"]
        return pd.DataFrame(
            {
                "model": model,
                "condition": condition,
                "index": i,
                "prompt": prompts[i],
                "completion": text,
                "reward": data["rewards"][model][condition][i],
            }
            for model, cells in data["completions"].items()
            for condition, texts in cells.items()
            for i, text in enumerate(texts)
        )

    @property
    def rewards(self) -> "pd.DataFrame":
        """The reward of every completion of Table 6: model, condition, index, reward (the same
        index is the same prompt and sampling seed in every cell)."""
        import pandas as pd

        rewards = self.json(Path(COMPLETIONS_FILE).stem)["rewards"]
        return pd.DataFrame(
            {"model": model, "condition": condition, "index": i, "reward": reward}
            for model, cells in rewards.items()
            for condition, values in cells.items()
            for i, reward in enumerate(values)
        )

    # ------------------------------------------------------------------ figures

    def ablation_figure(self) -> "Figure":
        """Table 6 as grouped bars with confidence intervals."""
        from lfp_mech.validate.plots import ablation_figure

        return ablation_figure(self.ablation, confidence=self.summary["config"]["confidence"])

    def activation_frequency_figure(self) -> "Figure":
        """Table 7 as bars per hook and feature group."""
        from lfp_mech.validate.plots import activation_frequency_figure

        return activation_frequency_figure(self.activation_frequency)

    def _features_json(self, name: str) -> dict[str, list[int]]:
        data: dict[str, Any] = self.json(Path(name).stem)
        return {hook: [int(i) for i in ids] for hook, ids in data.items()}
