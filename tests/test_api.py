"""harness.api's helpers for plugin authors: `probe` (shapes in `setup`) and `projection`."""

from __future__ import annotations

import pytest
import torch

from harness.api import probe, projection
from harness.plugins import get_registry


def _dcnn(**params):
    cls = get_registry().get("model", "dcnn")

    class Data:
        task, info = "rating", {"n_features": 12}

    return cls(**cls.resolve_params(params, "test")).build(Data())


def test_probe_gives_output_and_feature_shapes_and_restores_the_mode():
    model = _dcnn(channels=[2, 4], hidden=4).train()
    example = {"x": torch.randn(8, 12), "y": torch.randn(8)}
    p = probe(model, example)
    assert p.output == ()  # ratings: [B]
    assert p.features == [(2, 6), (4, 3), (4,)]  # two conv stages [B, C, L], the hidden [B, H]
    assert p.device == torch.device("cpu") and model.training
    assert all(not m._forward_hooks for m in model.modules())  # (its tap is removed)


@pytest.mark.parametrize(
    "source, target",
    [((4,), (8,)), ((2, 6), (4, 3)), ((3, 8, 8), (5, 4, 4)), ((3, 4, 4), (5, 4, 4))],
)
def test_projection_maps_one_feature_shape_onto_another(source, target):
    f = torch.randn(2, *source)
    assert tuple(projection(source, target)(f).shape[1:]) == target


def test_projection_refuses_shapes_of_different_rank():
    with pytest.raises(ValueError, match=r"projection from \(4,\) to \(4, 3\)"):
        projection((4,), (4, 3))


def test_step_task_loss_given_as_a_callable_is_computed_once_on_first_read():
    from harness.api import Step

    calls = []

    def task_loss():
        calls.append(1)
        return torch.tensor(2.0)

    step = Step({"x": torch.zeros(1)}, "classification", None, task_loss)
    assert calls == []  # not read: never computed
    assert step.task_loss.item() == 2.0 and step.task_loss.item() == 2.0
    assert calls == [1]
    assert Step({}, "classification", None, torch.tensor(3.0)).task_loss.item() == 3.0
