"""Options of the ``saes`` stage: SAE-Lens dictionaries on the most divergent layers."""

from dataclasses import dataclass
from typing import Any, Literal

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["ARCHITECTURES", "DEFAULT_ALPHA", "PAPER_ALPHA", "SAEConfig", "SIZES", "SPARSE"]

SIZES = ("small", "big")
"""The two dictionaries per layer (paper: n and 2n features)."""
ARCHITECTURES = ("topk", "batchtopk", "matching_pursuit", "l1")
"""The dictionaries the stage trains: SAE-Lens TopK or BatchTopK (the default) SAEs with a hard
sparsity constraint (``k`` latents per token, on average over the batch for BatchTopK),
SAE-Lens matching-pursuit SAEs (at most ``k`` greedy steps per token), or the paper's ReLU SAEs
with an L1 penalty (``"l1"``, tied or untied)."""
SPARSE = ("topk", "batchtopk", "matching_pursuit")
"""The architectures with a hard sparsity constraint (no α, no tied/untied choice)."""
DEFAULT_ALPHA = 6e-4
"""α for SmolLM2's MLP outputs (per-element-MSE units, see [`lfp_mech.saes`][lfp_mech.saes]): the
largest α of the calibration grid that keeps every layer at FVU <= 0.3 and CE loss recovered >= 70%
(the calibration table is in the SAE tutorial)."""
PAPER_ALPHA = 1e-3
"""The paper's α (on unnormalised Pythia activations; GPT-Neo 1.5e-3)."""


@dataclass
class SAEConfig(StageConfig):
    """Options of the SAE stage: the dictionaries (architecture, sizes, k or α, tied decoder),
    their training (lr, batch, activations seen), the base-model twins, the L1 sweep, and the
    held-out evaluation (metrics, CE loss, MMCS)."""

    section = "saes"

    architecture: Literal["topk", "batchtopk", "matching_pursuit", "l1"] = "batchtopk"
    """``"batchtopk"`` (the stage's own default, for other presets): SAE-Lens BatchTopK SAEs,
    ``k`` active latents per token on average over a batch while training, saved as JumpReLU
    SAEs (a per-latent threshold, so a token's code does not depend on its batch, and its L0
    varies around ``k``); ``"topk"``: SAE-Lens TopK SAEs, exactly ``k`` active latents per token
    (in training and at inference); ``"matching_pursuit"`` (the ``default`` preset's, chosen on
    validation texts at 4 x d_in latents and 400k activations): SAE-Lens matching-pursuit SAEs
    (Costa et al. 2025), which encode a token greedily — the latent whose decoder row best
    matches the residual, its coefficient, the residual updated, ``k`` times at most — with the
    encoder tied to the decoder, so L0 is at most ``k``; trained and read with an incremental
    encoder, ~1.3x TopK's time per dictionary on a CPU (the KL fine-tune does not apply to it);
    ``"l1"``: the paper's ReLU SAEs with an L1 penalty ``l1_coefficient`` (tied or untied; the
    paper presets and the L1-sweep / tied-vs-untied notebooks use it)."""
    k: int = 64
    """Active latents per token of the TopK/BatchTopK dictionaries, the most greedy steps per
    token of the matching-pursuit ones (ignored for ``"l1"``)."""
    aux_loss_coefficient: float = 1.0
    """Weight of SAE-Lens's auxiliary loss that makes dead latents reconstruct the residual
    (TopK/BatchTopK). Gao et al. 2024 use 1/32 over billions of tokens; over the few hundred
    thousand activations of a CPU study a larger weight keeps latents alive (docs/budget.md)."""
    expansion_factors: tuple[int, ...] = (2,)
    """d_sae / d_in of the dictionaries per layer: ``(small,)`` or ``(small, big)`` (paper: n
    and 2n, ``(1, 2)``). With one size there is no big dictionary and no MMCS table."""
    base_model: bool = True
    """Also train a dictionary per layer and size on the base model's activations on the same
    tokens, exactly like the tuned one (the activations stage captures them with
    ``activations.base_model``): ``SAEsResults.load_saes(model="base")``."""
    tied: bool = False
    """Tie the decoder to the encoder, ``W_dec = W_enc.T`` (the paper's SAEs; ``"l1"`` only)."""
    compare_untied: bool = False
    """Also train the other variant (untied if ``tied``) of every small SAE, for the
    tied-vs-untied table (``"l1"`` only)."""
    l1_coefficient: float = DEFAULT_ALPHA
    """α in per-element-MSE units (SAE-Lens gets ``α·d_in``); paper 1e-3 on unnormalised
    Pythia activations."""
    lr: float = 1e-3
    """Adam learning rate (paper 1e-3 for its L1 SAEs; also the TopK/BatchTopK default here)."""
    lr_decay_fraction: float = 0.0
    """Fraction of the final steps over which the lr decays linearly to 0 (0: constant)."""
    batch_size: int = 512
    """Activations per step (paper 32; larger is much faster per token on CPU)."""
    training_tokens: int = 400_000
    """Activations seen per SAE (``training_tokens / batch_size`` steps: 400k at batch 512 is
    ~780 steps, ~8 epochs over the ``default`` preset's 48k stored tokens per layer)."""
    l1_warm_up_fraction: float = 0.05
    """Fraction of the steps over which the L1 coefficient ramps up from 0 (SAE-Lens)."""
    normalize_activations: bool = True
    """Rescale activations to mean norm ``sqrt(d_in)`` while training (folded in afterwards)."""
    decoder_init_norm: float | None = 0.1
    """Initial norm of the decoder rows (SAE-Lens heuristic; None: Kaiming init)."""
    sweep_alphas: tuple[float, ...] = ()
    """α values of the L1 sweep (small L1 SAEs, tied as ``tied``, on one layer, whatever the
    architecture); empty (default): no sweep. Paper presets: (1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 1e-2)."""
    sweep_tokens: int = 200_000
    """Activations seen per SAE of the sweep."""
    sweep_layer: int | None = None
    """Layer of the sweep (None: the first stored layer)."""
    kl_finetune_texts: int = 0
    """Fine-tune each trained dictionary's decoder on up to this many training texts so that the
    model with the SAE spliced in predicts the next token as the clean model does (loss
    ``KL(p_clean ‖ p_spliced)``; [`lfp_mech.saes.finetune`][lfp_mech.saes.finetune]). The latents
    stay the trained encoder's (the decoder's move folded back into ``W_enc`` / ``b_enc``), so
    L0, dead latents and which latents fire do not change. The result is kept
    only if the CE loss recovered on ``kl_finetune_val_texts`` validation texts rises. 0 (the
    default): no fine-tune. Costs a clean forward pass and a forward and backward pass of the
    blocks after the SAE's per text and epoch; the dictionaries of one model fine-tune together,
    sharing the clean pass (0.63 x the time of one at a time for three SmolLM2-135M
    dictionaries, ``benchmarks/bench_kl_finetune.py``; alone, 5–11 minutes per dictionary over
    ~950 texts on 2 CPU cores)."""
    kl_finetune_val_texts: int = 64
    """The last training texts, held out of the KL fine-tune, on which it is kept or discarded
    (the stage's held-out CE texts play no part)."""
    kl_finetune_lr: float = 1e-4
    """Adam learning rate of the KL fine-tune."""
    kl_finetune_batch_size: int = 16
    """Texts per step of the KL fine-tune (batched by length)."""
    kl_finetune_epochs: int = 1
    """Passes over the fine-tune texts."""
    eval_tokens: int = 8_192
    """Held-out activations for MSE/FVU/L0/dead fraction."""
    ce_texts: int = 48
    """Held-out texts for the CE-loss-recovered evaluation (the first ones of the held-out
    store; its 95% bootstrap CI over these texts is in the metrics table, and narrows as about
    one over the square root of their number)."""
    ce_batch_size: int = 16
    """Texts per forward pass in the CE evaluation."""
    context_length: int = 128
    """Truncation of the CE-evaluation texts (tokens, including BOS)."""
    mmcs_threshold: float = 0.9
    """A small-dictionary feature is "high-MMCS" when its MMCS with the big one is >= this."""
    mmcs_top_k: int = 20
    """How many highest-MMCS features per layer to list in the summary."""
    pretrained: str | None = None
    """Reuse SAEs instead of training: a SAE-Lens release (``pythia-70m-deduped-mlp-sm``; needs
    the hub and the release's model), a hub repo in SAE-Lens's layout (``lfp-mech push``
    makes one), or a local folder of SAE-Lens SAE folders (``cfg.json`` +
    ``sae_weights.safetensors``, e.g. another run's ``saes/``), matched to the captured hooks by
    ``cfg.metadata.hook_name``. Per hook the narrowest is the small dictionary, a wider one the
    big one. No sweep, no tied/untied comparison. None: train."""
    pretrained_ids: tuple[str, ...] = ()
    """With ``pretrained``: load only these SAE ids (release ids, or folder paths inside the
    source); empty: the SAEs on the captured hooks."""
    device: RunDevice = "cpu"
    """Where SAEs train and the model runs."""
    dtype: RunDtype = "float32"
    """The run's dtype: the model of the CE-loss evaluation runs in it. SAEs always train and
    are evaluated in float32 (activations are cast to float32 when read)."""
    seed: RunSeed = 0
    """Seed of the initialisation and of the batch order."""

    def check_depth(self, n_layers: int, model: str) -> None:
        """``sweep_layer`` is a block of the model (it must also be one the activations stage
        captures, which the saes stage checks)."""
        self.require_block("sweep_layer", n_layers, model)

    def __post_init__(self) -> None:
        factors = tuple(int(f) for f in self.expansion_factors)
        self.require(
            len(factors) in (1, 2) and 1 <= factors[0] <= factors[-1],
            "expansion_factors",
            "must be (small,) or (small, big) with 1 <= small <= big",
        )
        self.expansion_factors = factors
        self.require_choice("architecture", ARCHITECTURES)
        if self.architecture in SPARSE:
            self.require(
                not self.tied and not self.compare_untied,
                "tied",
                f"tied decoders (tied, compare_untied) exist only for the paper's L1 SAEs: set "
                f"saes.architecture=l1, or tied=false and compare_untied=false for "
                f"{self.architecture}",
            )
        self.require(
            not (self.architecture == "matching_pursuit" and self.kl_finetune_texts > 0),
            "kl_finetune_texts",
            "the KL fine-tune folds the decoder's move into an untied encoder; matching-pursuit "
            "SAEs tie the two: set saes.kl_finetune_texts=0 or another architecture",
        )
        self.require_positive("k")
        self.k, self.aux_loss_coefficient = int(self.k), float(self.aux_loss_coefficient)
        self.require_at_least(0, "aux_loss_coefficient")
        self.sweep_alphas = tuple(float(a) for a in self.sweep_alphas)
        self.l1_coefficient, self.lr = float(self.l1_coefficient), float(self.lr)
        self.require_at_least(0, "l1_coefficient")
        self.require(all(a >= 0 for a in self.sweep_alphas), "sweep_alphas", "must all be >= 0")
        self.require_positive("lr", "batch_size", "training_tokens", "sweep_tokens", "eval_tokens")
        self.require(
            self.training_tokens >= self.batch_size,
            "training_tokens",
            f"must be >= batch_size ({self.batch_size}), or not one step is trained",
        )
        self.require_between("lr_decay_fraction", 0, 1, high_open=True)
        self.require_between("l1_warm_up_fraction", 0, 1, high_open=True)
        self.require_between("mmcs_threshold", 0, 1, low_open=True)
        self.require_at_least(0, "ce_texts", "mmcs_top_k", "kl_finetune_texts")
        self.kl_finetune_lr = float(self.kl_finetune_lr)
        self.require_positive(
            "kl_finetune_val_texts", "kl_finetune_lr", "kl_finetune_batch_size",
            "kl_finetune_epochs",
        )  # fmt: skip
        self.require_at_least(1, "ce_batch_size")
        if self.pretrained in ("", "None"):
            self.pretrained = None
        self.require(
            self.kl_finetune_texts == 0 or (self.pretrained is None and not self.tied),
            "kl_finetune_texts",
            "fine-tunes the decoders the stage trains, untied: set it to 0 with saes.pretrained "
            "or saes.tied",
        )
        self.pretrained_ids = tuple(str(i) for i in self.pretrained_ids)
        self.require(
            self.pretrained is not None or not self.pretrained_ids,
            "pretrained_ids",
            "needs saes.pretrained (the source the ids are in)",
        )

    def check_environment(self, run: Any) -> None:
        """Before any stage runs: base-model dictionaries have base-model activations to train
        on; a reused SAE source exists, fits the run's model and hook site, and the hub is
        reachable if it needs it
        ([`check_pretrained`][lfp_mech.saes.pretrained.check_pretrained])."""
        if self.base_model and self.pretrained is None and not run.stages.activations.base_model:
            raise self.invalid(
                "base_model",
                "needs the base model's activations: set activations.base_model = true, or "
                "saes.base_model = false",
            )
        if self.pretrained is not None:
            from lfp_mech.saes.pretrained import check_pretrained

            check_pretrained(self.pretrained, run.model, run.stages.activations.hook)
