"""lfp_mech: what did a language model learn from its reward, and how far is that from the reward?

Every stage of the study is one module; its public functions are re-exported here.
"""

from lfp_mech.data import (
    ContrastiveTriple,
    char_span_to_token_span,
    heldout_words,
    load_prompts,
    make_triples,
)
from lfp_mech.errors import (
    ConfigError,
    HubUnavailableError,
    LfpMechError,
    MissingPackageError,
    UnknownModelError,
)
from lfp_mech.models import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    available_models,
    build_tiny_model,
    hooked_from_hf,
    load_hf_model,
    load_model,
    logprob_parity,
    parity_tokens,
)
from lfp_mech.pipeline import (
    PRESETS,
    RunConfig,
    load_config,
    preset_config,
    read_manifest,
    run_pipeline,
)
from lfp_mech.rewards import (
    RewardFn,
    get_reward,
    toxicity_reward,
    vader_compound,
    vader_lexicon,
    vader_reward,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "PRESETS",
    "ConfigError",
    "ContrastiveTriple",
    "HubUnavailableError",
    "LfpMechError",
    "MissingPackageError",
    "RewardFn",
    "RunConfig",
    "UnknownModelError",
    "available_models",
    "build_tiny_model",
    "char_span_to_token_span",
    "get_reward",
    "heldout_words",
    "hooked_from_hf",
    "load_config",
    "load_hf_model",
    "load_model",
    "load_prompts",
    "logprob_parity",
    "make_triples",
    "parity_tokens",
    "preset_config",
    "read_manifest",
    "run_pipeline",
    "toxicity_reward",
    "vader_compound",
    "vader_lexicon",
    "vader_reward",
]
