"""Benchmark way (d): torchmil's ``Trainer`` and ``DataLoader`` on the suite's model and bags.

torchmil (Castro-Macias et al., "torchmil: A PyTorch-based library for deep Multiple
Instance Learning", arXiv 2509.08129; Apache-2.0) trains a ``MILModel`` whose
``compute_loss(Y, X, mask)`` returns the predictions and a dict of named losses, over a
``torch.utils.data.DataLoader`` whose ``collate_fn`` pads a list of bag dicts
(``{"X": [n, D], "Y": []}``) into a batch with a mask. Its ``Trainer`` runs, every epoch,
a training pass, a validation pass over ``val_dataloader`` and keeps the best model's
state by a torchmetrics objective: the workflow a torchmil user follows. Imported only
when torchmil is installed.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import nn
from torchmil.data import collate_fn
from torchmil.models import MILModel
from torchmil.utils.trainer import Trainer

from mil_assert.defaults import Budget
from mil_assert.harness import build_model, make_optimizer
from mil_assert.registry import ModelSpec
from mil_assert.seeding import cpu_generator
from mil_assert.synthetic import Bags, Splits


class SuiteModel(MILModel):
    """A suite model behind torchmil's interface; torchmil's mask (uint8) becomes bool."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(X, mask.bool())

    def compute_loss(self, Y: torch.Tensor, X: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(X, mask)
        own_loss = getattr(self.model, "loss", None)
        if callable(own_loss):
            return logits, {"loss": own_loss(X, mask.bool(), Y.float()).mean()}
        return logits, {"BCEWithLogitsLoss":
                        nn.functional.binary_cross_entropy_with_logits(logits, Y.float())}

    def predict(self, X: torch.Tensor, mask: torch.Tensor,
                return_inst_pred: bool = False) -> torch.Tensor:
        return self(X, mask)


def bag_dicts(bags: Bags) -> list[dict[str, torch.Tensor]]:
    """One unpadded ``{"X": [n, D], "Y": []}`` per bag, as torchmil's datasets yield."""
    sizes = bags.sizes.tolist()  # each bag's real instances come first
    X, y = bags.X.cpu(), bags.y.cpu()
    return [{"X": X[i, :n], "Y": y[i]} for i, n in enumerate(sizes)]


def torchmil_trainer(spec: ModelSpec, splits: Splits, seed: int, budget: Budget, dim: int,
                     device: torch.device, epochs: int) -> nn.Module:
    """Train one seed with torchmil's Trainer; returns the trained model."""
    model = build_model(spec, seed, dim).to(device)
    train = torch.utils.data.DataLoader(
        bag_dicts(splits.train), batch_size=budget.batch_size, shuffle=True,
        collate_fn=collate_fn, generator=cpu_generator(seed, "train/shuffle"))
    val = torch.utils.data.DataLoader(bag_dicts(splits.val), batch_size=budget.batch_size,
                                      collate_fn=collate_fn)
    trainer = Trainer(SuiteModel(model), make_optimizer(model, budget),
                      metrics_dict={"auroc": torchmetrics.AUROC(task="binary")},
                      obj_metric="auroc", device=str(device), disable_pbar=True, verbose=False)
    trainer.train(max_epochs=epochs, train_dataloader=train, val_dataloader=val)
    return model
