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
back ``x_b``). See the package docstring for the relation to crosscoders and diff-SAEs."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

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
    """Fraction of the variance of ``δ`` (around 0, so the mean counts) left unexplained."""
    mean_diff_norm: float
    """Norm of the mean difference ``E[δ]``."""
    dead_fraction: float
    """Share of latents that never fire on the training tokens."""
    losses: Sequence[float]
    """Mean loss per epoch."""


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
    seed: int = 0,
) -> tuple[DiffDictionary, TrainStats]:
    """Fit ``δ ≈ TopK-dictionary(x_t)`` by AdamW on the mean squared error (uncentred FVU).

    ``weight_decay`` applies to the encoder only: it pulls latents that need not depend on the
    input (a change present on every token) towards constant activations, which generalise."""
    gen = torch.Generator().manual_seed(seed)
    n, d_model = x_tuned.shape
    model = DiffDictionary(d_model, d_dict, k)
    with torch.no_grad():
        model.mu.copy_(x_tuned.mean(0))
        w = torch.randn(d_dict, d_model, generator=gen)
        model.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        scale = (x_tuned - model.mu).norm(dim=-1).mean().clamp_min(1e-6)
        model.W_enc.copy_(model.W_dec.T / scale)
    power = delta.pow(2).sum(-1).mean().clamp_min(1e-12)
    optimizer = torch.optim.AdamW(
        [
            {"params": [model.W_enc], "weight_decay": weight_decay},
            {"params": [model.b_enc, model.W_dec], "weight_decay": 0.0},
        ],
        lr=learning_rate,
    )
    losses = []
    for _ in range(n_epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = (model(x_tuned[idx]) - delta[idx]).pow(2).sum(-1).mean() / power
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.normalize_decoder()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
    with torch.no_grad():
        z = torch.cat([model.encode(x_tuned[s : s + 4096]) for s in range(0, n, 4096)])
        fvu = float((z @ model.W_dec - delta).pow(2).sum(-1).mean() / power)
        dead = float(((z > 0).sum(0) == 0).float().mean())
    stats = TrainStats(
        fvu=fvu if math.isfinite(fvu) else float("nan"),
        mean_diff_norm=float(delta.mean(0).norm()),
        dead_fraction=dead,
        losses=losses,
    )
    return model, stats
