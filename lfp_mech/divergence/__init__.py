"""Which transformer blocks did RLHF change, and which do later stages study? The layer choice.

Four per-block measures ([`MEASURES`][lfp_mech.divergence.choice.MEASURES]): the paper's
parameter divergence (below), the same relative to the block's weight norm, the change of the
block's MLP output on the same validation tokens, and the share of the base→tuned log-prob gap
of the tuned policy's completions that patching the block's tuned MLP output into the base model
recovers ([`behaviour`][lfp_mech.divergence.behaviour]). The stage reports how concentrated each
is ([`concentration`][lfp_mech.divergence.choice.concentration]) and picks the ``top_k`` blocks
of the measure ``divergence.select_by`` names (default: patching) — see
``docs/tutorials/layer-choice.md``.

The paper's measure:

The LFP paper (Marks et al. 2024, section 3.1 / appendix A.2) trains its sparse autoencoders
only on the MLP layers the fine-tuning moved the most. For each transformer block ``l``::

    div(l) = Σ_{parameters p of block l} || θ_base[p] − θ_tuned[p] ||_F

(the Frobenius norm of each parameter's difference, summed over the block's parameters), and
the ``k = 5`` blocks with the largest ``div`` are kept (paper: mostly deep layers — Pythia-70m
1–5, Pythia-160m 7–11, GPT-Neo-125m 7–11).

Why the unprocessed Hugging Face weights and not TransformerLens's: ``HookedTransformer``
folds every LayerNorm/RMSNorm scale into the next linear layer and centres the weights that
write to the residual stream. After folding, block ``l``'s ``W_Q``/``W_in`` carry the norm scale
that lives in block ``l``'s own norm module, the unembedding carries the final norm, and
centring subtracts a per-matrix mean. A change in one HF parameter (a norm weight) then shows up
in other matrices, and two models that differ only by a residual-direction shift can differ
after centring. The paper's definition is about the parameters that were trained, so we
compare exactly those: the checkpoints' own ``named_parameters()``.

Block indices are read from parameter names generically (``model.layers.3.mlp...`` for
Llama/Gemma, ``gpt_neox.layers.3...`` for Pythia, ``transformer.h.3...`` for GPT-2/GPT-Neo), so
any HF causal LM works. Parameters outside blocks (embeddings, final norm, unembedding) are not
part of any layer's divergence.

Modules:

* [`config`][lfp_mech.divergence.config] —
  [`DivergenceConfig`][lfp_mech.divergence.config.DivergenceConfig] (the stage's options);
* [`measure`][lfp_mech.divergence.measure] —
  [`layer_divergence`][lfp_mech.divergence.measure.layer_divergence],
  [`parameter_measures`][lfp_mech.divergence.measure.parameter_measures],
  [`top_divergent_layers`][lfp_mech.divergence.measure.top_divergent_layers];
* [`behaviour`][lfp_mech.divergence.behaviour] —
  [`behaviour_measures`][lfp_mech.divergence.behaviour.behaviour_measures] (activation change and
  patching on validation texts);
* [`choice`][lfp_mech.divergence.choice] —
  [`concentration`][lfp_mech.divergence.choice.concentration],
  [`select_layers`][lfp_mech.divergence.choice.select_layers] (the rule);
* [`stage`][lfp_mech.divergence.stage] — the stage (``run(ctx)``) and
  [`write_divergence`][lfp_mech.divergence.stage.write_divergence], the same outside a run
  directory;
* [`results`][lfp_mech.divergence.results] —
  [`DivergenceResults`][lfp_mech.divergence.results.DivergenceResults], reading the folder back;
* [`plots`][lfp_mech.divergence.plots] —
  [`plot_layer_divergence`][lfp_mech.divergence.plots.plot_layer_divergence],
  [`plot_layer_choice`][lfp_mech.divergence.plots.plot_layer_choice].

Typical use::

    div = layer_divergence("smollm2-135m", "runs/default/rlhf/policy")
    top_divergent_layers(div, k=5)   # -> e.g. [29, 28, 27, 26, 25]
"""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_BLOCK_PATTERN": "config",
        "DivergenceConfig": "config",
        "MEASURES": "choice",
        "BehaviourMeasures": "behaviour",
        "behaviour_measures": "behaviour",
        "concentration": "choice",
        "select_layers": "choice",
        "layer_divergence": "measure",
        "parameter_measures": "measure",
        "top_divergent_layers": "measure",
        "write_divergence": "stage",
        "DivergenceResults": "results",
        "plot_layer_choice": "plots",
        "plot_layer_divergence": "plots",
    },
)

__all__ = [
    "DEFAULT_BLOCK_PATTERN",
    "MEASURES",
    "BehaviourMeasures",
    "DivergenceConfig",
    "DivergenceResults",
    "behaviour_measures",
    "concentration",
    "layer_divergence",
    "parameter_measures",
    "plot_layer_choice",
    "plot_layer_divergence",
    "select_layers",
    "top_divergent_layers",
    "write_divergence",
]
