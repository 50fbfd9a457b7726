"""Scratch shim (not in the project): AEM's unmodified ABMIL (dazhangyu123/AEM, no
licence file, so judged here only) with its training objective as a loss(x, y) hook."""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from architecture.transformer import ABMIL  # noqa: E402

LAMDA = 0.1


class AEM(ABMIL):
    def loss(self, x, y):
        logits, attn = self(x, is_train=True)
        bag = F.cross_entropy(logits, y.long().reshape(1))
        div = torch.sum(F.softmax(attn, dim=-1) * F.log_softmax(attn, dim=-1))
        return LAMDA * div + bag


def build_aem(dim):
    return AEM(SimpleNamespace(D_feat=dim, D_inner=128, n_class=2))
