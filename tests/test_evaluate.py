"""evaluate.evaluation: the seeded, eval-mode context every task's evaluation runs in."""

import pytest
import torch

from slotlab.evaluate import evaluation


def test_evaluation_seeds_and_restores_the_callers_state():
    model = torch.nn.Linear(2, 2).train()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with evaluation(model, seed=7) as device:
        assert not model.training and device.type == "cpu"
        inside = torch.rand(3)
    assert model.training and torch.equal(torch.rand(3), expected)  # the caller's stream continues untouched
    torch.manual_seed(123)
    with evaluation(model, seed=7):
        assert torch.equal(torch.rand(3), inside)  # the seed alone fixes the draws
    with pytest.raises(RuntimeError), evaluation(model, seed=7):
        raise RuntimeError("stop")
    assert model.training
