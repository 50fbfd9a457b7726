"""Each training procedure of the 2023-2025 systems does what its docstring says.

Cheap checks without training: ACMIL's masking, MHIM-MIL's teacher and masking, AEM's
entropy term, SC-MIL's contrastive coupling and curriculum, FocusMIL's sampling and its
set-monotone, count-free inference. The models' verdicts come from `pytest --model=NAME`.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mil_assert.models._draws import instance_dropout, instance_normal, instance_uniform
from mil_assert.models.acmil import ACMIL
from mil_assert.models.aem import AEM
from mil_assert.models.focus_mil import FocusMIL
from mil_assert.models.mhim_mil import MHIMMIL
from mil_assert.models.sc_mil import SCMIL, supervised_contrastive
from mil_assert.procedure import TrainingProgress
from mil_assert.registry import builtin_models

DIM = 6
REPO = Path(__file__).resolve().parent.parent
RECENT = ("acmil", "mhim_mil", "aem", "sc_mil", "focus_mil")


def batch(sizes: list[int], seed: int = 0, width: int | None = None):
    """Random bags of ``sizes`` padded to ``width`` with 1e3: ``X [B, N, DIM]``, ``mask``."""
    generator = torch.Generator().manual_seed(seed)
    width = max(sizes) if width is None else width
    X = torch.full((len(sizes), width, DIM), 1e3)
    mask = torch.zeros(len(sizes), width, dtype=torch.bool)
    for i, n in enumerate(sizes):
        X[i, :n] = torch.randn(n, DIM, generator=generator)
        mask[i, :n] = True
    return X, mask


def progress(epoch: int, step: int, epochs: int = 4, steps_per_epoch: int = 3):
    return TrainingProgress(epoch=epoch, epochs=epochs, step=step,
                            steps_per_epoch=steps_per_epoch)


def bce_by_hand(logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(logit)`` for ``y = 1``, ``-log(1 - sigmoid(logit))`` for ``y = 0``."""
    p = 1 / (1 + torch.exp(-logit))
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + (0 if layer.bias is None else layer.bias)


def gated_scores(value, gate, score, h: torch.Tensor) -> torch.Tensor:
    """``w^T (tanh(V h) * sigmoid(U h)) + b`` from the layers' weights: ``[n, outputs]``."""
    return linear(score, torch.tanh(linear(value, h)) * torch.sigmoid(linear(gate, h)))


def acmil_loss_by_hand(model: ACMIL, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ACMIL's loss of one unpadded bag ``x [n, D]`` in evaluation mode (no masking), from
    its parameters: slide BCE + mean branch BCE + mean pairwise cosine of the attention."""
    h = torch.relu(x @ model.embed[0].weight.T)  # no bias
    attention = model.attention
    s = gated_scores(attention.value[0], attention.gate[0], attention.score, h)  # [n, K]
    a = torch.exp(s - s.max(0).values) / torch.exp(s - s.max(0).values).sum(0)  # per branch
    K = a.shape[1]
    branch = [bce_by_hand(model.branch_heads.weight[k] @ (a[:, k] @ h)
                          + model.branch_heads.bias[k], y) for k in range(K)]
    slide = model.slide_head.weight[0] @ (a.mean(1) @ h) + model.slide_head.bias[0]
    cosines = [a[:, i] @ a[:, j] / (a[:, i].norm() * a[:, j].norm())
               for i in range(K) for j in range(i + 1, K)]
    return bce_by_hand(slide, y) + sum(branch) / K + sum(cosines) / len(cosines)


def aem_loss_by_hand(model: AEM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """AEM's loss of one unpadded bag ``x [n, D]`` from its parameters: BCE on the
    attention-pooled logit + 0.1 x sum_j a_j log a_j."""
    h = torch.relu(x @ model.embed[0].weight.T)  # no bias
    attention = model.attention
    s = gated_scores(attention.value[0], attention.gate[0], attention.score, h)[:, 0]
    a = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
    logit = model.head.weight[0] @ (a @ h) + model.head.bias[0]
    return bce_by_hand(logit, y) + 0.1 * (a * torch.log(a)).sum()


def test_recent_systems_stay_out_of_the_default_run():
    specs = builtin_models()
    for name in RECENT:
        assert specs[name].in_default_run is False, name
    assert specs["abmil"].in_default_run is True


def collected(*options: str) -> str:
    """The compliance cells a pytest run would collect in this repository."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "mil_assert/compliance.py", *options],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_default_run_skips_them_and_a_named_run_judges_them():
    default = collected()
    assert "[abmil]" in default
    assert not any(f"[{name}]" in default for name in RECENT)
    named = collected("--model=acmil")
    assert named.count("[acmil]") == 4 and "[abmil]" not in named


def test_instance_major_draws_ignore_padding():
    """The same global seed gives every real instance the same draw at any padded width,
    and the draws after it are unchanged too."""
    narrow, wide = torch.zeros(3, 5, 4), torch.zeros(3, 9, 4)
    draws = []
    for like in (narrow, wide):
        torch.manual_seed(7)
        draws.append((instance_uniform(like, 2), instance_normal(like, 4),
                       instance_dropout(torch.ones_like(like), 0.5, True)))
    for a, b in zip(*draws, strict=True):
        torch.testing.assert_close(a, b[:, :5], rtol=0, atol=0)
    assert instance_dropout(narrow + 1, 0.5, False).eq(1).all()


class TestACMIL:
    def test_masking_drops_a_random_share_of_each_branch_top_k(self):
        torch.manual_seed(0)
        model = ACMIL(DIM, width=16, attention_width=8, n_token=3, n_masked_patch=4,
                      mask_drop=0.5)
        X, mask = batch([12, 3, 1], width=14)
        scores = model.attention(model.embed(X))  # [B, K, N]
        kept = model.masked_top_k(scores, mask)
        for b, n in enumerate([12, 3, 1]):
            k = min(4, n)
            for branch in range(3):
                dropped = mask[b] & ~kept[b, branch]
                assert int(dropped.sum()) == math.floor(k * 0.5)
                real = scores[b, branch].masked_fill(~mask[b], -math.inf)
                top = set(real.topk(k).indices.tolist())
                assert set(dropped.nonzero().flatten().tolist()) <= top
                assert not kept[b, branch, n:].any()  # padding never enters a softmax

    def test_masking_is_random_in_training_and_absent_in_evaluation(self):
        torch.manual_seed(0)
        model = ACMIL(DIM, width=16, attention_width=8)
        X, mask = batch([12, 12, 12, 12])
        model.train()
        first, second = model(X, mask), model(X, mask)
        assert not torch.allclose(first, second)
        model.eval()
        torch.testing.assert_close(model(X, mask), model(X, mask), rtol=0, atol=0)

    def test_loss_adds_branch_losses_and_attention_diversity(self):
        torch.manual_seed(0)
        model = ACMIL(DIM, width=16, attention_width=8, n_token=2).eval()
        same = torch.tensor([[[0.5, 0.5, 0.0]] * 2])
        apart = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        assert model.diversity(same).item() == pytest.approx(1.0)
        assert model.diversity(apart).item() == pytest.approx(0.0)
        X, mask = batch([5, 7])
        y = torch.tensor([0.0, 1.0])
        expected = torch.stack([acmil_loss_by_hand(model, X[b, mask[b]], y[b])
                                for b in range(2)])
        torch.testing.assert_close(model.loss(X, mask, y), expected)


class TestMHIMMIL:
    def model(self, **options) -> MHIMMIL:
        torch.manual_seed(0)
        return MHIMMIL(DIM, width=16, attention_width=8, **options)

    def test_first_stage_ends_with_the_teacher_a_copy_of_the_base(self):
        """And the student keeps only the base's first layer (``init_stu_type=fc``)."""
        model = self.model()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        base = {name: p.clone() for name, p in model.student.named_parameters()}
        trained_predictor = model.predictor.weight.clone()
        model.on_train_epoch_end(progress(epoch=0, step=2))  # epoch 1 of 4 ends: stage 1
        assert not model.teacher_on
        model.on_train_epoch_end(progress(epoch=1, step=5))  # epoch E/2 = 2 ends
        assert model.teacher_on and model.stage_start == 6
        for name, teacher in model.teacher.named_parameters():
            torch.testing.assert_close(teacher, base[name])
            assert not teacher.requires_grad
        for name, student in model.student.named_parameters():
            kept = name.startswith("embed.")
            assert torch.equal(student, base[name]) == kept, name
        assert float(model.predictor.bias.detach().abs().sum()) == 0.0  # started afresh
        assert not torch.equal(model.predictor.weight, trained_predictor)

    def test_the_teachers_momentum_means_over_the_stage_what_the_authors_means(self):
        model = self.model()
        model.on_train_epoch_end(progress(epoch=1, step=5, epochs=4, steps_per_epoch=3))
        stage_steps = 6
        assert model.stage_momentum == pytest.approx(0.9999 ** (200 * 266 / stage_steps))
        # what the teacher keeps of its start at the end: the same here as theirs
        assert model.stage_momentum ** stage_steps == pytest.approx(0.9999 ** (200 * 266))
        assert 0.9999 ** (200 * 266) == pytest.approx(0.0049, abs=1e-4)

    def test_the_learning_rate_anneals_within_each_stage(self):
        model = self.model()
        factors = [model.lr_factor(progress(epoch=e, step=3 * e, epochs=6)) for e in range(6)]
        first = [0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
        assert factors == pytest.approx(first + first)

    def test_ema_teacher_moves_towards_the_student_after_each_step(self):
        model = self.model(momentum=0.9, authors_steps=6)  # 6 stage steps: m stays 0.9
        model.on_train_epoch_end(progress(epoch=1, step=5))
        with torch.no_grad():
            for parameter in model.student.parameters():
                parameter.add_(1.0)

        def gap() -> float:
            return sum(float((t - s).detach().abs().sum()) for t, s in
                       zip(model.teacher.parameters(), model.student.parameters(), strict=True))

        before = gap()
        model.on_train_batch_end(progress(epoch=2, step=6))
        assert gap() == pytest.approx(0.9 * before, rel=1e-4)
        assert model.high_ratio < model.mask_ratio_h  # the cosine decay of mask_ratio_h

    def test_the_student_loses_the_teachers_most_attended_instance(self):
        model = self.model(mask_ratio=0.0, mask_ratio_h=0.01, mask_ratio_hr=1.0)
        X, mask = batch([9, 4, 1], width=11)
        model.on_train_epoch_end(progress(epoch=1, step=5))
        model.teacher.eval()
        _, attention = model.teacher(X, mask)
        keep = model.student_keep(mask, attention)
        for b, n in enumerate([9, 4]):
            lost = (mask[b] & ~keep[b]).nonzero().flatten().tolist()
            assert lost == [int(attention[b, :n].argmax())]
        assert keep[2].sum() == 1  # a one-instance bag keeps its instance

    def test_random_masking_hides_half_of_each_bag(self):
        model = self.model(mask_ratio=0.5, mask_ratio_h=0.0)
        model.high_ratio = 0.0
        X, mask = batch([10, 5], width=12)
        keep = model.student_keep(mask, torch.zeros(2, 12))
        assert keep.sum(1).tolist() == [5, 2]
        assert not (keep & ~mask).any()

    def test_second_stage_loss_adds_the_consistency_term(self):
        model = self.model(mask_ratio=0.0, mask_ratio_h=0.0, dropout=0.0)
        X, mask = batch([6, 8])
        y = torch.tensor([1.0, 0.0])
        torch.testing.assert_close(model.loss(X, mask, y), bce_by_hand(model(X, mask), y))
        model.on_train_epoch_end(progress(epoch=1, step=5))
        model.high_ratio = 0.0
        stage_two = model.loss(X, mask, y)
        target = torch.softmax(model.teacher(X, mask)[0] / 0.1, dim=-1)
        consistency = -(target * torch.log_softmax(model.student(X, mask)[0], dim=-1)).sum(-1)
        torch.testing.assert_close(stage_two, bce_by_hand(model(X, mask), y)
                                   + 0.1 * consistency)


class TestAEM:
    def test_entropy_term_rewards_spread_attention(self):
        model = AEM(DIM, width=16, attention_width=8)
        mask = torch.ones(1, 4, dtype=torch.bool)
        uniform = torch.log(torch.full((1, 4), 0.25))
        peaked = torch.log_softmax(torch.tensor([[5.0, 0.0, 0.0, 0.0]]), dim=-1)
        assert model.negative_entropy(uniform, mask).item() == pytest.approx(-math.log(4))
        assert model.negative_entropy(uniform, mask) < model.negative_entropy(peaked, mask)

    def test_loss_is_bce_plus_a_tenth_of_the_negative_entropy(self):
        torch.manual_seed(0)
        model = AEM(DIM, width=16, attention_width=8)
        X, mask = batch([3, 7], width=9)
        y = torch.tensor([0.0, 1.0])
        expected = torch.stack([aem_loss_by_hand(model, X[b, mask[b]], y[b]) for b in range(2)])
        torch.testing.assert_close(model.loss(X, mask, y), expected)

    def test_a_gradient_step_on_the_term_spreads_the_attention(self):
        torch.manual_seed(0)
        model = AEM(DIM, width=16, attention_width=8, entropy_weight=1.0)
        X, mask = batch([8, 8])
        entropy_before = -model.negative_entropy(model.attend(X, mask)[1], mask).sum()
        (-entropy_before).backward()
        with torch.no_grad():
            for parameter in model.attention.parameters():
                parameter.sub_(0.1 * parameter.grad)
        assert -model.negative_entropy(model.attend(X, mask)[1], mask).sum() > entropy_before


class TestSCMIL:
    def test_contrastive_loss_couples_the_bags_of_a_batch(self):
        """Bag 0's gradient changes when only bag 3 changes; under cross-entropy alone
        (weight 0) it does not."""
        torch.manual_seed(0)
        model = SCMIL(DIM, width=16, attention_width=8, projection_width=8)
        X, mask = batch([5, 6, 7, 8])
        other = X.clone()
        other[3, :8] = torch.randn(8, DIM, generator=torch.Generator().manual_seed(9))
        y = torch.tensor([0.0, 1.0, 0.0, 1.0])

        def first_bag_gradient(bags: torch.Tensor) -> torch.Tensor:
            bags = bags.clone().requires_grad_(True)
            model.batch_loss(bags, mask, y).backward()
            return bags.grad[0, :5]

        assert not torch.allclose(first_bag_gradient(X), first_bag_gradient(other))
        model.contrastive_weight = 0.0
        torch.testing.assert_close(first_bag_gradient(X), first_bag_gradient(other))

    def test_supervised_contrastive_prefers_same_label_neighbours(self):
        y = torch.tensor([0.0, 0.0, 1.0, 1.0])
        grouped = torch.nn.functional.normalize(torch.tensor(
            [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
        mixed = grouped[[0, 2, 1, 3]]
        assert supervised_contrastive(grouped, y, 0.1) < supervised_contrastive(mixed, y, 0.1)

    def test_curriculum_moves_the_weight_to_cross_entropy(self):
        torch.manual_seed(0)
        model = SCMIL(DIM, width=16, attention_width=8, projection_width=8)
        weights = []
        for epoch in range(10):
            model.on_train_epoch_start(progress(epoch, epoch * 3, epochs=10))
            weights.append(model.contrastive_weight)
        assert weights[0] == 1.0 and weights == sorted(weights, reverse=True)
        assert weights[-1] == pytest.approx(1 - 0.81)
        X, mask = batch([4, 6])
        y = torch.tensor([0.0, 1.0])
        model.contrastive_weight = 0.0
        torch.testing.assert_close(
            model.batch_loss(X, mask, y),
            torch.nn.functional.binary_cross_entropy_with_logits(model(X, mask), y))


class TestFocusMIL:
    def test_training_samples_codes_and_inference_uses_the_mean(self):
        torch.manual_seed(0)
        model = FocusMIL(DIM, width=16, latent=4)
        X, mask = batch([5, 9], width=10)
        model.train()
        assert not torch.allclose(model(X, mask), model(X, mask))
        model.eval()
        mu, _ = model.posterior(X)
        expected = model.classifier(mu).squeeze(-1).masked_fill(~mask, -math.inf).amax(1)
        torch.testing.assert_close(model(X, mask), expected)

    @torch.no_grad()
    def test_inference_is_set_monotone_and_count_free(self):
        torch.manual_seed(0)
        model = FocusMIL(DIM, width=16, latent=4).eval()
        generator = torch.Generator().manual_seed(3)
        for _ in range(10):
            x = torch.randn(5, DIM, generator=generator) * 2
            extra = torch.randn(1, DIM, generator=generator) * 3
            base = model(x[None], torch.ones(1, 5, dtype=torch.bool))
            added = model(torch.cat([x, extra])[None], torch.ones(1, 6, dtype=torch.bool))
            assert added >= base
            copies = torch.cat([x, x[:3]])[None]
            torch.testing.assert_close(model(copies, torch.ones(1, 8, dtype=torch.bool)), base)

    def test_kl_term_vanishes_at_the_prior(self):
        model = FocusMIL(DIM, width=16, latent=4, beta=1.0).eval()
        for layer in (model.mean, model.log_variance):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        X, mask = batch([3, 4])
        y = torch.tensor([1.0, 0.0])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(model(X, mask), y,
                                                                   reduction="none")
        torch.testing.assert_close(model.loss(X, mask, y), bce)
