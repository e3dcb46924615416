"""Generate the notebooks of ``notebooks/``: one per figure or table of the two papers.

Every notebook has the same shape: what the paper's figure/table shows and its published
numbers, a setup cell that finds the run directory (``LFP_MECH_RUN_DIR``, or the smoke preset
computed into ``runs/smoke``), cells that load the stage's artifacts, show the table and re-draw
the figure with the ``lfp_mech.plots`` function, and a "what to look for" cell.

The notebooks are written without outputs. Regenerate them after editing this file::

    .venv/bin/python notebooks/_make_notebooks.py

and execute them all (smoke mode) with::

    .venv/bin/pytest --nbmake notebooks -q -p no:cacheprovider -o addopts=""
"""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
WRITTEN: list[Path] = []

# --------------------------------------------------------------------------- shared cells

RUN_MD = """
## The run

The setup cell below finds the run to read. Set the environment variable `LFP_MECH_RUN_DIR` to
a finished run directory (e.g. `LFP_MECH_RUN_DIR=runs/default`, relative to the repository
root or absolute) to read a real run. Without it the notebook computes the **smoke** preset into
`runs/smoke` (a tiny random 2-layer model, about 15 s the first time; later notebooks resume it
from disk). Smoke numbers only show that the code runs: they mean nothing about the method.
"""

SETUP = '''
import io
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

from lfp_mech import preset_config, read_manifest, run_pipeline


def find_repo_root(start=None):
    """The nearest folder at or above ``start`` (default: cwd) that holds pyproject.toml."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"no pyproject.toml at or above {here}: open the notebook in the repo")


def stage_dir(name):
    """The folder of a completed stage of the run (fails clearly if the stage did not finish)."""
    status = MANIFEST["stages"].get(name, {}).get("status", "not run")
    assert status == "complete", f"stage {name!r} is {status} in {RUN_DIR}: finish the run first"
    return RUN_DIR / name


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def show(fig):
    """Display a matplotlib Figure (from an ``lfp_mech.plots`` function) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


ROOT = find_repo_root()
if os.environ.get("LFP_MECH_RUN_DIR"):  # an existing run, e.g. LFP_MECH_RUN_DIR=runs/default
    RUN_DIR = Path(os.environ["LFP_MECH_RUN_DIR"]).expanduser()
    if not RUN_DIR.is_absolute() and not RUN_DIR.exists():
        RUN_DIR = ROOT / RUN_DIR
else:  # the smoke preset: computed once, then every stage is resumed from disk
    RUN_DIR = run_pipeline(preset_config("smoke"), ROOT / "runs" / "smoke")
RUN_DIR = Path(RUN_DIR).resolve()
MANIFEST = read_manifest(RUN_DIR)
CONFIG = MANIFEST["run"]["config"]
SMOKE = CONFIG["model"].startswith("tiny")
pd.set_option("display.precision", 3)
pd.set_option("display.max_colwidth", 90)
display(
    Markdown(
        f"**Run** `{RUN_DIR}`: model `{CONFIG['model']}`, seed {CONFIG['seed']}"
        + (" (**smoke**: a tiny random model, the numbers mean nothing)" if SMOKE else "")
    )
)
'''


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip())


def _per_word_figure(title: str):
    """The tuned SAE probe's prediction against VADER for every held-out word (``per_word``)."""
    return code(
        f"""
        from lfp_mech.plots.probes import predicted_vs_true_figure

        show(
            predicted_vs_true_figure(
                per_word["true_valence"],
                per_word["pred_tuned_sae"],
                list(per_word["word"]),
                title={title},
            )
        )
        """
    )


def build(name: str, intro: str, body: list, look_for: str) -> None:
    """Write ``notebooks/<name>.ipynb``: intro, run, setup, body, what to look for."""
    cells = [
        md(intro),
        md(RUN_MD),
        code(SETUP),
        *body,
        md("## What to look for\n\n" + textwrap.dedent(look_for).strip()),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"{name[:2]}-{i:02d}"  # stable ids: regenerating gives identical files
    nb = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(nb)
    path = HERE / f"{name}.ipynb"
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    WRITTEN.append(path)


def format_with_ruff(paths: list[Path]) -> None:
    """Format the code cells with ``ruff format`` (the repository's style), if ruff is installed."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        print("ruff not found: the notebooks' code cells are left as written")
        return
    subprocess.run([ruff, "format", "--quiet", *map(str, paths)], check=True, cwd=HERE.parent)


# --------------------------------------------------------------------------- 00 overview

build(
    "00_pipeline_overview",
    """
    # 00 · The pipeline at a glance (LFP Figure 1)

    **The question.** RLHF tunes a language model to earn more reward. What did the model
    actually *learn* about that reward, and how far is it from the reward itself? Two papers
    answer from two sides:

    * **Learned Feedback Patterns** (LFP; Marks et al., NeurIPS 2024) look *inside* the model.
      Figure 1 of the paper is the pipeline: (1) RLHF-tune a base model; (2) find the MLP layers
      that changed most and learn sparse autoencoders (SAEs) on their outputs, a condensed and
      more interpretable basis of features; (3) train probes that predict the feedback signal
      from those features and compare the prediction with the true feedback; (4) validate the
      features the probes rely on (descriptions of the features, ablation).
    * **Inverse RL** (Joselowitz et al., 2024) looks at *behaviour* only: from the texts the
      tuned ("expert") and the base ("non-expert") model write, a max-margin objective recovers a
      reward model, which is then compared with the true reward (accuracy, F1, correlations).

    `lfp_mech` runs both as one resumable pipeline of stages; each stage writes its own folder
    of tables (CSV + Markdown), figures (PNG), tensors (safetensors) and a `summary.json`, and
    `manifest.json` records the config, package versions, timings and the hash of every file.

    | stage | paper step | notebooks |
    |---|---|---|
    | `model` | load the base model, check HF ↔ TransformerLens parity | 00 |
    | `rlhf` | (1) RLHF on the VADER reward (GRPO: TRL has no PPO any more) | 00 |
    | `divergence` | (2) per-layer parameter divergence, pick the top layers | 01 |
    | `activations` | (2) MLP outputs of those layers from the tuned model | — |
    | `saes` | (2) SAEs: L1 sweep, tied vs untied, small/big dictionaries, MMCS | 02, 03, 09 |
    | `probes` | (3) feedback probes vs VADER: Table 2, Kendall τ, Table 5, Figure 4 | 04–08 |
    | `validate` | (4) feature descriptions, Table 7, Table 6 (ablation) | 09–11 |
    | `irl` | IRL paper: reward recovery, accuracy/F1, non-identifiability | 12–15 |

    This notebook shows the state of a run and the first step, the RLHF itself.
    """,
    [
        md(
            """
            ## The stages of the run

            Status, wall time and peak memory of every stage, from `manifest.json`. A stage is
            skipped on the next run when its config and inputs are unchanged and every artifact
            still has its recorded hash.
            """
        ),
        code(
            """
            from lfp_mech.pipeline import STAGES

            rows = []
            for name, stage in STAGES.items():
                entry = MANIFEST["stages"].get(name, {})
                rows.append(
                    {
                        "stage": name,
                        "requires": ", ".join(stage.requires) or "-",
                        "what it does": stage.description,
                        "status": entry.get("status", "not run"),
                        "seconds": entry.get("seconds"),
                        "peak RSS (MB)": entry.get("peak_rss_mb"),
                        "artifacts": len(entry.get("artifacts", {})),
                    }
                )
            stages = pd.DataFrame(rows).set_index("stage")
            for entry in MANIFEST["stages"].values():
                for rel in entry.get("artifacts", {}):
                    assert (RUN_DIR / rel).is_file(), f"{rel} is recorded but missing"
            display(stages)
            display(Markdown(f"Total stage time: **{stages['seconds'].sum():.1f} s**"))
            """
        ),
        md(
            """
            Headline numbers of every stage (the scalar entries of each stage's summary, as
            recorded in the manifest), and the package versions the run used.
            """
        ),
        code(
            """
            headlines = pd.DataFrame(
                [
                    {"stage": name, "quantity": key, "value": value}
                    for name, entry in MANIFEST["stages"].items()
                    for key, value in entry.get("summary", {}).items()
                    if isinstance(value, (bool, int, float))
                ]
            ).set_index(["stage", "quantity"])
            display(headlines)
            display(pd.Series(MANIFEST["run"]["versions"], name="version").to_frame())
            """
        ),
        md(
            """
            ## The model

            The base model's card. TransformerLens re-implements the architecture, so the
            `model` stage checks that its log-probabilities equal Hugging Face's
            (`parity_max_abs_logprob_diff`) before anything is measured with hooks.
            """
        ),
        code(
            """
            card = read_json(stage_dir("model") / "model.json")
            display(pd.Series(card, name=CONFIG["model"]).to_frame())
            """
        ),
        md(
            r"""
            ## Step 1: RLHF on the VADER reward

            The paper's controlled-sentiment task: a review prefix (2–10 tokens) is continued by
            the policy, and the text earns
            $\mathrm{Reward}(s) = \mathrm{clip}\big(\tfrac15 \sum_{w \in s} V(w), -10, 10\big)$
            where $V$ is the VADER lexicon valence (−4…+4, 0 for words outside the lexicon).
            The paper used PPO (TRL 0.7: batch 64, KL coefficient 0.5, lr 1e-6); current TRL has
            no PPO, so the `rlhf` stage uses GRPO (group-relative advantages with a KL penalty to
            the base model), the modern equivalent. The table compares the base and the tuned
            policy on held-out prompts: mean reward with its 95% CI, Welch's t-test, and
            distinct-2 (share of distinct word bigrams), which falls when a policy collapses
            into repeating one rewarded phrase.
            """
        ),
        code(
            """
            from lfp_mech.plots.rlhf import dpo_curve_figure, reward_curve_figure

            rlhf_dir = stage_dir("rlhf")
            rlhf_summary = read_json(rlhf_dir / "summary.json")
            display(pd.read_csv(rlhf_dir / "eval.csv").set_index("policy"))
            if rlhf_summary["method"] == "dpo":
                show(dpo_curve_figure(rlhf_dir / "train_log.csv"))
            else:
                threshold = rlhf_summary["config"]["distinct2_threshold"]
                show(reward_curve_figure(rlhf_dir / "train_log.csv", distinct2_threshold=threshold))
            """
        ),
        md("Completions of the same held-out prompts by both policies, with their rewards:"),
        code(
            """
            completions = pd.read_json(rlhf_dir / "completions.jsonl", lines=True)
            assert set(completions["policy"]) >= {"base", "tuned"}
            columns = ["prompt", "completion", "reward"]
            base = completions.loc[completions["policy"] == "base", columns]
            tuned = completions.loc[completions["policy"] == "tuned", columns]
            side_by_side = base.merge(tuned, on="prompt", suffixes=(" (base)", " (tuned)"))
            display(side_by_side.head(10))
            if (RUN_DIR / "report.md").is_file():
                display(Markdown(f"The run's report: `{RUN_DIR / 'report.md'}` (and `report.html`)."))
            """
        ),
    ],
    """
    * **Every stage `complete`**, with the artifacts the later notebooks read. A stage that is
      `running` or missing means the run was interrupted: run the same command again and it
      resumes.
    * **Did RLHF work?** The tuned policy's mean reward should be above the base's with
      non-overlapping CIs (`ci_overlap` False, small Welch p). If not, nothing downstream has a
      learned feedback pattern to find, and the probes and IRL can only find what the base model
      already knew.
    * **Collapse.** A reward that rises while distinct-2 falls below the dashed line means the
      policy found one rewarded phrase and repeats it; probes and IRL then see a degenerate
      behaviour. Read the completions.
    """,
)

# --------------------------------------------------------------------------- 01 divergence

build(
    "01_layer_divergence",
    r"""
    # 01 · Which layers did RLHF change? (LFP appendix: layer divergence)

    Sparse autoencoders are expensive, so the LFP paper trains them only where fine-tuning left
    its mark. For every transformer block $l$ it sums the Frobenius norms of the parameter
    changes,

    $$\mathrm{div}(l) = \sum_{p \in \text{block } l} \lVert \theta^{\text{base}}_p - \theta^{\text{tuned}}_p \rVert_F ,$$

    and keeps the 5 most divergent blocks (their MLP outputs are what the SAEs encode). The
    appendix figure plots divergence against layer, one line per model. **Published:** the most
    divergent layers were mostly deep ones: Pythia-70m layers 1–5, Pythia-160m 7–11,
    GPT-Neo-125m 7–11.

    The divergence is a cheap proxy: a parameter change is not an activation change, and the
    sum over a block mixes attention and MLP weights of different sizes.
    """,
    [
        md("## The per-layer divergence"),
        code(
            """
            import torch

            from lfp_mech.plots.divergence import plot_layer_divergence

            div_dir = stage_dir("divergence")
            divergence = pd.read_csv(div_dir / "divergence.csv").sort_values("layer")
            summary = read_json(div_dir / "summary.json")
            card = read_json(stage_dir("model") / "model.json")
            assert len(divergence) == card["n_layers"], "one divergence value per layer"
            top = divergence.nsmallest(len(summary["top_layers"]), "rank")
            assert sorted(top["layer"]) == summary["top_layers_sorted"]
            display(Markdown(f"The {min(10, len(divergence))} most divergent layers:"))
            display(divergence.sort_values("rank").set_index("layer").head(10))
            """
        ),
        code(
            """
            values = torch.tensor(divergence["divergence"].to_numpy())
            show(
                plot_layer_divergence(
                    {f"{CONFIG['model']}: tuned vs base": values}, top_layers=summary["top_layers"]
                )
            )
            share = float(top["divergence"].sum() / divergence["divergence"].sum())
            display(
                Markdown(
                    f"Top {len(top)} layers {summary['top_layers_sorted']} carry {share:.0%} of "
                    f"the total divergence ({len(divergence)} layers)."
                )
            )
            """
        ),
        md("The layers the later stages use (activations and SAEs are taken at these hooks):"),
        code(
            """
            if MANIFEST["stages"].get("activations", {}).get("status") == "complete":
                acts = read_json(stage_dir("activations") / "summary.json")
                assert acts["layers"] == summary["top_layers_sorted"]
                display(pd.Series(acts["hook_names"], index=acts["layers"], name="hook").to_frame())
            """
        ),
    ],
    """
    * **Where is the change?** The paper found the deepest layers most changed. A flat profile
      means RLHF spread its update thinly (or hardly trained: compare with the reward gain in
      notebook 00); a single spike may be the embedding-adjacent block absorbing a lexical shift.
    * **How concentrated?** If the top-k layers carry little more than k/n of the total, the
      choice of layers is close to arbitrary and the SAE analysis could as well look elsewhere.
    * Smoke: the tiny model has 2 layers and both are "top"; the values are from 2 GRPO steps.
    """,
)

# --------------------------------------------------------------------------- 02 L1 sweep

build(
    "02_l1_sweep",
    r"""
    # 02 · The sparsity–reconstruction trade-off (LFP appendix: L1 sweep)

    An SAE rewrites an MLP output $x \in \mathbb{R}^n$ as a sparse, non-negative code
    $f = \mathrm{ReLU}(W_E x + b_E)$ and reconstructs $\hat x = W_D f$, trained on

    $$\mathcal{L} = \operatorname{mean} \lVert x - \hat x \rVert^2 + \alpha \lVert f \rVert_1 .$$

    The L1 coefficient $\alpha$ sets the trade-off: larger $\alpha$ gives fewer active features
    per token ("true sparsity", L0) but worse reconstruction. The paper's appendix figure sweeps
    $\alpha$ for Pythia-70m and plots reconstruction loss and L0 against it; the paper then used
    **α = 0.001** (GPT-Neo-125m: 0.0015), lr 1e-3, batch 32, 75,000 training examples.

    Our SAEs are SAE-Lens SAEs trained on activations rescaled to mean norm $\sqrt{n}$, with the
    L1 term weighted by decoder-row norms, so α is in different units from the paper's (the
    `alpha_meaning` below spells them out) and was re-calibrated with this sweep. Reconstruction
    is reported on held-out activations as the normalised loss
    $\sum\lVert x-\hat x\rVert^2/\sum\lVert x\rVert^2$ and the fraction of variance
    unexplained (FVU).
    """,
    [
        md("## The sweep"),
        code(
            """
            from lfp_mech.plots.saes import plot_l1_sweep

            sae_dir = stage_dir("saes")
            sae_summary = read_json(sae_dir / "summary.json")
            assert (sae_dir / "l1_sweep.csv").is_file(), "the run has no L1 sweep (sweep_alphas=[])"
            sweep = pd.read_csv(sae_dir / "l1_sweep.csv").sort_values("alpha")
            assert len(sweep) == len(sae_summary["l1_sweep"]["rows"])
            display(Markdown(f"**α in this package:** {sae_summary['alpha_meaning']}"))
            display(sweep.set_index("alpha"))
            """
        ),
        code(
            """
            show(
                plot_l1_sweep(
                    sweep.to_dict("records"),
                    chosen=sae_summary["alpha"],
                    layer=sae_summary["l1_sweep"]["layer"],
                )
            )
            """
        ),
        md(
            """
            ## The dictionaries the study uses

            With the chosen α (dashed line above), the `saes` stage trains a small (n features)
            and a big (2n) dictionary per layer. Held-out metrics, including the cross-entropy
            loss recovered when the SAE's reconstruction replaces the MLP output in the model,
            $(CE_\\text{zero} - CE_\\text{SAE}) / (CE_\\text{zero} - CE_\\text{clean})$
            (1 = as good as the real activation, 0 = as bad as zeroing it):
            """
        ),
        code(
            """
            metrics = pd.read_csv(sae_dir / "metrics.csv")
            display(metrics[metrics["variant"] == sae_summary["variant"]].set_index(["layer", "size"]))
            display(pd.Series(sae_summary["checks"], name="passed").to_frame())
            """
        ),
    ],
    """
    * **The trade-off curve.** L0 should fall steeply with α while the reconstruction loss rises;
      a good α sits near the knee, where L0 is small (tens of features per token, not hundreds)
      and FVU still low. Flat curves mean the sweep range is too narrow.
    * **Dead features** (never active on held-out tokens) grow with α; a large dead fraction
      wastes dictionary capacity.
    * **CE recovered** is the honest test of an SAE: low FVU with poor CE recovered means the
      SAE reconstructs the large but unimportant directions.
    * Smoke: 2 α values and ~6k training tokens on a random model; the numbers are noise.
    """,
)

# --------------------------------------------------------------------------- 03 tied vs untied

build(
    "03_tied_vs_untied",
    r"""
    # 03 · Tied or untied decoder? (LFP appendix table)

    The LFP paper ties the SAE decoder to the encoder, $W_D = W_E^\top$: half the parameters,
    and each feature's reading and writing direction coincide. Its appendix table justifies the
    choice by training both variants and comparing the **normalised reconstruction loss** and the
    **scaled true sparsity** (L0 divided by the dictionary size), averaged over the highly
    divergent layers of Pythia-70m and Pythia-160m.

    The `saes` stage trains an untied twin of every small dictionary on the same data with the
    same α and reports the same two quantities (`nmse`, `l0_scaled`), plus FVU, the dead-feature
    fraction and the CE loss recovered. SAE-Lens has no tied ReLU SAE, so the tied one is a
    subclass whose `W_enc` is `W_dec.T`; saved, it is a plain SAE-Lens SAE.
    """,
    [
        md("## Averaged over the divergent layers (the paper's table)"),
        code(
            """
            import numpy as np

            sae_dir = stage_dir("saes")
            assert (sae_dir / "tied_vs_untied.csv").is_file(), "run the saes stage with compare_untied"
            tied_vs_untied = pd.read_csv(sae_dir / "tied_vs_untied.csv").set_index("variant")
            display(tied_vs_untied)
            """
        ),
        md("## Per layer (small dictionaries)"),
        code(
            """
            metrics = pd.read_csv(sae_dir / "metrics.csv")
            small = metrics[metrics["size"] == "small"]
            columns = ["nmse", "l0_scaled", "fvu", "dead_fraction", "ce_recovered"]
            display(small.pivot(index="layer", columns="variant", values=columns))
            for variant, row in tied_vs_untied.iterrows():  # the table is the mean of the layers
                layer_mean = small.loc[small["variant"] == variant, ["nmse", "l0_scaled"]].mean()
                assert np.allclose(layer_mean, row[["nmse", "l0_scaled"]], atol=2e-3), variant
            """
        ),
        code(
            """
            difference = tied_vs_untied.loc["tied", columns] - tied_vs_untied.loc["untied", columns]
            display(difference.rename("tied - untied").to_frame())
            """
        ),
    ],
    """
    * **Does tying cost reconstruction?** A tied SAE has half the parameters; if its `nmse` and
      FVU are within a few percent of the untied one at similar `l0_scaled`, tying is free and
      gives features whose encoder and decoder directions agree (convenient for ablation and
      for the MMCS comparison of notebook 09).
    * **Sparsity at equal α is not equal sparsity.** Compare the pair at similar L0, not only at
      equal α: an untied encoder can buy lower loss with more active features.
    * Smoke: meaningless numbers (and negative CE recovered: the random model's SAEs hurt it).
    """,
)

# --------------------------------------------------------------------------- 04 token table

build(
    "04_token_prediction_table",
    r"""
    # 04 · What the probe thinks each word is worth (LFP Table 2 and appendix table)

    **The probe.** For a review sentence with a VADER word in it, the `probes` stage builds a
    *contrastive triple* $(x^+, x^0, x^-)$: the same sentence with a positive, a neutral and a
    negative word in that slot. $A(x)$ is the concatenation, over the divergent layers, of the
    small SAE's features at the substituted word (averaged over its tokens if it splits). The
    paper's dataset labels $A(x^+)$ with $+\lVert A(x^+) - A(x^0)\rVert_2$ and $A(x^-)$ with
    $-\lVert A(x^-) - A(x^0)\rVert_2$, so a linear regression on it learns the direction in
    feature space along which the tuned model separates good from bad words. Its predictions are
    rescaled to the lexicon's range [−4, 4].

    **The table.** The probe is applied to lexicon words that were in *no* training triple (each
    word placed in a few carrier sentences, features averaged) and its predicted valence is
    compared with VADER's. Table 2 of the paper lists eleven randomly chosen tokens with predicted
    and true sentiment for GPT-Neo-125m (the appendix has thirty); Table 5 (notebook 06) shows
    that the signs were mostly right even where the magnitudes were not.
    """,
    [
        md("## Held-out words: predicted vs true valence"),
        code(
            """
            probe_dir = stage_dir("probes")
            probe_summary = read_json(probe_dir / "summary.json")
            per_word = pd.read_csv(probe_dir / "per_word.csv", dtype={"word": str})
            assert len(per_word) == probe_summary["n_eval_words"]
            assert per_word["word"].is_unique and per_word["pred_tuned_sae"].notna().all()
            table = per_word[["word", "true_valence", "pred_tuned_sae", "abs_error_tuned"]].rename(
                columns={"pred_tuned_sae": "probe", "abs_error_tuned": "|error|"}
            )
            display(Markdown("Eleven random held-out words, as in the paper's Table 2:"))
            display(table.sample(n=min(11, len(table)), random_state=0).set_index("word"))
            """
        ),
        _per_word_figure('f"tuned SAE probe on {len(per_word)} held-out words"'),
        md(
            "The best and the worst predicted words, and every probe's prediction (baselines in 05):"
        ),
        code(
            """
            ranked = table.sort_values("|error|").set_index("word")
            display(pd.concat({"best": ranked.head(5), "worst": ranked.tail(5)}))
            display(per_word.set_index("word").filter(like="pred_").head(12))
            """
        ),
    ],
    """
    * **Sign before magnitude.** Most points should fall in the top-right and bottom-left
      quadrants (the sign is right) even when they are far from the diagonal; that is what the
      paper reports, and what Table 5 (notebook 06) quantifies.
    * **Saturation at ±4.** Predictions are scaled so the largest training prediction maps to 4
      and clipped; a band of words at exactly ±4 means the probe only separates two groups.
    * **Which words are wrong?** Large errors on words the policy never writes (notebook 07)
      are what the paper's Figure 4 predicts.
    * Smoke: a random model's probe; the table only shows the format.
    """,
)

# --------------------------------------------------------------------------- 05 Kendall tau

build(
    "05_kendall_tau",
    r"""
    # 05 · Does the probe rank words like the reward does? (LFP Kendall τ tables)

    Kendall's τ compares two rankings: the share of word pairs that the probe and the VADER
    lexicon order the same way minus the share they order oppositely (τ-b, with a correction for
    ties), with a p-value for τ = 0. The paper reports, for the VADER task:

    | model | p-value of τ |
    |---|---|
    | Pythia-70m | 0.26 |
    | Pythia-160m | **0.014** (significant) |
    | GPT-Neo-125m | 0.48 |
    | baseline: untrained, Xavier-initialised linear probe | 0.55 |

    and, in the appendix, τ on **negative** words only.

    A single untrained baseline says little, so the `probes` stage evaluates every probe on the
    same held-out words and adds baselines that each remove one ingredient:

    * `xavier`: the paper's baseline (untrained probe on the tuned model's SAE features);
    * `base_sae`: the whole pipeline on the **base** model: did RLHF add anything?
    * `tuned_mlp` / `base_mlp`: raw MLP outputs instead of SAE features: does the SAE help?
    * `tuned_embed` / `base_embed`: token **embeddings** alone: how much is just the word's
      identity, which any language model knows without RLHF?
    * `shuffled`: the training labels permuted: what a probe learns from nothing.

    Each row also has the paired bootstrap difference τ(tuned_sae) − τ(baseline) with its 95% CI
    (resampling words) and p-value.
    """,
    [
        md("## τ on all held-out words"),
        code(
            """
            probe_dir = stage_dir("probes")
            probe_summary = read_json(probe_dir / "summary.json")
            kendall = pd.read_csv(probe_dir / "kendall.csv")
            assert kendall["probe"].iloc[0] == "tuned_sae", "the first row is the probe under test"
            assert kendall["n_words"].nunique() == 1, "every probe is scored on the same words"
            columns = ["n_words", "tau", "p_value", "tau_ci_low", "tau_ci_high", "tuned_minus_this",
                       "diff_ci_low", "diff_ci_high", "diff_p_value"]
            display(kendall.set_index("probe")[columns])
            """
        ),
        code(
            """
            from lfp_mech.plots.probes import baselines_figure

            names = list(kendall["probe"])
            show(
                baselines_figure(
                    names,
                    kendall["tau"],
                    list(zip(kendall["tau_ci_low"], kendall["tau_ci_high"], strict=True)),
                    kendall["p_value"],
                )
            )
            null = probe_summary["shuffled_null_tau"]
            if null:
                display(
                    Markdown(
                        f"{len(null)} probes fitted on permuted labels: |τ| up to "
                        f"{max(abs(t) for t in null):.3f}; the tuned probe: τ = "
                        f"{kendall['tau'].iloc[0]:.3f} (p = {kendall['p_value'].iloc[0]:.3g})."
                    )
                )
            """
        ),
        md(
            """
            ## τ on negative words only (paper appendix), and on positive words only

            Within one sign, τ asks whether the probe also orders *magnitudes* (is "terrible"
            worse than "bad"?), which the sign alone cannot explain.
            """
        ),
        code(
            """
            within = ["tau_negative", "p_negative", "tau_negative_ci_low", "tau_negative_ci_high",
                      "tau_positive", "p_positive", "tau_positive_ci_low", "tau_positive_ci_high"]
            display(kendall.set_index("probe")[within])
            fig = baselines_figure(
                names,
                kendall["tau_negative"],
                list(zip(kendall["tau_negative_ci_low"], kendall["tau_negative_ci_high"], strict=True)),
                kendall["p_negative"],
            )
            fig.axes[0].set_title("negative held-out words only: tuned SAE probe vs baselines")
            fig.axes[0].set_ylabel("Kendall τ on negative words (95% CI)")
            show(fig)
            """
        ),
    ],
    """
    * **Significance is not the point; the baselines are.** A τ with p < 0.01 is only evidence of
      a *learned feedback pattern* if it beats `base_sae` (the same probe before RLHF) and
      `tuned_embed` (the word's identity): the paired difference's CI should exclude 0.
    * **Embeddings know sentiment.** If `tuned_embed` is as good as `tuned_sae`, the probe reads
      the words' meaning, which the model had before RLHF; the paper had no such baseline.
    * **The shuffled null** shows how large |τ| gets by chance with this many words.
    * **Negative words.** The policy is pushed toward positive words and rarely writes negative
      ones, so by the logic of Figure 4 (notebook 07) the probe should know them less well: τ on
      negative words alone can be near 0 even when the overall τ is not.
    * Smoke: all τ are chance-level by construction.
    """,
)

# --------------------------------------------------------------------------- 06 sign accuracy

build(
    "06_sign_accuracy",
    """
    # 06 · Does the probe get the sign right? (LFP Table 5)

    Kendall τ asks for the right *order*; the paper's Table 5 asks the simpler question whether
    the probe gives each lexicon word the right *sign*: the percentage of positive words predicted
    positive and of negative words predicted negative. The paper found high sign accuracy for
    its VADER probes, even where the magnitudes were off (notebook 04).

    Here a word is positive if its VADER valence is > 0 and negative if < 0, and a prediction
    counts only with the right strict sign (exactly 0 is wrong for both). The two columns must
    be read together: a probe that calls every word positive scores 100% on positive words and
    0% on negative ones. Their mean, the **balanced accuracy**, is 50% for any constant guess.
    CIs are bootstrap percentiles over words.
    """,
    [
        md("## Sign accuracy of every probe"),
        code(
            """
            probe_dir = stage_dir("probes")
            sign = pd.read_csv(probe_dir / "sign_accuracy.csv").set_index("probe")
            sign["balanced"] = (sign["sign_acc_positive"] + sign["sign_acc_negative"]) / 2
            display(sign)
            """
        ),
        md(
            """
            The same numbers recomputed from the per-word table (a consistency check), and the
            tuned probe's confusion table of signs:
            """
        ),
        code(
            """
            import numpy as np

            per_word = pd.read_csv(probe_dir / "per_word.csv", dtype={"word": str})
            for probe in sign.index:
                pred = per_word[f"pred_{probe}"]
                positive, negative = per_word["true_valence"] > 0, per_word["true_valence"] < 0
                assert np.isclose((pred[positive] > 0).mean(), sign.loc[probe, "sign_acc_positive"])
                assert np.isclose((pred[negative] < 0).mean(), sign.loc[probe, "sign_acc_negative"])
            true_sign = np.sign(per_word["true_valence"]).map({1: "positive", -1: "negative"})
            pred_sign = np.sign(per_word["pred_tuned_sae"]).map({1: "+", -1: "-", 0: "0"})
            display(pd.crosstab(true_sign.rename("VADER"), pred_sign.rename("probe"), margins=True))
            """
        ),
        _per_word_figure('"right sign = top-right and bottom-left quadrants"'),
    ],
    """
    * **Both columns high**, and balanced accuracy well above 50% with a CI that excludes it;
      compare with `base_sae` and `tuned_embed` exactly as for τ (notebook 05).
    * **One column at 100%, the other near 0%** is a probe whose predictions all share one sign
      (a large bias), not a good probe; this is the typical failure when most training labels
      are of one sign.
    * **Asymmetry.** Expect the probe to be better on positive words: the policy was pushed to
      write them, so that is where its representation met the reward (Figure 4, notebook 07).
    """,
)

# --------------------------------------------------------------------------- 07 word frequency

build(
    "07_word_frequency",
    """
    # 07 · Words the policy writes are the words the probe knows (LFP Figure 4)

    Figure 4 of the LFP paper plots, per lexicon word, the probe's error |probe − VADER| against
    how often the RLHF-tuned model generates that word. The finding: **the more often the tuned
    model writes a word, the more accurate the probe is on it**. The feedback pattern is learned
    where the policy got feedback: a word the policy never wrote during RLHF never earned a
    reward, so nothing tied the model's representation of it to the reward.

    Here the frequency is the word's count in the tuned policy's completions of the held-out
    prompts (the `rlhf` stage's `completions.jsonl`), split with the reward's own word tokenizer
    (`lfp_mech.rewards.words`), so a word counts exactly when the reward would score it. The
    association is summarised by Spearman's ρ (the paper's claim predicts ρ < 0).
    """,
    [
        md("## Frequencies and errors"),
        code(
            """
            import numpy as np

            import lfp_mech

            probe_dir = stage_dir("probes")
            probe_summary = read_json(probe_dir / "summary.json")
            per_word = pd.read_csv(probe_dir / "per_word.csv", dtype={"word": str})
            completions = pd.read_json(stage_dir("rlhf") / "completions.jsonl", lines=True)
            tuned = completions[completions["policy"] == "tuned"]
            texts = list(tuned["prompt"] + tuned["completion"])
            assert len(texts) == probe_summary["n_completions"]
            counts = lfp_mech.word_frequencies(texts, list(per_word["word"]))
            assert [counts[w] for w in per_word["word"]] == list(per_word["frequency"])
            rho, p_value = lfp_mech.frequency_error_correlation(
                per_word["frequency"].to_numpy(float), per_word["abs_error_tuned"].to_numpy(float)
            )
            display(
                Markdown(
                    f"{len(texts)} completions; {int((per_word['frequency'] > 0).sum())} of "
                    f"{len(per_word)} held-out words occur in them. Spearman ρ(frequency, |error|) "
                    f"= {rho:.3f} (p = {p_value:.3g})."
                )
            )
            display(per_word.sort_values("frequency", ascending=False).head(10).set_index("word")[
                ["true_valence", "pred_tuned_sae", "abs_error_tuned", "frequency"]])
            """
        ),
        code(
            """
            from lfp_mech.plots.probes import word_frequency_figure

            show(
                word_frequency_figure(
                    per_word["frequency"],
                    per_word["abs_error_tuned"],
                    list(per_word["word"]),
                    rho=rho,
                    p_value=p_value,
                )
            )
            """
        ),
        md("Mean error of words the policy never wrote vs words it wrote:"),
        code(
            """
            written = np.where(per_word["frequency"] > 0, "written by the policy", "never written")
            grouped = per_word.groupby(written)["abs_error_tuned"]
            display(grouped.agg(["count", "mean", "median"]))
            """
        ),
    ],
    """
    * **ρ < 0** with a small p is the paper's effect. With few completions most words have
      frequency 0 and ρ is undefined or dominated by a handful of words: count how many words
      occur at all before reading ρ.
    * **Confound:** frequent words are also common, short, mostly positive words (the policy was
      pushed to positive sentiment), and the probe may be better on positive words for that
      reason alone; compare within a sign (notebook 05's τ on positive words).
    * Smoke: the tiny policy writes byte soup, so every frequency is 0 and ρ is undefined (NaN).
    """,
)

# --------------------------------------------------------------------------- 08 logistic + PCA

build(
    "08_logistic_probe_pca",
    """
    # 08 · A logistic probe on preference data, and its PCA (LFP Table 3, Figure 5)

    For the preference tasks (helpful–harmless on Anthropic HH-RLHF, and toxicity) the LFP paper
    fine-tuned with DPO and probed differently: each text's SAE features $A$ are averaged over
    **all** its tokens, each text gets a binary label (positive/negative, derived from the
    averaged delta between chosen and rejected texts), and a **logistic regression** predicts it.
    **Published:** accuracy ≥ 99.80% on held-out data for every model (Table 3), and in
    Figure 5 the first principal component of the probe's inputs explains **97%** of their
    variance, with the two classes separated along it.

    The hub datasets are not available offline, so this notebook builds preference pairs from the
    run itself, with the VADER reward as the preference: the base and the tuned policy's
    completions of the same held-out prompt (`rlhf/completions.jsonl`), the higher-reward one
    chosen and ties dropped; if that gives too few pairs, pairs sampled from the tuned policy and
    ranked by reward (`lfp_mech.make_preference_pairs`: best vs worst of 4 samples per prompt) are
    added. `lfp_mech.probes.run_preference_probe` then fits two logistic probes on the tuned
    policy's mean-pooled SAE features:

    * `labels="preference"`: chosen = 1, rejected = 0, the real question;
    * `labels="delta"`: the paper's labels, the sign of $(A(x) - m)\\cdot\\bar d$ with $\\bar d$
      the mean chosen − rejected difference. These labels are a *linear function of the inputs*,
      so a linear probe separates them almost perfectly by construction.

    The split is by pair (both texts of a pair on the same side).
    """,
    [
        md("## Preference pairs"),
        code(
            """
            import lfp_mech

            MIN_PAIRS, MAX_PAIRS = 24, 128
            completions = pd.read_json(stage_dir("rlhf") / "completions.jsonl", lines=True)
            by_prompt = completions.pivot_table(
                index="prompt", columns="policy", values=["completion", "reward"], aggfunc="first"
            ).dropna()
            pairs = []
            for prompt, row in by_prompt.iterrows():
                base, tuned = row[("reward", "base")], row[("reward", "tuned")]
                if base != tuned:
                    better, worse = ("base", "tuned") if base > tuned else ("tuned", "base")
                    pairs.append(
                        {"prompt": prompt, "chosen": row[("completion", better)],
                         "rejected": row[("completion", worse)], "source": "base vs tuned"}
                    )
            policy_dir = stage_dir("rlhf") / "policy"
            if len(pairs) < MIN_PAIRS:
                prompts = lfp_mech.load_prompts("reviews", "test", n=4 * MIN_PAIRS, seed=CONFIG["seed"])
                sampled = lfp_mech.make_preference_pairs(
                    policy_dir, prompts, lfp_mech.vader_reward, n_samples=4,
                    n_new_tokens=8 if SMOKE else 20, min_new_tokens=2 if SMOKE else 8,
                    seed=CONFIG["seed"],
                )
                pairs += [{**p, "source": "sampled best vs worst"} for p in sampled]
            pairs = pd.DataFrame(pairs).head(MAX_PAIRS)
            assert len(pairs) >= 8, "too few preference pairs for a held-out split"
            display(pairs["source"].value_counts().to_frame())
            display(pairs.head(5))
            """
        ),
        md("## The logistic probes (Table 3)"),
        code(
            """
            import tempfile

            from lfp_mech.probes import run_preference_probe

            sae_dirs = lfp_mech.small_sae_dirs(RUN_DIR)
            model = lfp_mech.load_model(policy_dir)
            chosen = list(pairs["prompt"] + pairs["chosen"])
            rejected = list(pairs["prompt"] + pairs["rejected"])
            with tempfile.TemporaryDirectory() as tmp:
                preference = run_preference_probe(model, sae_dirs, chosen, rejected, Path(tmp))
                probe_table = pd.read_csv(Path(tmp) / "preference_probe.csv").set_index("labels")
            display(probe_table)
            """
        ),
        md(
            """
            ## PCA of the probe's inputs (Figure 5)

            The same mean-pooled features, projected on their first two principal components and
            coloured by preference:
            """
        ),
        code(
            """
            import numpy as np

            from lfp_mech.plots.probes import pca_figure

            saes = lfp_mech.load_saes(sae_dirs)
            features = lfp_mech.mean_pooled_features(model, saes, chosen + rejected)
            pca = lfp_mech.pca_explained(features, n_components=2)
            assert np.allclose(
                pca.explained_variance_ratio, preference["pca_explained_variance_ratio"], atol=1e-4
            ), "the PCA of run_preference_probe and of the same features agree"
            labels = np.r_[np.ones(len(chosen), int), np.zeros(len(rejected), int)]
            show(pca_figure(pca.projected, labels, pca.explained_variance_ratio))
            """
        ),
    ],
    """
    * **`preference` vs `delta` accuracy.** The paper's ≥ 99.8% used delta-derived labels, which
      a linear probe can fit by construction (the `delta` row should be near 100% here too).
      The `preference` row is the informative one: held-out accuracy well above 50% means the
      tuned model's features encode which text the reward prefers.
    * **`label_agreement_with_preference`** says how often the delta labels match the actual
      preference: near 50% means the paper's labels are not about the preference at all.
    * **PC1's share.** A PC1 near 97% (as in the paper) with both classes spread along it means
      one dominant direction, often text length or position, not preference. Look at whether the
      colours separate along PC1, not only at the percentage.
    * Smoke: a random model, so preference accuracy is chance and the delta labels are trivial.
    """,
)

# --------------------------------------------------------------------------- 09 descriptions

build(
    "09_feature_descriptions",
    """
    # 09 · What do the features mean? (LFP Tables 1, 8–10)

    The LFP paper validates its probes by asking what the features they use *are*. It picks the
    features the small and the big dictionary of a layer share (high **max cosine similarity**,
    MMCS, between a small-dictionary decoder direction and any big-dictionary one: a direction
    found twice is more likely a real feature of the model than an artefact of one training run),
    and has GPT-4 describe each one in the style of Bills et al. (2023): show its top-activating
    contexts with activations discretised to 0–10, ask for an explanation, simulate activations
    from the explanation, score the simulation by correlation. Each description is then labelled
    *related to the fine-tuning task* or not. Tables 1 and 8–10 list layer, feature index and
    description.

    Offline there is no GPT-4, so the `validate` stage's default labeler is a lexicon test: for
    the VADER task, the mean |valence| of the words a feature fires most on, against the same
    statistic for random features of the same SAE (a permutation-style p-value; task-related if
    p < α). Its description names the polarity and the top words. With an OpenAI-compatible
    endpoint configured (`LFP_MECH_LLM_BASE_URL`, `LFP_MECH_LLM_MODEL`) the stage runs the
    explain–simulate–score loop instead. The features described are, per layer, the highest-MMCS
    features and the features the feedback probe weights most.
    """,
    [
        md("## Feature overlap between the small and the big dictionary (MMCS)"),
        code(
            """
            import torch

            from lfp_mech.plots.saes import plot_mmcs

            sae_dir = stage_dir("saes")
            sae_summary = read_json(sae_dir / "summary.json")
            mmcs = {
                layer: torch.tensor(pd.read_csv(sae_dir / f"mmcs_L{layer}.csv")["mmcs"].to_numpy())
                for layer in sae_summary["layers"]
            }
            show(plot_mmcs(mmcs, threshold=sae_summary["config"]["mmcs_threshold"]))
            high = read_json(sae_dir / "high_mmcs_features.json")
            display(
                pd.DataFrame(
                    {entry["hook_name"]: entry["top_features"][:10] for entry in high.values()}
                ).rename_axis("rank")
            )
            """
        ),
        md("## The descriptions (paper format: layer, feature, description)"),
        code(
            """
            val_dir = stage_dir("validate")
            val_summary = read_json(val_dir / "summary.json")
            descriptions = pd.read_csv(val_dir / "descriptions.csv")
            choice = read_json(val_dir / "feature_choice.json")
            assert len(descriptions) == sum(len(ids) for ids in choice.values())
            labeler = "LLM (explain, simulate, score)" if val_summary["llm_descriptions"] else "offline lexicon test"
            display(
                Markdown(
                    f"{len(descriptions)} features described by the **{labeler}**; "
                    f"{val_summary['n_task_related']} labelled task-related."
                )
            )
            paper_columns = ["layer", "feature", "description", "task_related", "p_value"]
            display(descriptions.sort_values("p_value")[paper_columns].head(15))
            """
        ),
        md(
            """
            How much the feedback probe relies on each described feature: its rank by |probe
            weight| within its layer (1 = the probe's most weighted feature of that layer).
            """
        ),
        code(
            """
            from safetensors import safe_open

            from lfp_mech.probes import ordered_hooks

            with safe_open(stage_dir("probes") / "probes.safetensors", "pt") as f:
                probe_hooks = f.metadata()["hooks"].split(",")
                weight = f.get_tensor("tuned_sae.weight")
            assert probe_hooks == [h for h, _ in ordered_hooks(dict.fromkeys(choice))]
            layer_of = dict(zip(sae_summary["hook_names"], sae_summary["layers"], strict=True))
            widths = [read_json(sae_dir / f"L{layer_of[h]}_small" / "cfg.json")["d_sae"] for h in probe_hooks]
            assert sum(widths) == weight.numel(), "probe width = total SAE features"
            rank = {}
            for hook, chunk in zip(probe_hooks, weight.split(widths), strict=True):
                order = chunk.abs().argsort(descending=True).tolist()
                rank.update({(hook, feature): i + 1 for i, feature in enumerate(order)})
            descriptions["probe_weight_rank"] = [rank[(h, f)] for h, f in zip(descriptions["hook"], descriptions["feature"], strict=True)]
            display(descriptions.sort_values("probe_weight_rank")[
                ["layer", "feature", "probe_weight_rank", "description", "task_related", "mean_valence", "frequency"]
            ].head(12))
            """
        ),
        md(
            """
            ## Top-activating contexts

            The evidence behind a description: the contexts where the feature fires most, with
            the activating token in `[[brackets]]` (features with the smallest p-value first).
            """
        ),
        code(
            """
            contexts = read_json(val_dir / "top_contexts.json")
            rows = []
            for _, feature in descriptions.sort_values("p_value").head(3).iterrows():
                for example in contexts[feature["hook"]][str(feature["feature"])][:4]:
                    tokens, acts = example["context"], example["context_acts"]
                    at = min(range(len(acts)), key=lambda i: abs(acts[i] - example["activation"]))
                    text = "".join(f"[[{t}]]" if i == at else t for i, t in enumerate(tokens))
                    rows.append(
                        {"layer": feature["layer"], "feature": feature["feature"],
                         "activation": example["activation"], "context": text}
                    )
            display(pd.DataFrame(rows))
            """
        ),
    ],
    """
    * **MMCS.** Most small-dictionary features should have a near-duplicate in the big one
      (MMCS near 1); a second mode at low MMCS are features specific to one training run.
    * **Do the probe's features carry sentiment?** The features the probe weights most (rank 1,
      2, ...) should be the task-related ones, firing on sentiment words of the right polarity.
      If the probe's top features are "no clear sentiment", the probe relies on something else
      (position, frequency, a single token).
    * **A description is a hypothesis.** Check it against the contexts: a feature "firing on
      positive words" should show positive words in brackets. The offline labeler only tests
      sentiment; the LLM labeler's simulation score says how predictive its explanation is.
    * Smoke: random-model features fire on bytes of the first token; nothing is task-related.
    """,
)

# --------------------------------------------------------------------------- 10 frequency

build(
    "10_activation_frequency",
    """
    # 10 · Are the task-related features active where the feedback is? (LFP Table 7)

    If a feature is part of the learned feedback pattern, it should be active when the model
    processes inputs that the feedback cares about. The paper's Table 7 compares, on the inputs
    the probe predicts with **delta > 3** (strong positive implicit feedback; predictions are
    normalised to the VADER range [−4, 4]), how often the features GPT-4 called task-related are
    active against the average feature of the dictionary. **Published:** the task-related
    features were **2–3× more often active** than the average feature.

    The probe's inputs are its dataset D: for each contrastive triple (x⁺, x⁰, x⁻) the SAE
    features at the substituted word of x⁺ (label +Δ⁺) and of x⁻ (label −Δ⁻). The `probes` stage
    saves them per layer with the tuned SAE probe's prediction of each
    (`probes/probe_inputs.safetensors`; the probe was fitted on all of D, its evaluation uses
    held-out lexicon words), and the `validate` stage selects those with predicted delta > 3.

    The table has one row per layer and feature group (`task-related`, all `chosen` features,
    `all features`): `active_share` is the mean share of the selected inputs on which a group's
    features are active (> 0), and `ratio_to_average` divides it by the all-features share.
    `source` and `inputs` say which inputs were used and `n_inputs` how many were selected (out
    of `n_inputs_total`). If no input passes the threshold the shares are NaN and `n_inputs` is
    0; the stage does not fall back to other inputs. (A run whose probes stage predates
    `probe_inputs.safetensors` uses corpus tokens of VADER words with |valence| ≥ 1 instead,
    and says so in `source`.) `active_share_all_inputs` is the same share over all inputs.
    """,
    [
        md("## Table 7"),
        code(
            """
            from lfp_mech.plots.validate import activation_frequency_figure

            val_dir = stage_dir("validate")
            frequency = pd.read_csv(val_dir / "activation_frequency.csv")
            first = frequency.iloc[0]
            total = first.get("n_inputs_total", "?")  # tables of older runs lack source/total
            display(
                Markdown(
                    f"Inputs ({first.get('source', 'corpus tokens')}): **{first['inputs']}** "
                    f"({first['n_inputs']} of {total} selected)"
                )
            )
            shown = frequency.drop(columns=["source", "inputs"], errors="ignore")
            display(shown.set_index(["hook", "group"]))
            show(activation_frequency_figure(frequency.to_dict("records")))
            """
        ),
        md(
            """
            ## The selected probe inputs

            The tuned probe's predicted delta of every input of D, split by the sign of its
            label, with the threshold; then the words behind the selected inputs. Normalisation
            maps the largest |prediction| on D to 4, so the threshold 3 keeps the top of that
            range; inputs with a strongly *negative* prediction are not selected (the paper's
            "delta > 3").
            """
        ),
        code(
            """
            from lfp_mech.probes import PROBE_INPUTS_FILE, load_probe_inputs

            threshold = read_json(val_dir / "summary.json")["config"]["delta_threshold"]
            inputs_path = stage_dir("probes") / PROBE_INPUTS_FILE
            if inputs_path.exists():
                probe_inputs = load_probe_inputs(inputs_path)
                pred = probe_inputs.predicted_delta.numpy()
                positive = probe_inputs.label_delta.numpy() > 0
                fig, ax = plt.subplots(figsize=(6.0, 3.2))
                ax.hist(
                    [pred[positive], pred[~positive]], bins=40, stacked=True,
                    label=["A(x⁺), label +Δ⁺", "A(x⁻), label −Δ⁻"],
                )
                ax.axvline(threshold, color="k", ls="--", lw=1)
                ax.set_xlabel("probe-predicted delta (normalised to [-4, 4])")
                ax.set_ylabel("probe inputs")
                ax.legend(fontsize=7)
                show(fig)
                selected = pred > threshold
                display(
                    Markdown(
                        f"{int(selected.sum())} of {len(pred)} probe inputs have predicted delta "
                        f"> {threshold:g}; {int((pred < -threshold).sum())} have < −{threshold:g}."
                    )
                )
                chosen_inputs = pd.DataFrame(
                    {"word": probe_inputs.words, "text": probe_inputs.texts, "predicted": pred}
                )[selected]
                display(chosen_inputs["word"].value_counts().head(15).rename("selected inputs").to_frame())
                display(chosen_inputs.sort_values("predicted", ascending=False).head(8))
            else:
                display(Markdown(f"No `{PROBE_INPUTS_FILE}` in this run: Table 7 used corpus tokens."))
            """
        ),
        md(
            """
            ## Per-feature activation frequencies

            How often each feature fires on all corpus tokens (`feature_frequencies.safetensors`),
            chosen features against the whole dictionary. These are corpus-token frequencies (the
            ablation's matched random control uses them), not the probe inputs of Table 7.
            """
        ),
        code(
            """
            from safetensors.torch import load_file

            per_feature = load_file(val_dir / "feature_frequencies.safetensors")
            choice = read_json(val_dir / "feature_choice.json")
            rows = []
            for hook, freq in per_feature.items():
                chosen = freq[choice[hook]]
                rows.append(
                    {"hook": hook, "chosen: mean": float(chosen.mean()),
                     "chosen: median": float(chosen.median()), "all: mean": float(freq.mean()),
                     "all: median": float(freq.median()), "dead features": int((freq == 0).sum())}
                )
            display(pd.DataFrame(rows).set_index("hook"))
            """
        ),
    ],
    """
    * **Ratio > 1 on the selected inputs**, and larger than the same ratio over all inputs: the
      features fire *specifically* where the probe sees strong positive feedback, not just often
      everywhere. A feature group that is active on every input has a ratio near 1 that says
      nothing.
    * **How many inputs were selected** (`n_inputs`): with a handful the shares are coarse
      (multiples of 1/n); with none the table is NaN by design.
    * **Selection is partly circular.** The `chosen` features include the probe's most heavily
      weighted features, and the inputs are selected by the same probe, so a high `chosen`
      ratio is expected by construction (the paper had the same issue). The `task-related`
      features are labelled from corpus contexts, independently of the probe.
    * Smoke: random-model features fire on almost every input, so every ratio is close to 1.
    """,
)

# --------------------------------------------------------------------------- 11 ablation

build(
    "11_ablation",
    r"""
    # 11 · Switching the features off (LFP Table 6)

    The last check of the LFP paper: if the task-related features carry the learned feedback
    pattern, removing them while the model writes should cost reward. Table 6 zero-ablates them
    during generation and reports the mean reward of 1000 completions to 30-token prefixes, for
    the base and the fine-tuned model, before and after. **Published:** performance was
    "consistent or worse" after ablation. (The paper's released code zeroed residual-stream
    *dimensions* instead of SAE features, on a random model; see `REFERENCE.md` §C.)

    Here an ablation removes exactly the chosen features' decoder contributions and keeps the
    SAE's error term,

    $$x \;\mapsto\; x - \sum_{f \in F} a_f(x)\, W_{\text{dec}}[f],$$

    so ablating nothing leaves the model unchanged and nothing the SAE fails to reconstruct is
    lost. Three conditions per model: `clean`, `task` (the task-related features; all described
    features if none is labelled task-related) and `random`, the same number of random features
    matched in activation frequency, the control the paper did not have. Means come with 95%
    t-intervals, and each ablation with the paired difference to the clean completions (same
    prompts, same sampling seed).
    """,
    [
        md("## Table 6"),
        code(
            """
            from lfp_mech.plots.validate import ablation_figure

            val_dir = stage_dir("validate")
            val_summary = read_json(val_dir / "summary.json")
            ablation = pd.read_csv(val_dir / "ablation.csv")
            features = read_json(val_dir / "features.json")
            display(
                Markdown(
                    f"Ablated set: **{features['ablated_set']}** "
                    f"({val_summary['n_ablated']} features, {val_summary['mode']} ablation); "
                    f"reward: {val_summary['reward']}; {val_summary['n_completions']} completions per cell."
                )
            )
            display(ablation.set_index(["model", "condition"]))
            show(ablation_figure(ablation.to_dict("records"), confidence=val_summary["config"]["confidence"]))
            """
        ),
        md("Features ablated per layer and condition:"),
        code(
            """
            counts = {
                condition: {hook: len(ids) for hook, ids in per_hook.items()}
                for condition, per_hook in features["ablated"].items()
            }
            display(pd.DataFrame(counts).fillna(0).astype(int))
            """
        ),
        md("## Example completions of the fine-tuned model"),
        code(
            """
            import numpy as np

            examples = read_json(val_dir / "completions.json")
            for model, per_condition in examples["rewards"].items():  # the table's means
                for condition, rewards in per_condition.items():
                    cell = ablation[(ablation["model"] == model) & (ablation["condition"] == condition)]
                    assert np.isclose(np.mean(rewards), cell["mean_reward"].item(), atol=1e-5)
            tuned = examples["completions"]["tuned"]
            display(pd.DataFrame({"prompt": examples["prompts"], **tuned}).head(8))
            """
        ),
    ],
    """
    * **Task vs random, not task vs clean.** Any ablation perturbs the model; the evidence for a
      feedback pattern is a drop in reward from ablating the task features that is larger than
      from ablating matched random ones (compare the `delta_vs_clean` CIs).
    * **Tuned vs base.** If the features encode what RLHF added, ablating them should hurt the
      tuned model more than the base model.
    * **Read the completions**: an ablation that breaks fluency also lowers the reward, for a
      reason unrelated to sentiment.
    * Smoke: 8 completions of 6 tokens from a random model; all rewards are ~0.
    """,
)

# --------------------------------------------------------------------------- 12 IRL acc/F1

build(
    "12_irl_accuracy_f1",
    """
    # 12 · Recovering the reward from behaviour: accuracy and F1 (IRL paper)

    Joselowitz et al. ask whether the reward an RLHF model was trained on can be read off its
    *behaviour*. An RLHF'd **expert** and the model it started from (**non-expert**) complete
    the same prompts; a reward model $R$ (the base LM with a linear head) is trained with a
    max-margin objective on pairs of their texts: with $x = R(\\text{expert}) -
    R(\\text{non-expert})$, the loss is $-x$ if $x > 0$ and $-2x$ otherwise (violations cost
    twice). $R$ is then compared with the true reward on held-out texts: both rewards are
    binarised and scored by **accuracy** and **F1**, plus correlations.

    **Published** (toxicity task, Pythia policies RLHF'd against a RoBERTa toxicity classifier):

    | policy | accuracy | F1 |
    |---|---|---|
    | Pythia-70m | 80.40% | 78.39% |
    | Pythia-410m | 78.20% | 71.61% |

    The 80.40% is the **best of 78 runs**; the mean over runs was about 0.61 ± 0.10.

    Here the expert is the `rlhf` stage's VADER policy and the true reward is VADER. The true
    reward is binarised at 0 (positive sentiment); the IRL reward at a threshold fitted on the
    *training* texts (the max-margin loss sees only reward differences, so $R$'s offset is
    arbitrary; threshold 0 is reported too, as `acc_zero`). Held-out texts: both models'
    completions of test prompts plus other review sentences. The honest headline is the median
    over seeds at the last epoch; the best run is selected on the evaluation texts themselves.
    """,
    [
        md("## Summary over seeds, the best run, and the majority-class baseline"),
        code(
            """
            irl_dir = stage_dir("irl") / "vader"
            irl_summary = read_json(irl_dir / "summary.json")
            final = pd.DataFrame(irl_summary["final_epoch"]).T
            display(Markdown(f"Last epoch, over {irl_summary['n_seeds']} seeds:"))
            display(final.loc[["acc", "f1", "acc_zero", "f1_zero", "pearson", "spearman", "kendall", "pair_acc"]])
            best = pd.Series(irl_summary["best_run"], name="best run (selected on held-out texts)")
            display(best.to_frame())
            display(
                Markdown(
                    f"Held-out texts: {irl_summary['n_heldout']}, of which "
                    f"{irl_summary['heldout_positive_rate']:.0%} have positive true reward: always "
                    f"predicting the majority class scores **{irl_summary['majority_baseline_acc']:.1%}** accuracy."
                )
            )
            """
        ),
        md("## Every run (seed × epoch)"),
        code(
            """
            runs = pd.read_csv(irl_dir / "irl_runs.csv")
            assert len(runs) == irl_summary["n_runs"]
            display(runs.set_index(["seed", "epoch"]))
            """
        ),
        md(
            """
            ## The best run on the held-out texts

            `heldout_scores.jsonl` holds each held-out text's true and (best-run) IRL reward.
            Binarising them again reproduces the best run's accuracy and F1:
            """
        ),
        code(
            """
            from sklearn.metrics import accuracy_score, f1_score

            from lfp_mech.plots.irl import plot_three_way

            scores = pd.read_json(irl_dir / "heldout_scores.jsonl", lines=True)
            assert len(scores) == irl_summary["n_heldout"]
            row = runs[(runs["seed"] == best["seed"]) & (runs["epoch"] == best["epoch"])].iloc[0]
            truth, predicted = scores["true_reward"] > 0, scores["irl_reward"] > row["threshold"]
            accuracy, f1 = accuracy_score(truth, predicted), f1_score(truth, predicted, zero_division=0)
            assert abs(accuracy - best["acc"]) <= 1 / len(scores) and abs(f1 - best["f1"]) < 0.05
            display(pd.crosstab(truth.rename("true reward > 0"), predicted.rename("IRL > threshold")))
            display(scores.groupby("source")[["true_reward", "irl_reward"]].agg(["count", "mean"]))
            show(plot_three_way(scores["true_reward"], scores["irl_reward"], title="held-out texts (best IRL run)"))
            """
        ),
        md(
            """
            ## Where the errors are, and the supervised ceiling

            Accuracy of the best run per source of held-out text, and a **control the paper
            lacked**: a logistic probe fitted with the *true* labels on the untrained reward
            model's own pooled features and the same training texts (`supervised_ceiling`).
            IRL never sees the true reward, so it should not beat that probe; an IRL accuracy
            close to it means the representation and the texts, not the max-margin objective,
            are the limit.

            A second control reads the policy's *probabilities* instead of its texts: the
            implicit reward of KL-regularised RLHF, $\\log \\pi_\\text{expert}(y) -
            \\log \\pi_\\text{base}(y)$ averaged over tokens (`log_ratio_reward`; the optimum of
            RLHF is $\\pi \\propto \\pi_\\text{ref}\\, e^{r/\\beta}$). It needs no training, and is
            thresholded like the IRL reward (the cut fitted on the training texts).

            A third measures how much of the reward the demonstrations show at all
            (`expressed_lexicon_bound`, VADER task only): the true lexicon kept only on the words
            whose use the expert moved the way their valence says (more often if positive, less
            often if negative). A held-out text whose sentiment rests on a word the expert never
            moved (VADER scores "original", "created" and "played" positive) can be right only
            if the reward model generalises to that word from others.
            """
        ),
        code(
            """
            scores["correct"] = truth == predicted
            aggregations = dict(
                n=("correct", "size"), accuracy=("correct", "mean"),
                true_positive_rate=("true_reward", lambda r: (r > 0).mean()),
            )
            log_ratio = irl_summary.get("log_ratio_control")  # runs made before it lack it
            if log_ratio is not None:
                scores["log_ratio_correct"] = truth == (scores["log_ratio"] > log_ratio["threshold"])
                aggregations["log_ratio_accuracy"] = ("log_ratio_correct", "mean")
            bound = irl_summary.get("lexicon_bound")  # VADER only; runs made before it lack it
            if bound is not None:
                scores["lexicon_correct"] = truth == (scores["expressed_lexicon"] > 0)
                aggregations["expressed_lexicon_accuracy"] = ("lexicon_correct", "mean")
            display(scores.groupby("source").agg(**aggregations))
            median = final["median"].rename("IRL, median over seeds")
            if "supervised_ceiling" in irl_summary:
                ceiling = pd.Series(irl_summary["supervised_ceiling"], name="supervised ceiling")
                median = pd.concat([median, ceiling], axis=1)
            if log_ratio is not None:
                median = pd.concat([median, pd.Series(log_ratio, name="log-ratio control")], axis=1)
            if bound is not None:
                expressed = pd.Series(bound["expressed"], name="expressed-lexicon bound")
                median = pd.concat([median, expressed], axis=1)
            display(median.loc[["acc", "f1", "spearman", "kendall"]])
            """
        ),
        md(
            """
            ## The paper's own task: toxicity

            The `irl` stage also detoxifies the base model with GRPO on the offline toxicity
            reward ($1 - 2\\,p_\\text{toxic}$, `alt-profanity-check`), then recovers that reward
            from the detoxified model's behaviour the same way (`irl/toxicity/`). The policy
            table reports the toxicity probability of each policy's completions, as the
            paper's IRL-RLHF table does.
            """
        ),
        code(
            """
            tox_dir = stage_dir("irl") / "toxicity"
            if (tox_dir / "summary.json").is_file():
                tox = read_json(tox_dir / "summary.json")
                display(pd.DataFrame(tox["final_epoch"]).T.loc[["acc", "f1", "spearman", "kendall"]])
                log_ratio = tox.get("log_ratio_control")  # off by default for this task
                display(Markdown(
                    f"Majority-class baseline: **{tox['majority_baseline_acc']:.1%}**; supervised "
                    f"ceiling: **{tox['supervised_ceiling']['acc']:.1%}**; "
                    + (f"log-ratio control: **{log_ratio['acc']:.1%}**; " if log_ratio else "")
                    + f"{tox['n_heldout']} held-out texts."
                ))
                table = next(
                    (tox_dir / sub / f"{sub}.csv" for sub in ("irl_rlhf", "policies")
                     if (tox_dir / sub / f"{sub}.csv").is_file()),
                    None,
                )
                if table is not None:
                    display(pd.read_csv(table)[["policy", "mean_reward", "toxicity_mean", "n"]])
                display(Image(filename=str(tox_dir / "irl_heatmaps.png")))
            else:
                display(Markdown("This run has no toxicity task (`irl.toxicity_rlhf_steps=0`)."))
            """
        ),
    ],
    """
    * **Against the majority baseline.** With a skewed held-out set, accuracy must be read
      against always predicting the majority class; F1 and the rank correlations are harder to
      game.
    * **Median vs best.** The paper's 80.4% is a maximum over 78 runs picked on the evaluation
      data; compare our best run with our median to see how much of such a headline is
      selection.
    * **Source means.** The IRL reward should score expert texts above non-expert ones
      (`pair_acc`), and its ranking of the *other* texts (never generated by either model) shows
      whether it learned sentiment or just "looks like the expert".
    * Smoke: 24 held-out texts from a random model; the accuracy is the majority-class rate.
    """,
)

# --------------------------------------------------------------------------- 13 heatmaps

build(
    "13_irl_nonidentifiability_heatmaps",
    """
    # 13 · Many rewards explain the same behaviour (IRL paper: non-identifiability)

    IRL is ill-posed: many reward functions make the same behaviour optimal (a constant offset,
    a rescaling, or rewards that differ only on texts the policy never writes). The IRL paper
    shows this empirically: many runs (seeds × epochs) reach reward models with **similar
    accuracy but different rewards**, displayed as heatmaps of accuracy and correlation across
    runs and epochs.

    The `irl` stage trains `n_seeds` reward models (each seed draws its own head initialisation
    and data order) for `n_epochs` each, evaluating every epoch. Below: held-out accuracy, F1 and
    Spearman correlation with the true reward per seed × epoch, and how much the seeds' rewards
    agree with *each other* (Pearson correlation of their held-out rewards after the last epoch).
    """,
    [
        md("## Seeds × epochs"),
        code(
            """
            from lfp_mech.plots.irl import plot_seed_heatmaps

            irl_dir = stage_dir("irl") / "vader"
            rows = read_json(irl_dir / "irl_runs.json")
            runs = pd.DataFrame(rows)
            assert runs["seed"].nunique() * runs["epoch"].nunique() == len(runs), "one row per seed x epoch"
            show(plot_seed_heatmaps(rows, metrics=("acc", "f1", "spearman")))
            for metric in ("acc", "spearman"):
                display(Markdown(f"**{metric}**"))
                display(runs.pivot(index="seed", columns="epoch", values=metric))
            """
        ),
        md(
            """
            ## Agreement between seeds

            The per-seed held-out rewards are not saved as a table, so this is the stage's figure
            (`irl_seed_agreement.png`). Off-diagonal correlations well below 1 at similar
            accuracy are the non-identifiability.
            """
        ),
        code(
            """
            display(Image(filename=str(irl_dir / "irl_seed_agreement.png")))
            """
        ),
        md("## Spread of the last epoch across seeds"),
        code(
            """
            last = runs[runs["epoch"] == runs["epoch"].max()]
            spread = last[["acc", "f1", "pearson", "spearman", "pair_acc"]].describe().T
            spread["max - median"] = spread["max"] - spread["50%"]
            display(spread)
            """
        ),
    ],
    """
    * **Similar accuracy, different rewards:** a narrow accuracy range across seeds together with
      low seed-to-seed correlations is the non-identifiability the paper describes; the
      behaviour pins down the decision, not the reward.
    * **Epochs.** Accuracy that rises and then falls with epochs is over-fitting to the
      demonstrations; that is why every epoch is evaluated.
    * **`max - median`** is the optimism of reporting the best run (the paper's 80.4% was the
      best of 78).
    * Smoke: 2 seeds × 2 epochs on 24 texts; the heatmap only shows the layout.
    """,
)

# --------------------------------------------------------------------------- 14 IRL-RLHF

build(
    "14_irl_rlhf",
    """
    # 14 · RLHF with the recovered reward (IRL paper: IRL-RLHF)

    If IRL recovered the reward, training a fresh policy on the *recovered* reward should
    reproduce the effect of training on the true one. The IRL paper re-ran RLHF with the
    extracted reward and measured the toxicity of the outputs. **Published** (Pythia-70m, mean
    toxicity, lower is better): SFT model **0.0559** → RLHF with the ground-truth reward
    **0.0358** → RLHF with the IRL reward **0.0264**: the recovered reward worked at least as well.

    `lfp_mech.irl_rlhf` does this for the run's VADER task: it trains a policy from the base
    model on the IRL stage's best reward model (normalised so 0 is its fitted decision threshold)
    with the same GRPO trainer as the `rlhf` stage, then scores the base policy, the true-reward
    policy (the `rlhf` stage's) and the IRL-reward policy on the same held-out prompts with the
    **true** reward (and, for reference, the mean recovered reward, `irl_reward_mean`).

    The `irl` stage runs it after the reward recovery (`irl/irl_rlhf/`; its `rlhf_steps` option
    sets the budget, `rlhf_steps=0` skips it). If the run has no such table, this notebook runs
    `irl_rlhf` with a **tiny budget** (2 optimizer steps) into a temporary folder, which shows
    the procedure but says nothing about the result.
    """,
    [
        md("## The table"),
        code(
            """
            import tempfile

            import lfp_mech
            from lfp_mech.rlhf import RLHFConfig

            irl_dir = stage_dir("irl")
            rlhf_dir = irl_dir / "irl_rlhf"
            if (rlhf_dir / "irl_rlhf.csv").is_file():
                table = pd.read_csv(rlhf_dir / "irl_rlhf.csv")
                steps = CONFIG["stages"].get("irl", {}).get("rlhf_steps", "the stage's default")
                display(Markdown(f"From the `irl` stage (`{rlhf_dir}`), {steps} GRPO steps."))
            else:
                rlhf_dir = None
                options = {"seed": CONFIG["seed"], "device": CONFIG["device"]}
                options |= CONFIG["stages"].get("rlhf", {})
                options |= {"max_steps": 2, "n_train_prompts": 8, "n_eval_prompts": 8 if SMOKE else 32}
                rlhf_config = RLHFConfig(**options)
                prompts = lfp_mech.load_prompts("reviews", "train", n=8, seed=CONFIG["seed"])
                with tempfile.TemporaryDirectory() as tmp:
                    result = lfp_mech.irl_rlhf(
                        CONFIG["model"],
                        irl_dir / "vader" / "reward_model",
                        prompts,
                        rlhf_config,
                        tmp,
                        true_policy=str(stage_dir("rlhf") / "policy"),
                        device=CONFIG["device"],
                    )
                table = pd.DataFrame(result["table"])
                display(Markdown(f"Tiny demonstration run: {rlhf_config.max_steps} GRPO steps."))
            assert {"policy", "mean_reward", "ci95_low", "ci95_high"} <= set(table.columns)
            assert len(table) >= 2 and table["policy"].iloc[-1] == "RLHF (IRL reward)"
            display(table.set_index("policy"))
            """
        ),
        md(
            """
            ## Training on the recovered reward

            The IRL-reward policy's training curve: here the reward on the left axis is the
            *recovered* reward the policy was trained on, not VADER.
            """
        ),
        code(
            """
            from lfp_mech.plots.rlhf import reward_curve_figure

            if rlhf_dir is not None and (rlhf_dir / "train_log.csv").is_file():
                threshold = read_json(stage_dir("rlhf") / "summary.json")["config"]["distinct2_threshold"]
                show(reward_curve_figure(rlhf_dir / "train_log.csv", distinct2_threshold=threshold))
            else:
                display(Markdown("No training log kept for the tiny demonstration run."))
            """
        ),
    ],
    """
    * **True reward of the IRL-reward policy** against the base (does the recovered reward
      improve the real objective?) and against the true-reward policy (does it match it?). The
      paper's IRL-reward policy even beat the ground-truth one; with a non-identifiable reward
      it could as well have exploited what the IRL reward gets wrong.
    * **`irl_reward_mean` vs `mean_reward`.** A policy that raises the recovered reward far more
      than the true reward is hacking the recovered reward.
    * **distinct-2** again guards against collapse.
    * With a tiny budget (and in smoke mode) the three policies are nearly identical.
    """,
)

# --------------------------------------------------------------------------- 15 probe vs IRL

build(
    "15_probe_vs_irl",
    """
    # 15 · Inside vs outside: the probe's and IRL's reward on the same texts

    Neither paper has this figure. The two methods answer the same question, *what reward did the
    model learn?*, from opposite sides: the LFP probe reads the tuned model's **activations**,
    IRL reads its **behaviour**. On the same held-out texts we can put three numbers side by
    side:

    * the **true reward**, VADER: $\\mathrm{clip}(\\tfrac15 \\sum_w V(w), -10, 10)$;
    * the **IRL reward** of the IRL stage's best reward model;
    * the **probe estimate** (`lfp_mech.probes.probe_reward`): the feedback probe predicts a
      valence for each word of the text from the tuned model's SAE features at that word
      (averaged over the word's tokens, in context: how the probe was evaluated on lexicon
      words, notebook 04), and the reward's formula is applied to those predictions,
      $\\mathrm{clip}(\\tfrac15 \\sum_w \\hat V(w), -10, 10)$, summing over *all* words (the
      probe does not know which words are in the lexicon).

    The probe is the `probes` stage's `tuned_sae` probe (`probes.safetensors`: weight, bias and
    the scale that maps it to [−4, 4], read by `lfp_mech.probes.load_probe`) over the SAE
    features concatenated in `ordered_hooks` order. The `irl` stage stores all three numbers per
    held-out text in `heldout_scores.jsonl`; the notebook recomputes the probe estimate of a
    few texts with the public functions to show how it is made.
    """,
    [
        md("## Held-out texts and the three rewards"),
        code(
            """
            import numpy as np

            import lfp_mech
            from lfp_mech.probes import load_probe, ordered_hooks, probe_reward

            scores = pd.read_json(stage_dir("irl") / "vader" / "heldout_scores.jsonl", lines=True)
            probe = load_probe(stage_dir("probes") / "probes.safetensors")  # the tuned_sae probe
            sae_dirs = lfp_mech.small_sae_dirs(RUN_DIR)
            saes = lfp_mech.load_saes(sae_dirs)
            assert probe.weight.shape[0] == sum(sae.cfg.d_sae for _, sae in ordered_hooks(saes))
            model = lfp_mech.load_model(stage_dir("rlhf") / "policy")
            if "probe" in scores.columns:  # the irl stage scored every text: check a few
                check = scores.head(16)
                again = probe_reward(model, saes, probe, list(check["text"])).numpy()
                assert np.allclose(again, check["probe"], atol=1e-3), "stored and recomputed differ"
            else:  # an older run: score every text here (one forward pass per batch of texts)
                scores["probe"] = probe_reward(model, saes, probe, list(scores["text"])).numpy()
            display(Markdown(f"{len(scores)} held-out texts; probe over {probe.weight.shape[0]} SAE features."))
            display(scores[["source", "true_reward", "irl_reward", "probe", "text"]].head(8))
            """
        ),
        md("## Three-way comparison"),
        code(
            """
            from scipy import stats

            from lfp_mech.plots.irl import plot_three_way

            show(
                plot_three_way(
                    scores["true_reward"],
                    scores["irl_reward"],
                    scores["probe"],
                    title="held-out texts: true reward, IRL reward, probe estimate",
                )
            )
            pairs = [("irl_reward", "true_reward"), ("probe", "true_reward"), ("irl_reward", "probe")]
            rows = []
            for source, group in [("all", scores), *scores.groupby("source")]:
                for a, b in pairs:
                    x, y = group[a].to_numpy(float), group[b].to_numpy(float)
                    defined = len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0
                    rho = stats.spearmanr(x, y)[0] if defined else np.nan
                    rows.append({"texts": source, "pair": f"{a} vs {b}", "spearman": rho})
            display(Markdown("Spearman ρ per pair, on all texts and per source:"))
            display(pd.DataFrame(rows).pivot(index="pair", columns="texts", values="spearman"))
            display(scores.groupby("source")[["true_reward", "irl_reward", "probe"]].mean())
            """
        ),
    ],
    """
    * **Which view is closer to the truth?** Compare the rank correlations of the IRL reward and
      of the probe estimate with the true reward. The probe was trained on word-level contrasts
      with the lexicon's help and sees activations; IRL saw only two models' texts. A probe that
      wins says the model *represents* the reward better than its behaviour reveals it.
    * **Do they agree with each other** more than with the truth? Then both recover the same
      learned feedback pattern, and its divergence from the reward is a property of the model,
      not of either method.
    * **By source:** on the expert's texts (what RLHF shaped) vs the *other* texts.
    * **Bias of the probe estimate:** summing over all words adds the probe's prediction for
      non-lexicon words; a constant shift does not change rank correlations, but a
      length-dependent one does (in smoke mode every estimate is large and positive for this
      reason).
    * Smoke: everything is noise; the notebook only checks that the pieces fit together.
    """,
)

format_with_ruff(WRITTEN)
print(f"wrote {len(WRITTEN)} notebooks to {HERE}")
