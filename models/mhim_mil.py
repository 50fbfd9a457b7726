"""MHIM-MIL: masked hard instance mining with a momentum teacher, on an ABMIL base.

Tang, Huang, Zhang, Zhou, Zhao & Li, "Multiple Instance Learning Framework with Masked Hard
Instance Mining for Whole Slide Image Classification", ICCV 2023 (arXiv 2307.15254); the
journal version is IJCV 2025 (arXiv 2509.11526). The authors' code is DearCaat/MHIM-MIL
(the ICCV version at commit 5377eb6, ``modules/mhim.py`` and ``main.py``), read for the
facts below, none of it copied (the repository carries no licence).

Base (the student): ``h_j = Dropout(ReLU(W x_j))``, attention ``a = softmax_j(w^T ReLU(V
h_j))`` (no biases) over the real instances, bag embedding ``z = sum_j a_j h_j``, a linear
predictor. The procedure, inside the suite's fixed budget:

1. first stage (epochs ``0 .. E/2 - 1``): the base trains alone (the authors' ``pure``
   baseline that initialises the teacher);
2. at the end of epoch ``E/2 - 1`` (``on_train_epoch_end``) the teacher becomes a copy of
   the trained base; the student keeps the base's first layer (the embedding, the
   authors' ``patch_to_emb``) and starts its attention and predictor afresh, as the
   authors' Camelyon16 command does (``--init_stu_type=fc``);
3. second stage: for each bag the teacher (same architecture, no gradient, in training
   mode as in the authors' loop) scores the instances; the student sees the bag with a
   random half of its instances masked (``mask_ratio = 0.5``) and, of the teacher's
   ``ceil(n * mask_ratio_h / mask_ratio_hr)`` most attended instances, a random
   ``mask_ratio_hr = 0.5`` of them masked: the hard-instance mining. ``mask_ratio_h``
   follows a cosine decay from 0.01 to 0 over the stage's steps (``mrh_sche``). Loss of a
   bag: BCE on the student's logit + ``0.1 *`` the soft-target cross-entropy between the
   teacher's bag embedding (softmax at temperature 0.1) and the student's (temperature 1),
   the consistency loss;
4. after every optimiser step of the second stage (``on_train_batch_end``) the teacher
   moves towards the student, ``teacher = m * teacher + (1 - m) * student``. The authors'
   ``m = 0.9999`` acts over their run: about 53,200 steps (200 epochs, the default
   ``num_epoch``, over the 266 training slides of a 3-fold split of Camelyon16's 399, one
   slide per step), after which the teacher keeps ``0.9999^53200 = 0.5%`` of its start.
   Here the second stage has ``S`` steps (480 in the default budget), and ``m =
   0.9999^(53200 / S)`` (0.9890 at 480) leaves the same 0.5%: the teacher follows the
   student over the stage as theirs does over their run (at 0.9999 over 480 steps it
   would keep 95% of the baseline);
5. the learning rate follows the authors' default schedule (``lr_sche cosine``: cosine
   annealing to 0 over the run's epochs, stepped per epoch) within each stage, the
   baseline's and MHIM's, as their two runs each have their own (``lr_factor``).

Inference: the student on the whole bag.

Shapes: ``X`` float ``[B, N, D]``, ``mask`` bool ``[B, N]`` -> bag logits ``[B]``; bag
embeddings ``[B, width]``; attention ``[B, N]``.

Faithful: the ABMIL base of the authors' ``DAttention`` (width 512, attention width 128,
ReLU, no biases, dropout 0.25 after the embedding), the teacher initialised from a trained
baseline, the masking ratios, schedule, consistency loss, temperatures and weights of the
authors' ABMIL command for Camelyon16 (``cl_alpha 0.1, mask_ratio_h 0.01, mask_ratio_hr
0.5, mrh_sche, init_stu_type fc, mask_ratio 0.5``), an EMA step after every optimiser
step, the cosine learning-rate schedule of their ``main.py``.
Simplified: the baseline and MHIM training share the one fixed budget (half each) instead
of a separate 200-epoch baseline run, so the second stage continues the first stage's
optimiser (its Adam moments) where the authors start a new one, at the suite's Adam lr
3e-3 (theirs: 2e-4, weight decay 1e-5); the EMA momentum is rescaled to the stage's
length (above); one logit and BCE instead of a two-way softmax; when the masks would
remove every real instance of a very small bag the student sees the whole bag (the
authors' code would give an empty bag); the random draws are laid out instance-major so
padding never changes them (models/_draws.py).

What its pooling can express: a softmax-weighted mean, like ABMIL; masking the teacher's
top instances makes the student find more evidence, but the evidence is still pooled by a
weighted mean.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, log_softmax, softmax

from mil_assert import Expected, ModelSpec
from mil_assert.models._draws import instance_dropout, instance_uniform
from mil_assert.models._layers import xavier_linears
from mil_assert.models._pooling import masked_softmax

AUTHORS_STEPS = 200 * 266
"""Optimiser steps of the authors' Camelyon16 run: ``num_epoch`` 200 (their default) over
the 266 training slides of a 3-fold split of the 399 slides, one slide per step."""


class AttentionBase(nn.Module):
    """MHIM's ABMIL base: ``(X [B, N, D], keep [B, N]) -> (z [B, width], a [B, N])``."""

    def __init__(self, dim: int, width: int, attention_width: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.attention = nn.Sequential(nn.Linear(width, attention_width, bias=False), nn.ReLU(),
                                       nn.Linear(attention_width, 1, bias=False))
        self.dropout = dropout

    def forward(self, X: torch.Tensor, keep: torch.Tensor):
        h = instance_dropout(self.embed(X), self.dropout, self.training)
        a = masked_softmax(self.attention(h).squeeze(-1), keep)
        return torch.einsum("bn,bnf->bf", a, h), a


def random_subset(candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """bool ``[B, N]``: ``count [B]`` of each bag's ``candidates [B, N]``, drawn at random
    (instance-major draws, so padding never changes them)."""
    priority = instance_uniform(candidates).masked_fill(~candidates, 2.0)
    rank = priority.argsort(dim=1).argsort(dim=1)
    return candidates & (rank < count[:, None])


class MHIMMIL(nn.Module):
    def __init__(self, dim: int, width: int = 512, attention_width: int = 128,
                 dropout: float = 0.25, mask_ratio: float = 0.5, mask_ratio_h: float = 0.01,
                 mask_ratio_hr: float = 0.5, consistency_weight: float = 0.1,
                 teacher_temperature: float = 0.1, momentum: float = 0.9999,
                 authors_steps: int = AUTHORS_STEPS) -> None:
        super().__init__()
        self.student = AttentionBase(dim, width, attention_width, dropout)
        self.predictor = nn.Linear(width, 1)
        xavier_linears(self.modules())
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.mask_ratio = mask_ratio
        self.mask_ratio_h = mask_ratio_h
        self.mask_ratio_hr = mask_ratio_hr
        self.consistency_weight = consistency_weight
        self.teacher_temperature = teacher_temperature
        self.momentum = momentum
        self.authors_steps = authors_steps
        self.stage_momentum = momentum  # rescaled to the second stage's steps at its start
        self.teacher_on = False  # second stage
        self.high_ratio = mask_ratio_h  # mask_ratio_h for the coming step
        self.stage_start = 0  # first step of the second stage

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.student(X, mask)[0]).squeeze(-1)

    def student_keep(self, mask: torch.Tensor, teacher_attention: torch.Tensor) -> torch.Tensor:
        """bool ``[B, N]``: the instances the student sees in the second stage."""
        n = mask.sum(dim=1)
        random_masked = random_subset(mask, torch.ceil(n * self.mask_ratio).long())
        masked = random_masked
        if self.high_ratio > 0:
            top = torch.ceil(n * min(1.0, self.high_ratio / self.mask_ratio_hr)).long()
            hr = self.mask_ratio_hr if self.high_ratio <= self.mask_ratio_hr else self.high_ratio
            order = teacher_attention.masked_fill(~mask, -1.0).argsort(dim=1, descending=True)
            rank = order.argsort(dim=1)
            highest = mask & (rank < top[:, None])
            masked = masked | random_subset(highest, torch.ceil(top * hr).long())
        keep = mask & ~masked
        return torch.where(keep.any(dim=1, keepdim=True), keep, mask)

    def loss(self, X: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.teacher_on:
            return binary_cross_entropy_with_logits(self(X, mask), y, reduction="none")
        with torch.no_grad():
            self.teacher.train(self.training)
            teacher_z, teacher_a = self.teacher(X, mask)
        student_z, _ = self.student(X, self.student_keep(mask, teacher_a))
        logits = self.predictor(student_z).squeeze(-1)
        target = softmax(teacher_z / self.teacher_temperature, dim=-1)
        consistency = -(target * log_softmax(student_z, dim=-1)).sum(dim=-1)
        return (binary_cross_entropy_with_logits(logits, y, reduction="none")
                + self.consistency_weight * consistency)

    def lr_factor(self, progress) -> float:
        """Cosine annealing to 0 within each stage, stepped per epoch (``lr_sche cosine``)."""
        first = max(1, progress.epochs // 2) if progress.epochs > 1 else progress.epochs
        epoch, length = ((progress.epoch, first) if progress.epoch < first
                         else (progress.epoch - first, progress.epochs - first))
        return 0.5 * (1.0 + math.cos(math.pi * epoch / length))

    @torch.no_grad()
    def on_train_epoch_end(self, progress) -> None:
        """End of the first stage: the teacher starts from the trained base, the student
        from its first layer (``init_stu_type=fc``)."""
        if progress.epoch + 1 == max(1, progress.epochs // 2) and progress.epochs > 1:
            self.teacher.load_state_dict(self.student.state_dict())
            xavier_linears([*self.student.attention, self.predictor])
            self.teacher_on = True
            self.high_ratio = self.mask_ratio_h
            self.stage_start = (progress.epoch + 1) * progress.steps_per_epoch
            stage_steps = max(1, progress.total_steps - self.stage_start)
            self.stage_momentum = self.momentum ** (self.authors_steps / stage_steps)

    @torch.no_grad()
    def on_train_batch_end(self, progress) -> None:
        """Second stage: EMA step of the teacher, and ``mask_ratio_h`` for the next step."""
        if not self.teacher_on:
            return
        for teacher, student in zip(self.teacher.parameters(), self.student.parameters(),
                                    strict=True):
            teacher.mul_(self.stage_momentum).add_(student.detach(),
                                                   alpha=1.0 - self.stage_momentum)
        steps = max(1, progress.total_steps - self.stage_start)
        done = progress.step + 1 - self.stage_start
        self.high_ratio = 0.5 * self.mask_ratio_h * (1.0 + math.cos(math.pi * done / steps))


SPEC = ModelSpec(
    name="mhim_mil",
    factory=MHIMMIL,
    citation="Tang et al., Multiple Instance Learning Framework with Masked Hard Instance "
             "Mining for Whole Slide Image Classification, ICCV 2023",
    respects=(),
    stackable=False,  # dropout and random masking in every training step
    in_default_run=False,
    expected={
        "single_concept": Expected("inconclusive", "6 of 12 seeds learn the concept (test "
                                   "AUC 0.89-0.94); 5 read the poison, masked from the "
                                   "student, as positive (validation 0.00-0.13), 1 inverts"),
        "threshold_poisoned": Expected("violation", "the poison shortcut on 3 of 12 seeds "
                                       "(validation 1.00, test 0.00); 6 learn a partial rule "
                                       "(validation 0.76-0.78), 3 do not learn"),
        "false_frequency": Expected("inconclusive", "no majority: 5 of 12 seeds learn a "
                                    "partial rule (validation 0.75-0.79), 6 do not learn, 1 "
                                    "inverts (test 0.38)"),
        "label_swap": Expected("violation", "softmax attention uses absence as positive "
                               "evidence: held-out AUC 0.93-0.98 on 12 of 12 seeds"),
    },
)
