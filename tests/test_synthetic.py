"""Tests for the synthetic HMM language: structure, sampling law, and the exact loss floor."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_lightning.synthetic import HMM, make_hmm, nll, sample

# Deterministic hypothesis runs: the same examples every time, nothing stored on disk.
SEEDED = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def brute_force_nll(hmm: HMM, row: np.ndarray) -> np.ndarray:
    """-log p(x_t | x_<t) for t >= 1 by summing over every hidden path: (L,) -> (L-1,)."""

    def prefix_prob(prefix: np.ndarray) -> float:
        total = 0.0
        for path in itertools.product(range(hmm.num_states), repeat=len(prefix)):
            p = hmm.stationary[path[0]] * hmm.emission[path[0], prefix[0]]
            for t in range(1, len(prefix)):
                p *= hmm.transition[path[t - 1], path[t]] * hmm.emission[path[t], prefix[t]]
            total += p
        return total

    probs = [prefix_prob(row[: t + 1]) for t in range(len(row))]
    return np.array([-math.log(probs[t] / probs[t - 1]) for t in range(1, len(row))])


def random_dense_hmm(seed: int) -> HMM:
    """A dense K=3, V=4 HMM built by hand, with an initial law that is not stationary."""
    rng = np.random.default_rng(seed)
    return HMM(rng.dirichlet(np.ones(3), 3), rng.dirichlet(np.ones(4), 3), rng.dirichlet([1] * 3))


def bool_power(matrix: np.ndarray, exponent: int) -> np.ndarray:
    """Support of matrix ** exponent for a boolean (K, K) matrix, by repeated squaring."""
    result, base = np.eye(len(matrix), dtype=bool), matrix.astype(bool)
    while exponent:
        if exponent & 1:
            result = (result.astype(int) @ base.astype(int)) > 0
        base = (base.astype(int) @ base.astype(int)) > 0
        exponent >>= 1
    return result


@pytest.mark.parametrize("seed", range(4))
def test_nll_matches_brute_force_enumeration(seed: int) -> None:
    sparse = make_hmm(3, 4, branching=2, emission_support=3, seed=seed)
    dense = random_dense_hmm(seed)
    cases = [
        (sparse, sample(sparse, num_chains=4, chain_len=5, seed=seed)),
        (dense, np.random.default_rng(seed).integers(0, 4, size=(4, 5))),  # any tokens possible
    ]
    for hmm, tokens in cases:
        floor = nll(hmm, tokens)
        assert floor.shape == (4, 4) and floor.dtype == np.float64
        expected = np.stack([brute_force_nll(hmm, row) for row in tokens])
        np.testing.assert_allclose(floor, expected, rtol=0, atol=1e-10)


def test_nll_of_length_one_rows_is_empty() -> None:
    hmm = make_hmm(4, 5, 2, 2, seed=0)
    assert nll(hmm, sample(hmm, 3, 1, seed=0)).shape == (3, 0)


@st.composite
def hmm_args(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    num_states = draw(st.integers(1, 12))
    vocab_size = draw(st.integers(2, 12))
    branching = draw(st.integers(1, num_states))
    emission_support = draw(st.integers(1, vocab_size))
    return num_states, vocab_size, branching, emission_support, draw(st.integers(0, 2**32))


@SEEDED
@given(hmm_args())
def test_make_hmm_structure(args: tuple[int, int, int, int, int]) -> None:
    num_states, vocab_size, branching, emission_support, seed = args
    hmm = make_hmm(num_states, vocab_size, branching, emission_support, seed)
    a, pi = hmm.transition, hmm.stationary
    assert (hmm.num_states, hmm.vocab_size) == (num_states, vocab_size)
    assert a.shape == (num_states, num_states) and hmm.emission.shape == (num_states, vocab_size)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hmm.emission.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert ((a > 0).sum(axis=1) == branching).all()
    assert ((hmm.emission > 0).sum(axis=1) == emission_support).all()
    assert (pi >= 0).all() and abs(pi.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(pi @ a, pi, rtol=0, atol=1e-10)
    # The structural guarantees: the cycle i -> i+1 (irreducible) and, with branching >= 2,
    # a self-loop on state 0 (aperiodic), i.e. a primitive matrix by Wielandt's bound.
    states = np.arange(num_states)
    assert (a[states, (states + 1) % num_states] > 0).all()
    if branching >= 2 or num_states == 1:
        assert bool_power(a > 0, (num_states - 1) ** 2 + 1).all()


def test_hmm_is_immutable_and_validated() -> None:
    hmm = make_hmm(4, 5, 2, 2, seed=0)
    with pytest.raises(ValueError):
        hmm.transition[0, 0] = 0.5  # read-only array
    with pytest.raises(ValueError, match="shapes"):
        HMM(hmm.transition, hmm.emission, hmm.stationary[:3])
    with pytest.raises(ValueError, match="emission rows"):
        HMM(hmm.transition, hmm.emission * 2, hmm.stationary)


def test_same_seed_same_output_different_seed_different() -> None:
    args = (16, 8, 3, 2)
    first, again, other = make_hmm(*args, seed=7), make_hmm(*args, seed=7), make_hmm(*args, seed=8)
    for name in ("transition", "emission", "stationary"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        assert not np.array_equal(getattr(first, name), getattr(other, name))
    tokens = sample(first, 8, 64, seed=3)
    assert tokens.shape == (8, 64) and tokens.dtype == np.int64
    np.testing.assert_array_equal(tokens, sample(first, 8, 64, seed=3))
    assert not np.array_equal(tokens, sample(first, 8, 64, seed=4))


def test_sample_pairs_follow_the_exact_joint_law() -> None:
    """p(x_0, x_1) = sum_ij pi_i B[i, x_0] A[i, j] B[j, x_1] checks start, transition, emission."""
    hmm = make_hmm(3, 4, branching=2, emission_support=3, seed=5)
    tokens = sample(hmm, num_chains=200_000, chain_len=2, seed=6)
    expected = (hmm.stationary[:, None] * hmm.emission).T @ hmm.transition @ hmm.emission  # (V, V)
    observed = np.zeros((4, 4))
    np.add.at(observed, (tokens[:, 0], tokens[:, 1]), 1.0 / len(tokens))
    # Each cell's standard error is at most sqrt(0.25 / 200_000) ~ 0.0011.
    np.testing.assert_allclose(observed, expected, rtol=0, atol=0.005)
    assert (observed[expected == 0] == 0).all()  # impossible pairs never sampled


def test_long_sample_statistics_and_loss_floor() -> None:
    hmm = make_hmm(64, 32, branching=2, emission_support=2, seed=0)
    tokens = sample(hmm, num_chains=64, chain_len=4096, seed=1)
    frequencies = np.bincount(tokens.ravel(), minlength=32) / tokens.size
    # 262,144 correlated tokens; token probabilities are ~1/32, observed errors ~0.001.
    np.testing.assert_allclose(frequencies, hmm.stationary @ hmm.emission, rtol=0, atol=0.005)
    floor = nll(hmm, tokens).mean()
    # Sparse transitions and emissions make context very informative: the floor sits far
    # below the context-free (unigram) loss, yet a token is never fully predictable.
    assert 0.1 < floor < hmm.unigram_entropy() - 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_states": 0}, "num_states"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"branching": 0}, "branching"),
        ({"branching": 9}, "branching"),
        ({"emission_support": 0}, "emission_support"),
        ({"emission_support": 6}, "emission_support"),
    ],
)
def test_make_hmm_rejects_invalid_arguments(kwargs: dict[str, int], name: str) -> None:
    args = {"num_states": 8, "vocab_size": 5, "branching": 2, "emission_support": 2, "seed": 0}
    with pytest.raises(ValueError, match=rf"synthetic {name} must be .*got {kwargs[name]}$"):
        make_hmm(**{**args, **kwargs})


def test_range_message_names_the_bound() -> None:
    with pytest.raises(ValueError) as error:
        make_hmm(64, 32, branching=100, emission_support=2, seed=0)
    assert str(error.value) == "synthetic branching must be between 1 and num_states=64, got 100"


@pytest.mark.parametrize(
    ("num_chains", "chain_len", "name"), [(0, 4, "num_chains"), (4, 0, "chain_len")]
)
def test_sample_rejects_invalid_arguments(num_chains: int, chain_len: int, name: str) -> None:
    with pytest.raises(ValueError, match=f"synthetic {name} must be at least 1, got 0"):
        sample(make_hmm(4, 5, 2, 2, seed=0), num_chains, chain_len, seed=0)


def test_nll_rejects_invalid_tokens() -> None:
    hmm = make_hmm(3, 4, branching=2, emission_support=1, seed=0)
    with pytest.raises(ValueError, match="in \\[0, 4\\)"):
        nll(hmm, np.array([[0, 4]]))
    with pytest.raises(ValueError, match="integer \\(N, L\\) array"):
        nll(hmm, np.array([0, 1]))
    never_emitted = int(np.flatnonzero(hmm.stationary @ hmm.emission == 0)[0])
    with pytest.raises(ValueError, match="zero probability .* row 1 at position 0"):
        nll(hmm, np.array([sample(hmm, 1, 2, seed=0)[0], [never_emitted, 0]]))


def test_nll_resets_score_a_new_chain_under_the_stationary_prior():
    # Two chains concatenated in one row: with the reset marked, the second chain's
    # tokens get exactly the NLL they get as a row of their own (plus the first token's
    # marginal, which a row of its own does not score).
    hmm = make_hmm(8, 6, branching=2, emission_support=2, seed=3)
    chains = sample(hmm, 2, 10, seed=4)  # (2, 10)
    row = chains.reshape(1, -1)  # (1, 20)
    resets = np.zeros_like(row, dtype=bool)
    resets[0, 10] = True
    joined = nll(hmm, row, resets=resets)[0]  # (19,)
    np.testing.assert_allclose(joined[:9], nll(hmm, chains[:1])[0], rtol=1e-12)
    np.testing.assert_allclose(joined[10:], nll(hmm, chains[1:])[0], rtol=1e-12)
    marginal = hmm.stationary @ hmm.emission[:, chains[1, 0]]
    np.testing.assert_allclose(joined[9], -np.log(marginal), rtol=1e-12)
