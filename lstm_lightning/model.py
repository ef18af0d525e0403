"""The LSTM language model as a plain ``nn.Module``: embedding -> LSTM layers -> readout.

Kept apart from the LightningModule so it can be built on the meta device (to infer muP
shapes), used in a plain PyTorch loop (the throughput baseline) and hooked per layer
(the coordinate check). Initialisation and multipliers follow ``parametrization``.
"""

from __future__ import annotations

import torch
from torch import nn

# One (h, c) pair per layer, each (1, B, H): what nn.LSTM takes and returns.
State = list[tuple[torch.Tensor, torch.Tensor]]


class LSTMLM(nn.Module):
    """Token embedding (V -> E) -> ``num_layers`` x ``nn.LSTM`` -> dropout -> readout (H -> V).

    Each layer is its own ``nn.LSTM`` so the fused cuDNN/oneDNN kernel runs per layer and
    each layer's output can be hooked. ``embedding_mult`` scales the embedding output and
    ``output_mult`` the readout input (under muP the caller passes output_mult / m).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        embedding_size: int,
        num_layers: int,
        dropout: float,
        embedding_mult: float,
        output_mult: float,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(
            nn.LSTM(embedding_size if i == 0 else hidden_size, hidden_size, batch_first=True)
            for i in range(num_layers)
        )
        self.drop = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden_size, vocab_size)
        self.embedding_mult = embedding_mult
        self.output_mult = output_mult

    def forward(
        self, tokens: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """tokens (B, T) int64 -> logits (B, T, V) and the final state of every layer.

        A multiplier of 1 and a dropout of 0 are skipped: x * 1.0 is x and dropout(p=0)
        returns x, bit for bit and in the backward too; each op costs ~25 us a step at
        width 16, where a whole step is ~5 ms."""
        x = self.embedding(tokens)  # (B, T, E)
        if self.embedding_mult != 1.0:
            x = x * self.embedding_mult
        new_state = []
        for i, lstm in enumerate(self.layers):
            x, layer_state = lstm(x, None if state is None else state[i])  # (B, T, H)
            new_state.append(layer_state)
            if self.drop.p > 0:
                x = self.drop(x)
        # The multiplier goes on the readout input, as mup's MuReadout: the bias is unscaled.
        if self.output_mult != 1.0:
            x = x * self.output_mult
        return self.readout(x), new_state  # (B, T, V)


def detach_state(state: State | None) -> State | None:
    """Cut the graph between TBPTT chunks while keeping the values."""
    if state is None:
        return None
    return [(h.detach(), c.detach()) for h, c in state]
