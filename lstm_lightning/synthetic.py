"""Seeded synthetic language: a random sparse hidden Markov model, with its exact loss floor.

The process: a hidden state ``s_t`` in ``{0..K-1}`` walks a Markov chain with transition
matrix ``A`` (K, K); at every step the state emits one token ``x_t`` in ``{0..V-1}`` from its
emission row ``B[s_t]`` (B is (K, V)). Each state has exactly ``branching`` successors and
``emission_support`` possible tokens, so the tokens alone are ambiguous about the state and a
model has to carry a belief over the K hidden states: a wider LSTM can track that belief
better, which is what makes the data useful for width-scaling experiments. Chains start in the
stationary distribution ``pi`` (K,), so every position has the same marginal law.

The loss floor: ``nll`` runs the forward algorithm with the true ``A``, ``B`` and ``pi`` and
returns, per position, ``-log p(x_t | x_0..x_{t-1})``. That is the Bayes-optimal predictor for
the process, so no sequence model that sees the same context (the same row, from ``x_0``) can
achieve a lower expected cross-entropy than the mean of ``nll`` over sampled data; the gap
between a model's loss and that mean is the part of its loss that is its own fault.

Everything is numpy float64 and deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous; use identity
class HMM:
    """A discrete HMM. Shapes: transition (K, K) rows sum to 1; emission (K, V) rows sum to 1; stationary (K,)."""

    transition: np.ndarray
    emission: np.ndarray
    stationary: np.ndarray

    def __post_init__(self) -> None:
        # Own read-only float64 copies so a frozen HMM really cannot change under its users.
        for name in ("transition", "emission", "stationary"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        k = self.stationary.shape[0] if self.stationary.ndim == 1 else -1
        if self.transition.shape != (k, k) or self.emission.ndim != 2 or len(self.emission) != k:
            raise ValueError(
                "HMM shapes must be transition (K, K), emission (K, V), stationary (K,); got "
                f"{self.transition.shape}, {self.emission.shape}, {self.stationary.shape}"
            )
        # Sampling and the forward algorithm both rely on every row being a distribution.
        for name in ("transition", "emission", "stationary"):
            rows = np.atleast_2d(getattr(self, name))
            if (rows < 0).any() or not np.allclose(rows.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
                raise ValueError(f"HMM {name} rows must be non-negative and sum to 1")

    @property
    def num_states(self) -> int:
        return self.transition.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the stationary token distribution: the best loss without context."""
        probs = self.stationary @ self.emission  # (V,)
        probs = probs[probs > 0]
        return float(probs @ np.log(1.0 / probs))


def make_hmm(
    num_states: int, vocab_size: int, branching: int, emission_support: int, seed: int
) -> HMM:
    """A random sparse HMM whose chain is irreducible and, if branching >= 2, aperiodic.

    Structure (why the stationary distribution is unique): successor 0 of state i is
    (i + 1) mod K, so the cycle 0 -> 1 -> ... -> K-1 -> 0 reaches every state (irreducible);
    when branching >= 2, state 0 also has a self-loop, and a cycle of length 1 makes the chain
    aperiodic. With branching == 1 and K > 1 each state has a single successor, so the chain is
    the deterministic K-cycle: still irreducible with a unique (uniform) stationary
    distribution, but necessarily periodic.
    """
    _check_range("num_states", num_states, 1, None)
    _check_range("vocab_size", vocab_size, 2, None)
    _check_range("branching", branching, 1, num_states, "num_states")
    _check_range("emission_support", emission_support, 1, vocab_size, "vocab_size")
    rng = np.random.default_rng(seed)
    states = np.arange(num_states)
    # Random keys pick a uniform random support per row; forced entries get keys below [0, 1)
    # so they are always among the `branching` smallest.
    keys = rng.random((num_states, num_states))  # (K, K)
    keys[states, (states + 1) % num_states] = -2.0  # the cycle: irreducibility
    keys[0, 0] = -1.0  # the self-loop on state 0 (kept iff branching >= 2): aperiodicity
    transition = _sparse_dirichlet_rows(rng, keys, branching)
    emission = _sparse_dirichlet_rows(rng, rng.random((num_states, vocab_size)), emission_support)
    return HMM(transition, emission, _stationary(transition))


def sample(hmm: HMM, num_chains: int, chain_len: int, seed: int) -> np.ndarray:
    """Tokens (num_chains, chain_len) int64 from independent chains started at `stationary`.

    Only the hidden states need a loop over time; given the states, all tokens are drawn in
    one vectorised lookup.
    """
    _check_range("num_chains", num_chains, 1, None)
    _check_range("chain_len", chain_len, 1, None)
    rng = np.random.default_rng(seed)
    # uniforms[0, t]: the state draw at t (the start state at t = 0); uniforms[1]: the tokens.
    uniforms = rng.random((2, chain_len, num_chains))  # (2, L, N)
    transition_table = _SamplingTable.of(hmm.transition)
    states = np.empty((chain_len, num_chains), dtype=np.int64)  # (L, N): rows written per step
    states[0] = _SamplingTable.of(hmm.stationary[None, :]).draw(0, uniforms[0, 0])
    for t in range(1, chain_len):
        states[t] = transition_table.draw(states[t - 1], uniforms[0, t])
    tokens = _SamplingTable.of(hmm.emission).draw(states, uniforms[1])  # (L, N)
    return np.ascontiguousarray(tokens.T)


def nll(hmm: HMM, tokens: np.ndarray, resets: np.ndarray | None = None) -> np.ndarray:
    """Exact -log p(x_t | x_0..x_{t-1}) for t = 1..L-1 per row: tokens (N, L) -> (N, L-1).

    Scaled forward algorithm, vectorised over rows. `belief` (N, K) is the posterior over the
    hidden state given the tokens seen so far; x_0 updates it but is not scored, because the
    language model is given x_0 and predicts from x_1 on.

    `resets` (N, L) bool marks where a new independent chain starts inside a row (a
    concatenated corpus): there the state is drawn afresh from `stationary`, so the past
    says nothing and x_t is scored under the stationary prior.
    """
    tokens = _check_tokens(hmm, tokens)
    emission_by_token = np.ascontiguousarray(hmm.emission.T)  # (V, K): p(token | state)
    belief, _ = _observe(hmm.stationary[None, :] * emission_by_token[tokens[:, 0]], 0)
    out = np.empty((tokens.shape[0], tokens.shape[1] - 1), dtype=np.float64)  # (N, L-1)
    for t in range(1, tokens.shape[1]):
        prior = belief @ hmm.transition  # (N, K): p(state_t | x_<t)
        if resets is not None and resets[:, t].any():
            prior[resets[:, t]] = hmm.stationary
        belief, evidence = _observe(prior * emission_by_token[tokens[:, t]], t)
        out[:, t - 1] = -np.log(evidence)
    return out


class _SamplingTable(NamedTuple):
    """Inverse-CDF lookup over the support of each row of a (R, C) probability table.

    Each row keeps only its nonzero columns, padded to a power-of-two width P, so a branchless
    binary search of log2 P vectorised steps draws from a different row for every key. (One
    np.searchsorted over all rows would need row offsets baked into the keys, and its per-key
    branches are slow on unsorted keys: several times slower here for sparse rows.)
    """

    cdf: np.ndarray  # (R * P,) float64: row r's CDF at [r * P, (r + 1) * P), ending in 1.0
    columns: np.ndarray  # (R * P,) int64: the column of probs each CDF entry stands for
    width: int  # P

    @classmethod
    def of(cls, probs: np.ndarray) -> _SamplingTable:
        support = int((probs > 0).sum(axis=1).max())
        width = 1 << (support - 1).bit_length()  # P: smallest power of two >= support
        # Nonzero columns first (stable, so in column order), then zero-probability padding.
        order = np.argsort(probs <= 0, axis=1, kind="stable")  # (R, C)
        columns = order[:, :support]  # (R, S)
        cumulative = np.cumsum(np.take_along_axis(probs, columns, axis=1), axis=1)  # (R, S)
        # Dividing by the row total ends every row at exactly 1.0 (x / x == 1): a uniform in
        # [0, 1) then never passes the last nonzero column, nor lands on the padding.
        cdf = cumulative / cumulative[:, -1:]
        padding = ((0, 0), (0, width - support))  # repeat the last entry: CDF 1.0, never drawn
        cdf, columns = np.pad(cdf, padding, mode="edge"), np.pad(columns, padding, mode="edge")
        return cls(cdf.ravel(), columns.ravel(), width)  # (R * P,) each

    def draw(self, rows: np.ndarray | int, uniform: np.ndarray) -> np.ndarray:
        """Columns drawn from table rows `rows` with uniforms in [0, 1) (same shape, any)."""
        # Invariant: the first CDF entry > uniform lies in [position, position + half * 2).
        # Entries equal to their left neighbour (zero probability) are never that first entry.
        position = rows * self.width
        half = self.width // 2
        while half:
            position = position + half * (self.cdf[position + half - 1] <= uniform)
            half //= 2
        return self.columns[position]


def _check_range(name: str, value: int, low: int, high: int | None, high_name: str = "") -> None:
    """Raise ValueError naming the argument, its value and the allowed range."""
    if high is None and value < low:
        raise ValueError(f"synthetic {name} must be at least {low}, got {value}")
    if high is not None and not low <= value <= high:
        raise ValueError(
            f"synthetic {name} must be between {low} and {high_name}={high}, got {value}"
        )


def _sparse_dirichlet_rows(rng: np.random.Generator, keys: np.ndarray, support: int) -> np.ndarray:
    """(R, C) rows with Dirichlet(1) mass on the `support` columns of smallest key, 0 elsewhere."""
    columns = np.argpartition(keys, support - 1, axis=1)[:, :support]  # (R, support)
    probs = np.zeros(keys.shape, dtype=np.float64)
    np.put_along_axis(probs, columns, rng.dirichlet(np.ones(support), size=len(keys)), axis=1)
    return probs


def _stationary(transition: np.ndarray) -> np.ndarray:
    """The unique pi (K,) with pi A = pi, sum(pi) = 1, for an irreducible A (K, K).

    (A.T - I) has rank K - 1 and its rows sum to zero, so replacing one row by the
    normalisation constraint (all ones) gives a nonsingular system.
    """
    k = len(transition)
    system = transition.T - np.eye(k)  # (K, K)
    system[-1] = 1.0
    rhs = np.zeros(k)
    rhs[-1] = 1.0
    pi = np.clip(np.linalg.solve(system, rhs), 0.0, None)  # clip round-off below zero
    return pi / pi.sum()


def _check_tokens(hmm: HMM, tokens: np.ndarray) -> np.ndarray:
    """Tokens as an (N, L) int64 array with L >= 1 and values in [0, V)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            "nll tokens must be an integer (N, L) array with L >= 1, got shape "
            f"{tokens.shape} and dtype {tokens.dtype}"
        )
    if tokens.size and (tokens.min() < 0 or tokens.max() >= hmm.vocab_size):
        raise ValueError(
            f"nll tokens must be in [0, {hmm.vocab_size}), got min {tokens.min()} "
            f"and max {tokens.max()}"
        )
    return tokens.astype(np.int64, copy=False)


def _observe(joint: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Split joint (N, K) = p(state, x_t | x_<t) into belief p(state | x_<=t) and p(x_t | x_<t)."""
    evidence = joint.sum(axis=1)  # (N,)
    impossible = np.flatnonzero(evidence <= 0)
    if impossible.size:
        raise ValueError(
            f"nll tokens have zero probability under this HMM: row {impossible[0]} at position {t}"
        )
    return joint / evidence[:, None], evidence
