"""A TopK dictionary of what fine-tuning added to the residual stream, read from the tuned model.

Given, on the same tokens, the tuned model's residual activation ``x_t`` and the base model's
``x_b`` at one block, the dictionary learns ``δ = x_t − x_b`` from ``x_t`` alone::

    z(x_t) = TopK(ReLU((x_t − μ) W_enc + b_enc))        (k active latents per token)
    δ̂     = z(x_t) W_dec                               (unit-norm decoder rows, no bias)

so every latent is a direction the tuning added (or removed), and its activation ``z_f`` is how
much of it a token carries. No decoder bias: the constant part of ``δ`` (the difference of means)
must be carried by latents too, so that ablating them can undo it. The encoder reads only the
tuned activation because that is all the tuned policy has while it generates: ablating latents
``F`` is then a per-token edit of the tuned model with the error term kept,
``x_t ↦ x_t − Σ_{f∈F} z_f(x_t) W_dec[f]`` (ablating every latent of a perfect dictionary gives
back ``x_b``). Trained with the AuxK loss against dead latents (Gao et al. 2024). See the package docstring for the relation to crosscoders and diff-SAEs."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from lfp_mech._io import load_tensors, save_tensors

__all__ = ["DiffDictionary", "TrainStats", "train_dictionary"]


class DiffDictionary(nn.Module):
    """``z = TopK(ReLU((x − μ) W_enc + b_enc))``, ``δ̂ = z W_dec`` (rows of ``W_dec`` unit norm)."""

    def __init__(self, d_model: int, d_dict: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.W_enc = nn.Parameter(torch.empty(d_model, d_dict))
        self.b_enc = nn.Parameter(torch.zeros(d_dict))
        self.W_dec = nn.Parameter(torch.empty(d_dict, d_model))
        self.register_buffer("mu", torch.zeros(d_model))

    @property
    def d_dict(self) -> int:
        """Number of latents."""
        return int(self.W_dec.shape[0])

    def encode(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_dict"]:
        """Latent activations of tuned activations ``x`` (k non-zero per token)."""
        pre = torch.relu((x - self.mu) @ self.W_enc + self.b_enc)
        values, index = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, values)

    def decode(self, z: Float[Tensor, "... d_dict"]) -> Float[Tensor, "... d_model"]:
        """The predicted difference ``z W_dec``."""
        return z @ self.W_dec

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The predicted difference ``δ̂(x)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    def save(self, path: str) -> None:
        """Safetensors file with the weights and ``k``."""
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        save_tensors(path, tensors | {"k": torch.tensor(self.k)})

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> "DiffDictionary":
        """A dictionary written by [`save`][lfp_mech.diff.dictionary.DiffDictionary.save]."""
        tensors = load_tensors(path, device=device)
        k = int(tensors.pop("k"))
        d_model, d_dict = tensors["W_enc"].shape
        model = cls(int(d_model), int(d_dict), k).to(device)
        model.load_state_dict(tensors)
        return model


@dataclass(frozen=True)
class TrainStats:
    """How well the dictionary explains the difference."""

    fvu: float
    """Fraction of the variance of ``δ`` (around 0, so the mean counts) left unexplained on the
    held-out tokens (the training tokens if none are held out)."""
    mean_diff_norm: float
    """Norm of the mean of what the dictionary learns, ``E[δ]``."""
    dead_fraction: float
    """Share of latents that never fire on any corpus token (training and held out)."""
    losses: Sequence[float]
    """Mean reconstruction loss (normalised MSE) per epoch."""
    train_fvu: float = float("nan")
    """FVU on the training tokens."""
    l0: float = float("nan")
    """Mean number of non-zero latents per token (at most ``k``)."""
    n_heldout: int = 0
    """Tokens held out for ``fvu``."""


def _init(model: DiffDictionary, x: Tensor, gen: torch.Generator) -> None:
    """Unit-norm random decoder rows, encoder = decoder transposed divided by the mean norm of
    the centred input (activation normalisation: pre-activations of order 1), zero biases."""
    with torch.no_grad():
        model.mu.copy_(x.mean(0))
        w = torch.randn(model.d_dict, x.shape[1], generator=gen)
        model.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        scale = (x - model.mu).norm(dim=-1).mean().clamp_min(1e-6)
        model.W_enc.copy_(model.W_dec.T / scale)
        model.b_enc.zero_()


def _aux_loss(model: DiffDictionary, x: Tensor, error: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """AuxK (Gao et al. 2024): the ``k_aux`` largest pre-activations among dead latents
    reconstruct the main reconstruction's error; gives dead latents a gradient."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return x.new_zeros(())
    pre = torch.relu((x - model.mu) @ model.W_enc + model.b_enc)
    pre = pre.masked_fill(~dead, 0.0)
    values, index = pre.topk(min(k_aux, n_dead), dim=-1)
    err_hat = torch.zeros_like(pre).scatter(-1, index, values) @ model.W_dec
    power = error.detach().pow(2).sum(-1).mean().clamp_min(1e-12)
    return (err_hat - error.detach()).pow(2).sum(-1).mean() / power


@torch.no_grad()
def _evaluate(model: DiffDictionary, x: Tensor, delta: Tensor) -> tuple[float, Tensor, float]:
    """``(FVU, fired-per-latent counts, mean L0)`` on ``x``."""
    if len(x) == 0:
        return float("nan"), torch.zeros(model.d_dict), float("nan")
    z = torch.cat([model.encode(x[s : s + 4096]) for s in range(0, len(x), 4096)])
    power = delta.pow(2).sum(-1).mean().clamp_min(1e-12)
    fvu = float((z @ model.W_dec - delta).pow(2).sum(-1).mean() / power)
    active = z > 0
    return fvu, active.sum(0).float(), float(active.sum(-1).float().mean())


def _optimizer(
    model: DiffDictionary, learning_rate: float, weight_decay: float, n_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on the encoder weights only), learning rate decaying linearly to 0 over the
    last 20% of the ``n_steps`` steps."""
    optimizer = torch.optim.AdamW(
        [
            {"params": [model.W_enc], "weight_decay": weight_decay},
            {"params": [model.b_enc, model.W_dec], "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, 5.0 * (1.0 - step / n_steps))
    )
    return optimizer, schedule


def train_dictionary(
    x_tuned: Float[Tensor, "n d_model"],
    delta: Float[Tensor, "n d_model"],
    *,
    d_dict: int,
    k: int,
    n_epochs: int = 30,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    aux_coef: float = 1 / 32,
    dead_tokens: int | None = None,
    heldout: float = 0.0,
    seed: int = 0,
) -> tuple[DiffDictionary, TrainStats]:
    """Fit ``δ ≈ TopK-dictionary(x_t)`` by Adam on the normalised MSE plus the AuxK loss.

        Dead-latent handling as in Gao et al. (2024): a latent that has not fired on the last
        ``dead_tokens`` training tokens (None: one epoch) is dead; the ``2k`` largest dead
        pre-activations are trained to reconstruct the residual error, weighted by ``aux_coef`` (not during the decay).
        The learning rate decays linearly to 0 over the last 20% of the steps;
    ``weight_decay`` (AdamW, encoder weights only) is off by default. The last ``heldout``
        share of the tokens (whole texts when they come text by text) is held out for the FVU.
        Latents that never fired on the training tokens are switched off at the end (zero encoder
        column, negative bias): they were trained only by the auxiliary loss, and firing later on
        unseen tokens they would edit the residual with directions the corpus never validated."""
    gen = torch.Generator().manual_seed(seed)
    n_train = len(x_tuned) - int(round(heldout * len(x_tuned)))
    x, d = x_tuned[:n_train], delta[:n_train]
    model = DiffDictionary(x.shape[1], d_dict, k)
    _init(model, x, gen)
    power = d.pow(2).sum(-1).mean().clamp_min(1e-12)
    n_steps = n_epochs * math.ceil(n_train / batch_size)
    optimizer, schedule = _optimizer(model, learning_rate, weight_decay, n_steps)
    since_fired = torch.zeros(d_dict)
    dead_after = dead_tokens if dead_tokens is not None else n_train
    losses = []
    for _ in tqdm(range(n_epochs), desc="diff dictionary epochs", disable=None, leave=False):
        order = torch.randperm(n_train, generator=gen)
        total = 0.0
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            z = model.encode(x[idx])
            error = d[idx] - z @ model.W_dec
            loss = error.pow(2).sum(-1).mean() / power
            dead = since_fired >= dead_after
            use_aux = aux_coef > 0 and schedule.last_epoch < 0.8 * n_steps  # not while decaying
            aux = _aux_loss(model, x[idx], error, dead, 2 * k) if use_aux else 0.0
            optimizer.zero_grad()
            (loss + aux_coef * aux).backward()
            optimizer.step()
            schedule.step()
            model.normalize_decoder()
            fired = (z.detach() > 0).any(0)
            since_fired = torch.where(fired, 0.0, since_fired + len(idx))
            total += float(loss.detach()) * len(idx)
        losses.append(total / n_train)
    train_fvu, train_counts, l0 = _evaluate(model, x, d)
    with torch.no_grad():  # a latent that never fired in training has no meaning: switch it off
        never = train_counts == 0
        model.W_enc[:, never] = 0.0
        model.b_enc[never] = -1.0
    test_fvu, test_counts, _ = _evaluate(model, x_tuned[n_train:], delta[n_train:])
    fvu = test_fvu if n_train < len(x_tuned) else train_fvu
    stats = TrainStats(
        fvu=fvu if math.isfinite(fvu) else float("nan"),
        mean_diff_norm=float(delta.mean(0).norm()),
        dead_fraction=float(((train_counts + test_counts) == 0).float().mean()),
        losses=losses,
        train_fvu=train_fvu,
        l0=l0,
        n_heldout=len(x_tuned) - n_train,
    )
    return model, stats
