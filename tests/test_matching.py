"""Hungarian matching: the minimum-cost assignment, checked against brute force over every assignment."""

import itertools

import pytest
import torch

from slotlab.matching import hungarian_match


def brute_force_cost(cost: torch.Tensor) -> float:
    """The least total cost of giving each of the M rows a distinct one of the K columns."""
    M, K = cost.shape
    return min(sum(float(cost[i, cols[i]]) for i in range(M)) for cols in itertools.permutations(range(K), M))


@pytest.mark.parametrize("m, k", [(4, 4), (3, 5), (1, 6)])
def test_matching_is_the_minimum_cost_assignment(m, k):
    g = torch.Generator().manual_seed(m * 10 + k)
    cost = torch.rand(6, m, k, generator=g, dtype=torch.float64)
    match = hungarian_match(cost)
    assert match.shape == (6, m) and match.dtype == torch.int64
    for b in range(6):
        assert len(set(match[b].tolist())) == m  # every target its own slot
        total = float(cost[b].gather(1, match[b][:, None]).sum())
        assert total == pytest.approx(brute_force_cost(cost[b]), abs=1e-9)


def test_matching_finds_a_hidden_permutation_and_ignores_gradients():
    perm = torch.tensor([2, 0, 3, 1])
    cost = torch.ones(1, 4, 4)
    cost[0, torch.arange(4), perm] = 0.0  # target i costs nothing only on slot perm[i]
    cost.requires_grad_(True)
    assert torch.equal(hungarian_match(cost * 1.0)[0], perm)


def test_bad_cost_shapes_are_named():
    with pytest.raises(ValueError, match="M <= K"):
        hungarian_match(torch.rand(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(B, M, K\)"):
        hungarian_match(torch.rand(5, 3))
