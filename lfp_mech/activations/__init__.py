"""The ``activations`` stage: MLP activations of the chosen layers, captured with TransformerLens
hooks and streamed to disk.

The LFP paper trains its sparse autoencoders on the MLP outputs of the fine-tuned model's most
divergent layers (section 3.1; 75,000 training examples per layer). This package produces that
training data:

* **what**: ``blocks.{l}.hook_mlp_out`` (the MLP's output, ``d_model`` wide; default, what the
  paper's SAEs reconstruct) or ``blocks.{l}.mlp.hook_post`` (the MLP's hidden neurons after the
  nonlinearity, ``d_mlp`` wide), for every chosen layer at once.
* **how**: [`capture_activations`][lfp_mech.activations.capture.capture_activations] runs
  ``model.run_with_cache`` on batches of texts with ``names_filter`` restricted to exactly those
  hooks and ``stop_at_layer = max(layer) + 1``, so nothing after the last needed block is computed
  (TransformerLens has a fixed cost of ~0.2 s per call: texts are batched). Each text is tokenised
  as ``[BOS] + tokens`` (what TransformerLens does with a string), right-padded, and run with an
  explicit attention mask. The BOS position and the padding positions are dropped: BOS activations
  are huge outliers that carry no information about the text, and padding is not text.
* **where**: activations stream to sharded safetensors files (one shard per ``shard_tokens``
  tokens; every layer's activations in the same shard, keyed by hook name, plus ``text_index``
  and ``position`` of each token), so memory stays bounded by one shard whatever the token count
  (plus the texts' token ids, 4 bytes a token, ~0.2% of a 576-wide float32 activation).
  ``store.json`` (written last) describes the store; ``texts.json`` keeps the captured texts.
* **reading**: [`ActivationStore`][lfp_mech.activations.store.ActivationStore] streams shuffled
  ``[batch, d_in]`` batches of one hook (shard order shuffled, tokens shuffled within each shard),
  every token exactly once per epoch.

Text source ([`activation_corpus`][lfp_mech.activations.corpus.activation_corpus]): the fine-tuned
policy's completions to its training prompts (the text the RLHF'd model actually produces, where
learned feedback patterns should be active) mixed with the prompt corpus itself (inputs the policy
was trained on). The paper used 75,000 examples per layer; the default here is 75,000 training
tokens (one activation vector per non-BOS token and layer) plus 8,192 held-out tokens for the SAE
metrics. When the texts hold fewer tokens, the stage samples more completions from the tuned policy
([`sample_completions`][lfp_mech.activations.corpus.sample_completions]).

Modules:

* [`config`][lfp_mech.activations.config] —
  [`ActivationConfig`][lfp_mech.activations.config.ActivationConfig], the stage's options.
* [`tokenization`][lfp_mech.activations.tokenization] — ``[BOS] + tokens`` batches and masks
  ([`tokenize_for_model`][lfp_mech.activations.tokenization.tokenize_for_model], shared with the SAE
  stage's CE loss).
* [`store`][lfp_mech.activations.store] —
  [`ActivationStore`][lfp_mech.activations.store.ActivationStore] (reader) and the shard writer.
* [`capture`][lfp_mech.activations.capture] —
  [`capture_activations`][lfp_mech.activations.capture.capture_activations].
* [`corpus`][lfp_mech.activations.corpus] —
  [`activation_corpus`][lfp_mech.activations.corpus.activation_corpus],
  [`sample_completions`][lfp_mech.activations.corpus.sample_completions],
  [`split_corpus`][lfp_mech.activations.corpus.split_corpus] (top-up and train/held-out split).
* [`stage`][lfp_mech.activations.stage] — ``run(ctx)``: the stage in a run directory.
* [`results`][lfp_mech.activations.results] —
[`ActivationsResults`][lfp_mech.activations.results.ActivationsResults]: the stores of a run."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ActivationConfig": "config",
        "PAPER_EXAMPLES_PER_LAYER": "config",
        "tokenize_for_model": "tokenization",
        "ActivationStore": "store",
        "STORE_FILE": "store",
        "TEXTS_FILE": "store",
        "STORE_VERSION": "store",
        "capture_activations": "capture",
        "activation_corpus": "corpus",
        "sample_completions": "corpus",
        "split_corpus": "corpus",
        "CorpusSplit": "corpus",
        "capture_train_heldout": "stage",
        "ActivationsResults": "results",
        "hook_name": "lfp_mech.hooks",
        "HOOK_TEMPLATES": "lfp_mech.hooks",
    },
)

__all__ = [
    "HOOK_TEMPLATES",
    "PAPER_EXAMPLES_PER_LAYER",
    "STORE_FILE",
    "STORE_VERSION",
    "TEXTS_FILE",
    "ActivationConfig",
    "ActivationStore",
    "ActivationsResults",
    "CorpusSplit",
    "activation_corpus",
    "capture_activations",
    "capture_train_heldout",
    "hook_name",
    "sample_completions",
    "split_corpus",
    "tokenize_for_model",
]
