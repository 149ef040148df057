"""The distill plugin's losses against hand-worked cases: KD (Hinton, Vinyals & Dean,
"Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning Workshop) and
SAD (Ji, Heo & Park, "Show, Attend and Distill: Knowledge Distillation via
Attention-based Feature Matching", AAAI 2021)."""

from __future__ import annotations

import math

import pytest
import torch

from harness.api import Step
from harness.default_plugins import NoDistillation
from harness_distill.kd import KnowledgeDistillation, kd_term
from harness_distill.sad import SAD, Attention, sad_attention_loss, sad_attention_loss_per_layer


def step(task: str, s: torch.Tensor, t: torch.Tensor, task_loss: float, **kw) -> Step:
    return Step(batch={}, task=task, student_out=s, task_loss=torch.tensor(task_loss), teacher_out=t, **kw)


def test_kd_classification_term_is_the_t_squared_kl_of_a_hand_worked_case():
    # teacher logits [ln 3, 0] -> p_t = [3/4, 1/4]; student [0, 0] -> p_s = [1/2, 1/2]
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    kl_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_term(s, t, "classification", 1.0).item() == pytest.approx(kl_t1, rel=1e-6)
    # T = 2: p_t = softmax([ln 3 / 2, 0]) = [√3, 1] / (1 + √3), and the term is scaled by T² = 4
    r3 = math.sqrt(3.0)
    p = [r3 / (1 + r3), 1 / (1 + r3)]
    kl_t2 = sum(pi * math.log(pi / 0.5) for pi in p)
    assert kd_term(s, t, "classification", 2.0).item() == pytest.approx(4 * kl_t2, rel=1e-5)  # (float32)


def test_kd_loss_mixes_task_and_soft_terms_by_alpha():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kd = KnowledgeDistillation(T=1.0, alpha=0.25)
    assert kd.loss(step("classification", s, t, 2.0)).item() == pytest.approx(
        0.75 * 2.0 + 0.25 * kl, rel=1e-6
    )


def test_kd_for_ratings_is_the_squared_distance_to_the_teacher():
    s, t = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 4.0])
    kd = KnowledgeDistillation(T=4.0, alpha=0.5)  # (T has no role for ratings)
    assert kd.loss(step("rating", s, t, 1.0)).item() == pytest.approx(0.5 * 1.0 + 0.5 * (4 + 0) / 2)


def test_kd_of_identical_outputs_is_zero_and_none_is_the_task_loss():
    z = torch.randn(5, 7)
    assert kd_term(z, z.clone(), "classification", 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert NoDistillation().loss(step("rating", z[:, 0], z[:, 1], 0.5)).item() == 0.5


def test_sad_distance_of_a_hand_worked_case():
    # hidden vectors [B, H]: value maps are the squared units, normalised
    t = [torch.tensor([[1.0, 0.0]])]  # v_t = [1, 0]
    s = [torch.tensor([[0.0, 2.0]])]  # v_s = [0, 1]
    att = torch.ones(1, 1, 1)  # one teacher and one student layer: the attention is 1
    assert sad_attention_loss(att, t, s).item() == pytest.approx(1.0)  # mean((v_s - v_t)²) = 2/2
    s_half = [torch.tensor([[1.0, 1.0]])]  # v_s = [1, 1]/√2
    expected = ((1 / math.sqrt(2) - 1) ** 2 + 0.5) / 2
    assert sad_attention_loss(att, t, s_half).item() == pytest.approx(expected, rel=1e-6)


def test_sad_attention_loss_is_zero_for_matching_maps_and_ignores_feature_scale():
    torch.manual_seed(0)
    t = [torch.randn(3, 4, 6, 6), torch.randn(3, 8, 3, 3)]
    s = [torch.randn(3, 2, 6, 6)]
    att = torch.softmax(torch.randn(3, 2, 1), dim=2)
    same = [t[0] * 3.0]  # the same spatial map at another scale
    assert sad_attention_loss(att[:, :1], t[:1], same).item() == pytest.approx(0.0, abs=1e-6)
    a = sad_attention_loss(att, t, s)
    b = sad_attention_loss(att, t, [s[0] * 10.0])
    assert a.item() > 0 and b.item() == pytest.approx(a.item(), rel=1e-5)
    assert sad_attention_loss_per_layer(att, t, s).item() == pytest.approx(a.item(), rel=1e-5)


def test_sad_attention_rows_sum_to_one_over_student_layers():
    torch.manual_seed(0)
    attention = Attention([4, 8, 16], [2, 4], d=8)
    t = [torch.randn(5, c, 4, 4) for c in (4, 8, 16)]
    s = [torch.randn(5, c, 4, 4) for c in (2, 4)]
    att = attention(t, s)
    assert att.shape == (5, 3, 2)
    assert torch.allclose(att.sum(2), torch.ones(5, 3))


def test_sad_loss_is_task_plus_weighted_kd_and_attention_and_trains_the_attention():
    torch.manual_seed(0)
    sad = SAD(alpha=0.5, T=2.0, beta=10.0, d=4)
    sad.attention = Attention([3], [2], d=4)
    t_feats, s_feats = [torch.randn(4, 3, 5)], [torch.randn(4, 2, 5)]
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    st = step("classification", s, t, 1.5, teacher_features=t_feats, student_features=s_feats)
    loss = sad.loss(st)
    att = sad.attention(t_feats, s_feats)
    expected = (
        1.5 + 0.5 * kd_term(s, t, "classification", 2.0) + 10.0 * sad_attention_loss(att, t_feats, s_feats)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()  # the attention is learnt by minimising the weighted distance (no detach)
    assert all(p.grad is not None for p in sad.attention.query.parameters())
