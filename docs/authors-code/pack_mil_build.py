"""PackMIL from its authors' code, unmodified, trained through their packed forward.

Paper: Tang, Fang, Wu, Li, Cheng, "Revisiting Data Challenges of Computational Pathology: A
Pack-based Multiple Instance Learning Framework", 2025 (arXiv 2509.20923).
Code: github.com/FangHeng/PackMIL at commit ff9b3a662664f65e59d4e15ada9c33f42df25996,
Apache-2.0 (``repo/LICENSE``), extracted unmodified into ``repo/`` beside this file.

What is built (``build(dim)``): the authors' ``modules.packmil.PackMIL`` with the
arguments their ``modules/__init__.py:22-47`` (``build_model``) passes, read from their own
option parser (``options.py``) fed their sub-typing configuration
``config/feat_pack_brca.yaml`` and their README's sub-typing command (README.md:161:
``--model=abmil --batch_size=32 --token_dropout=0.5 --input_dim=feat_dim``), then their
``more_about_config`` (options.py:219). That gives: ABMIL base (``MILBase`` + ``DAttention``,
width 512, GELU, dropout 0.25, biases on), ADS down-sampler with r = 4 (``ads``,
``random``), packs of 2400 instances, ``min_seq_len`` 128, token dropout 0.5, residual
branch with the focal loss (alpha 0.25, gamma 2: packmil.py:59), shared classifier,
two classes, ``aux_alpha`` 0.2, ``main_alpha`` 1, cross-entropy, lr 5e-4 cosine over 75
epochs to 1e-7.

Shapes. ``forward(x)`` in eval: one bag ``x [1, N, D]`` -> two-class logits ``[1, 2]``,
the authors' inference branch (packmil.py:262-280: ADS without down-sampling, ABMIL, the
shared classifier). Judge with ``@input=bag1`` (the harness reads ``z1 - z0``).

What this file adds, and why:
- ``batch_loss(bags, y)``: the harness's hook over one step's bags (``bags``: list of
  ``[1, N, D]``; ``y``: float ``[B]`` of 0./1.). It calls the authors' packed training
  forward on the list of ``[N, D]`` bags with the integer labels, as their engine does
  (engines/common_mil.py:36-38: ``model(bag, pos=pos, label=label, epoch=epoch)``, which
  returns ``(logits [B, 2], aux_loss, ...)``), and combines as their trainer does
  (engines/base_engine.py:117-118): ``main_alpha * CE(logits, label) + aux_alpha *
  aux_loss``, with their criterion ``nn.CrossEntropyLoss(label_smoothing=0)``
  (train_utils.py:85, ``--loss ce`` default).
- ``lr_factor(progress)``: their schedule as a factor of the harness's learning rate:
  timm's cosine (train_utils.py:119, ``create_scheduler_v2(sched='cosine',
  num_epochs=75, warmup_epochs=0, min_lr=1e-7)``) stepped once per epoch
  (base_engine.py:267-268), stretched over the harness's epochs; the floor is their
  ``min_lr / lr`` = 2e-4.
- ``forward`` of ONE bag in TRAINING mode (the harness's contract check calls it; training
  itself goes through ``batch_loss`` only): their training forward needs a list of bags
  and their labels (without labels its residual branch fails unpacking ``feat, label``,
  packing.py:190), so the one bag is run as a pack of one through that same training
  forward with a placeholder label 0, which only feeds the residual branch's loss, which is
  discarded; the main-branch logits ``[1, 2]`` are returned. In eval, and for a list of
  bags, ``forward`` is the authors' unchanged.

Import plumbing (no authors' line changed): their ``modules/__init__.py`` imports all 15
other models (torch_geometric for WiKG, Mamba, LongNet, ...), so ``modules`` is registered
as a bare package and only ``modules.packmil`` and what it imports are loaded. timm's
package ``__init__`` imports ``timm.data`` and through it torchvision's datasets and
transforms; ``timm`` and ``timm.models`` are registered the same way, so only
``timm.loss``, ``timm.layers``, ``timm.models.layers`` and ``timm.utils`` load. The only
torchvision wheel for torch 2.13 here is a CUDA build that cannot load, so
``standins/torchvision`` (written here) provides the two names on this path:
``torchvision.models`` (imported, unused, by pack_baseline.py:4) and
``torchvision.ops.misc.FrozenBatchNorm2d`` (imported by timm.layers; unused here).

Regime note: bags here hold 1-50 instances, far under the authors' ``min_seq_len * r`` =
512, so their ``get_packs`` (packing.py:47-51) gives every bag WHOLE to both branches (no
token dropout happens) and ADS reweights and re-embeds instances without down-sampling
(``downsample=len > 512`` is False); a step's 32 bags fit one 2400-instance pack, so the
residual branch pools ALL 32 bags as one hyperslide whose mixup target is [1, 1] whenever
both classes are in the step. That is the authors' configuration applied as written.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE / "repo"
CONFIG = REPO / "config" / "feat_pack_brca.yaml"  # the authors' sub-typing config
# README.md:161
COMMAND = ["--datasets=brca", "--model=abmil", "--batch_size=32", "--token_dropout=0.5"]


def _bare_package(name: str, path: str) -> None:
    """Register ``name`` as a package at ``path`` without running its ``__init__.py``."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module


if "torchvision" not in sys.modules:
    sys.path.insert(0, str(HERE / "standins"))
_timm = importlib.util.find_spec("timm")
_bare_package("timm", _timm.submodule_search_locations[0])
_bare_package("timm.models", str(Path(_timm.submodule_search_locations[0]) / "models"))
_bare_package("modules", str(REPO / "modules"))

from modules.packmil import PackMIL  # noqa: E402 - the authors' class
from modules.utils import get_mil_model_params, get_mil_model_params_from_name  # noqa: E402

_spec = importlib.util.spec_from_file_location("packmil_options", REPO / "options.py")
options = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(options)  # the authors' option parser, under a private name


def authors_args(dim: int):
    """The authors' parsed options for their sub-typing run with ``dim`` input features:
    their ``_parse_args`` (config file, then command line) and ``more_about_config``."""
    argv = sys.argv
    sys.argv = ["main.py", f"--config={CONFIG}", *COMMAND, f"--input_dim={dim}"]
    try:
        args, _ = options._parse_args()
    finally:
        sys.argv = argv
    args, _ = options.more_about_config(args)
    return args


class PackMILHarness(PackMIL):
    """The authors' ``PackMIL``, unchanged, with the harness's hooks (see module docstring)."""

    def forward(self, x, label=None, loss=None, pos=None, **mil_kwargs):
        if self.training and isinstance(x, torch.Tensor):  # one bag, training mode
            placeholder = torch.zeros(1, dtype=torch.long, device=x.device)
            return super().forward([x[0]], label=placeholder)[0]  # main-branch logits [1, 2]
        return super().forward(x, label=label, loss=loss, pos=pos, **mil_kwargs)

    def batch_loss(self, bags: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        label = y.long()
        logits, aux_loss, *_ = super().forward([bag[0] for bag in bags], label=label)
        B = logits.size(0)
        return self.main_alpha * self.criterion(logits.view(B, -1), label.view(B)) \
            + aux_loss * self.aux_alpha

    def lr_factor(self, progress) -> float:
        floor = self.min_lr / self.base_lr
        cosine = math.cos(math.pi * progress.epoch / progress.epochs)
        return floor + 0.5 * (1 - floor) * (1 + cosine)


def build(dim: int) -> PackMILHarness:
    """``PackMIL`` as the authors' ``build_model`` (modules/__init__.py:23-47) builds it."""
    args = authors_args(dim)
    _, genera_trans_params = get_mil_model_params(args)
    genera_trans_params.update(get_mil_model_params_from_name(args, args.model))
    model = PackMILHarness(
        mil=args.model,
        task_type="subtype",  # --datasets=brca: their sub-typing task
        token_dropout=args.token_dropout,
        group_max_seq_len=args.pack_max_seq_len,
        min_seq_len=args.min_seq_len,
        pack_residual=not args.pack_no_residual,
        residual_loss=args.pack_residual_loss,
        downsample_mode=args.pack_downsample_mode,
        downsample_type=args.pack_downsample_type,
        residual_type=args.pack_residual_type,
        residual_ps_weight=args.pack_residual_ps_weight,
        singlelabel=args.pack_singlelabel,
        residual_downsample_r=args.pack_residual_downsample_r,
        pad_r=args.pack_pad_r,
        epeg_k=args.epeg_k,
        crmsa_k=args.crmsa_k,
        region_num=args.region_num,
        **genera_trans_params
    )
    # the trainer's side (train_utils.py:85, engines/base_engine.py:117-118, train_utils.py:119)
    model.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smooth)
    model.main_alpha, model.aux_alpha = args.main_alpha, args.aux_alpha
    model.base_lr, model.min_lr = args.lr, 1e-7
    return model
