"""MHIM-MIL (ABMIL base) from its authors' code, unmodified, trained as their script trains it.

Paper: Tang et al., "Multiple Instance Learning Framework with Masked Hard Instance Mining
for Whole Slide Image Classification", ICCV 2023. Code: DearCaat/MHIM-MIL, branch ``v1``
at commit 5377eb6014bbd24eda1185628b864e8ef3622a08 (the ICCV code; ``master`` holds the
IJCV 2025 "MHIM-v2" rewrite), unpacked unmodified in ``repo/`` next to this file. The
repository has NO licence file at its root (its ``DTFD/`` folder is MIT); nothing of it
may be copied into mil-assert. Needs ``einops`` (imported by ``modules/satten.py``).

Built as ``main.py`` builds it (lines 146-172) for the README's Camelyon16 ABMIL command
(``--baseline=attn --cl_alpha=0.1 --mask_ratio_h=0.01 --mask_ratio_hr=0.5 --mrh_sche
--init_stu_type=fc --mask_ratio=0.5 --mask_ratio_l=0. --teacher_init=<trained baseline>``)
and the parser's defaults (dropout 0.25, temp_t 0.1, act/da_act relu, msa_fusion vote,
mm 0.9999, loss ce, two classes): ``mhim.MHIM`` = ``patch_to_emb`` Linear->ReLU (width
512), Dropout 0.25, ``DAttention`` (128, no biases), ``predictor`` Linear(512, 2).

Shapes: one bag ``x [1, N, D]`` -> two-class logits ``[1, 2]`` (judge with
``@input=bag1``; the harness reads ``z1 - z0``). ``loss(x, y)``: ``y`` a 0-d float.

The shim (``MHIMTrained``, a subclass of their ``MHIM``) adds only what the harness needs:

* input width: their ``patch_to_emb`` is ``nn.Linear(1024, 512)`` fixed in code
  (``modules/mhim.py:47``); it is replaced by ``nn.Linear(D, 512)`` initialised by their
  own ``initialize_weights`` (Xavier-normal, zero bias), as everything else is.
* routing: their trainer calls ``model.pure(x)`` for the baseline (``main.py:540``),
  ``model(x, attn, cls_tea, i)`` for MHIM with ``cls_tea, attn =
  model_tea.forward_teacher(x)`` from a teacher in training mode (``main.py:496-533``),
  and ``model.forward_test(x)`` in evaluation (``main.py:636, 703``). ``forward(x)`` does
  the same: eval -> ``forward_test``; training -> ``pure`` (stage 1) or the teacher then
  their ``forward`` (stage 2). The teacher is a submodule (an unmodified ``MHIM``, no
  gradient), so ``train()``/``eval()`` reach it as their loop sets it.
* two stages in the one budget: their MHIM run needs a baseline trained first
  (``--model=pure``, README "Prepare Your Own Initiation Weight"). Stage 1 (epochs 0 ..
  E/2-1) trains that baseline; at its end (``on_train_epoch_end``) the teacher becomes
  the whole trained baseline (``main.py:221-230``) and the student a fresh model whose
  ``patch_to_emb`` alone comes from it (``--init_stu_type=fc``, ``main.py:201-213``); the
  fresh model is this model's own initial state, which is what their second run builds
  (same constructor after the same ``seed_torch(seed)``).
* ``loss(x, y)``: cross-entropy on the logits (stage 1, ``cl_alpha`` = 0 for ``pure``,
  ``main.py:832-833``); stage 2 adds 0.1 x their consistency loss (``main.py:553``).
* ``on_train_batch_end``: their ``ema_update`` after every optimiser step
  (``main.py:566-575``, ``utils.py:16-25``: teacher = m teacher + (1 - m) student), and the
  step index ``i`` that their ``mrh_sche`` reads: ``mask_ratio_h`` cosine from 0.01 to 0
  over the stage's steps (``main.py:147-148``, ``utils.py:112-123``).
* ``lr_factor``: their ``CosineAnnealingLR(T_max=num_epoch)`` stepped per epoch
  (``main.py:252-253, 606-607``), within each stage as each of their runs has its own.

Momentum: theirs is 0.9999 per step over about 200 x 266 = 53,200 steps (one Camelyon16
slide per step, 3-fold split), after which the teacher keeps 0.9999^53200 = 0.5% of the
baseline. ``build`` rescales it to the stage's S steps, m = 0.9999^(53200 / S) (0.9890
at the default budget's 480), so the teacher follows the student as theirs does (as the
zoo's ``models/mhim_mil.py``); ``build_mm9999`` keeps 0.9999 as written (the teacher then
keeps 95% of the baseline over 480 steps).

Small bags: their mask function raises on any bag of 1 or 2 instances in stage 2. Their
random mask (``mask_ratio`` 0.5, ``select_mask_fn`` with ``random_ratio=0.001``) masks
ceil(N/2) = 1 instance; ``mhim.py:169`` takes ``mask_ids[:, len_keep:].squeeze()``, a 0-d
tensor for one index, and the high-attention mask's ``torch.cat`` at ``mhim.py:120``
fails: ``RuntimeError: zero-dimensional tensor (at position 1) cannot be concatenated``.
The shim handles it without touching their code: for N <= 2 it calls their ``forward``
with their own ``select_mask=False`` switch (the path of their ``pure`` model), so the
student sees the whole bag and the consistency loss still applies. Bags of 3 run as they
wrote them: one draw in three masks every instance (the student sees an empty bag and its
logits are the predictor's bias). Evaluation (``forward_test``) masks nothing.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "repo"))

from modules import mhim  # noqa: E402 - the authors' package root

# main.py:152-167 with the README's Camelyon16 ABMIL command and the parser's defaults.
PARAMS = dict(baseline="attn", dropout=0.25, mask_ratio=0.5, n_classes=2, temp_t=0.1,
              act="relu", head=8, msa_fusion="vote", mask_ratio_h=0.01, mask_ratio_hr=0.5,
              mask_ratio_l=0.0, mrh_sche=None, da_act="relu", attn_layer=0)
CL_ALPHA = 0.1  # --cl_alpha
MM = 0.9999  # --mm default (main.py:810)
AUTHORS_STEPS = 200 * 266  # --num_epoch 200 x 266 training slides, one per step
WIDTH = 512  # the out width of their fixed nn.Linear(1024, 512)


def cosine_scheduler(base_value: float, final_value: float, steps: int) -> np.ndarray:
    """Their ``utils.cosine_scheduler`` without warm-up (utils.py:112-123)."""
    iters = np.arange(steps)
    return final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / steps))


def authors_model(dim: int) -> mhim.MHIM:
    """Their ``mhim.MHIM(**model_params)``, first layer taking ``dim`` features."""
    model = mhim.MHIM(**PARAMS)
    swap_first_layer(model, dim)
    return model


def swap_first_layer(model: mhim.MHIM, dim: int) -> None:
    model.patch_to_emb[0] = nn.Linear(dim, WIDTH)
    mhim.initialize_weights(model.patch_to_emb)


class MHIMTrained(mhim.MHIM):
    """Their ``MHIM`` as the student, holding its EMA teacher; see the module docstring."""

    def __init__(self, dim: int, momentum: float | None = None) -> None:
        super().__init__(**PARAMS)
        swap_first_layer(self, dim)
        self.fresh = copy.deepcopy(self.state_dict())  # what their second run builds
        teacher = authors_model(dim)
        teacher.load_state_dict(self.state_dict())
        self.teacher = teacher.requires_grad_(False)
        self.momentum = momentum  # None: rescaled to the stage's steps at its start
        self.mm = MM
        self.stage = 1
        self.i = 0  # their iteration index into mrh_sche, within stage 2

    def student_parameters(self):
        return (p for name, p in self.named_parameters() if not name.startswith("teacher."))

    def train_outputs(self, x: torch.Tensor):
        """``(logits [1, 2], consistency loss)`` as their train loop computes them."""
        if self.stage == 1:
            logits, cls_loss, _, _ = self.pure(x)
            return logits, cls_loss
        cls_tea, attn = self.teacher.forward_teacher(x)
        small = x.shape[1] <= 2  # their masks raise here (module docstring)
        self.select_mask = not small
        try:
            logits, cls_loss, _, _ = super().forward(x, attn, cls_tea, i=self.i)
        finally:
            self.select_mask = True
        return logits, cls_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.forward_test(x)
        return self.train_outputs(x)[0]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, cls_loss = self.train_outputs(x)
        ce = F.cross_entropy(logits.view(1, -1), y.long().reshape(1))
        return ce + CL_ALPHA * cls_loss if self.stage == 2 else ce

    def first_stage_epochs(self, epochs: int) -> int:
        return max(1, epochs // 2) if epochs > 1 else epochs

    def lr_factor(self, progress) -> float:
        first = self.first_stage_epochs(progress.epochs)
        epoch, length = ((progress.epoch, first) if progress.epoch < first
                         else (progress.epoch - first, progress.epochs - first))
        return 0.5 * (1.0 + math.cos(math.pi * epoch / length))

    @torch.no_grad()
    def on_train_epoch_end(self, progress) -> None:
        if self.stage == 2 or progress.epoch + 1 != self.first_stage_epochs(progress.epochs):
            return
        if progress.epoch + 1 == progress.epochs:
            return  # a one-epoch budget: the baseline only
        baseline = {k: v.clone() for k, v in self.state_dict().items()
                    if not k.startswith("teacher.")}
        self.teacher.load_state_dict(baseline)  # the teacher: the whole trained baseline
        self.load_state_dict({**self.fresh, **{f"teacher.{k}": v for k, v in baseline.items()}})
        self.patch_to_emb.load_state_dict(  # --init_stu_type=fc
            {k.removeprefix("patch_to_emb."): v for k, v in baseline.items()
             if k.startswith("patch_to_emb.")})
        steps = (progress.epochs - progress.epoch - 1) * progress.steps_per_epoch
        self.mrh_sche = cosine_scheduler(PARAMS["mask_ratio_h"], 0.0, steps)
        self.mm = self.momentum if self.momentum is not None else MM ** (AUTHORS_STEPS / steps)
        self.stage, self.i = 2, 0

    @torch.no_grad()
    def on_train_batch_end(self, progress) -> None:
        if self.stage != 2:
            return
        for q, k in zip(self.student_parameters(), self.teacher.parameters(), strict=True):
            k.data.mul_(self.mm).add_(q.data, alpha=1.0 - self.mm)  # their ema_update
        self.i = min(self.i + 1, len(self.mrh_sche) - 1)


def build(dim: int) -> MHIMTrained:
    """The authors' MHIM-MIL (ABMIL), EMA momentum rescaled to the budget's steps."""
    return MHIMTrained(dim)


def build_mm9999(dim: int) -> MHIMTrained:
    """The same with their momentum 0.9999 per step as written."""
    return MHIMTrained(dim, momentum=MM)
