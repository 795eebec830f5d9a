"""The layer-wise objective: how far a quantised layer's output is from the FP layer's.

The reference measures it with a plain MSE over the hidden dimensions, so an error along a
direction the rest of the model ignores costs as much as one along a direction that moves the
logits. The residual stream carries every layer's output error to the final norm and the LM head;
the LM head's Gram matrix G = (W diag(g))^T (W diag(g)) (W: output embeddings, g: final norm
weight) says how much each hidden direction moves the logits there. `output_metric` gives a factor
L of a blend of G (scaled to mean eigenvalue 1) with the identity, so that ||e L||^2 counts logit-
relevant errors more while no direction is ignored (later layers still read all of them).
"""

from __future__ import annotations

import torch
from torch import nn

from fq_core.errors import ConfigError

LM_HEAD_SHARE = 0.5
"""Weight of the LM head's Gram in the blend; the identity (plain MSE) keeps the rest."""


def output_metric(model: nn.Module, share: float = LM_HEAD_SHARE) -> torch.Tensor:
    """L [hidden, hidden] (float32) with L L^T = (1 - share) I + share G / mean_eig(G)."""
    head = model.get_output_embeddings()
    norm = getattr(getattr(model, "model", model), "norm", None)
    if head is None or norm is None or getattr(norm, "weight", None) is None:
        raise ConfigError(
            f"--loss lm-head needs the model's LM head and final norm; {type(model).__name__} lacks "
            "one: use --loss mse"
        )
    w = head.weight.detach().double() * norm.weight.detach().double()
    gram = w.T @ w
    gram = gram / gram.diagonal().mean()  # trace / hidden = mean eigenvalue = 1
    blend = (1 - share) * torch.eye(gram.shape[0], dtype=gram.dtype) + share * gram
    return torch.linalg.cholesky(blend).float()


def layer_loss(out: torch.Tensor, target: torch.Tensor, metric: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens and hidden dims of the (metric-weighted) squared error; metric None: MSE."""
    error = out.float() - target
    if metric is not None:
        error = error @ metric
    return error.pow(2).mean()
