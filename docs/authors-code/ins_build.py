"""INS from its authors' code, unmodified, with their feature-input training as harness hooks.

Qu et al., "Rethinking Multiple Instance Learning for Whole Slide Image Classification: A
Good Instance Classifier is All You Need", IEEE TCSVT 2024. Code: miccaiif/INS at commit
cd97ba2fa7df2a951f218e6de405f664129931c8, fetched unmodified into ``repo/``. The repository
has NO licence file: nothing of it may be copied elsewhere; this shim only imports it.

The authors' model for feature inputs is ``model.INS`` with ``resnet.SupConResNet`` as
their feature script builds it (``train_onlybag_feat_by_bagcls.py:18,187``: ``INS(args,
SupConResNet)``; ``model_feat.py`` is imported by no script). Feature vectors are made into
images by that script (``:436-439``, ``:518-519``, ``:568-569``): ``x.view(N, 32, -1)``
repeated to 3 channels, and go through an ImageNet ResNet-18 (``model.py:13``
``pretrained = True``; ``resnet.py:173-176``). Shapes: one bag ``x [1, N, D]`` ->
images ``[N, 3, 32, ceil(D/32)]`` -> trunk features ``[N, 512]``; classifier ``fc``
``[N, 2]``; projection ``[N, 128]``.

``forward`` (the bag score, always as their ``test()`` computes it, under ``model.eval()``,
``train_onlybag_feat_by_bagcls.py:548``) returns a probability ``[1]``
(judge with ``@output=probability``):

- ``build``: their feature script's own bag score (``:570-573``): ``model(images, args,
  bag_flag=True)`` is ``softmax`` of the mean over instances of the 512 trunk features
  (``model.py:138-147``, ``bag_head`` = ``features.mean(0)``, ``:130``); the script takes a
  second softmax and column 1, and its ``max`` runs over a dimension of size one. It is
  NOT a maximum of instance scores.
- ``build_max`` / ``build_mean``: the maximum / mean of the instance classifier's
  positive-class probabilities, ``softmax(model(x, args, eval_only=True))[:, 1]``, as
  their CAMELYON16 script scores bags (``train_withbag_cam.py:545-553``: mean is its main
  "Auc_bag", max its "Auc_bag_ins2").

``batch_loss(bags, y)`` is their feature script's training (one harness step does both
of their loops on the step's bags; see REPORT.md for every deviation):

- instance loop ``train()`` (``:402-489``): their ``model(X_w, X_s, Y, args)`` on batches
  of 64 instances (``-b 64``), the key view equal to the query (their feature dataset's
  ``dropout(..., training=False)``, ``dataset_CAMELYON16_BasedOnFeat.py:166-167``), loss
  ``partial_loss(confidence)(cls_out, index) + 0.5 * SupConLoss(...)``: MoCo before
  ``prot_start`` (20, ``:97``), supervised contrast with classifier pseudo-labels and
  ``confidence_update`` from the prototypes after it. Before ``prot_start`` only instances
  of positive bags, partial label {0, 1} and uniform confidence (their ``only_pos``
  loader, ``:319``); after it all instances with partial labels from the BAG label
  ({0} in negative bags, {0, 1} in positive ones; ``point`` 0 for negative bags, which
  resets their confidence to [1, 0]). Their loaders instead build ``Y`` and ``point``
  from patch ANNOTATIONS after the warm-up (``dataset_CAMELYON16_BasedOnFeat.py:169-181``),
  which bags here do not have;
- bag loop ``train_bag()`` (``:492-541``): cross-entropy of ``model(bag, args,
  bag_flag=True)`` (512 softmax values read as logits) against the bag label, weight 1.

Dataset-wide instance indices: their ``partial_loss`` keeps one confidence row per
training instance, indexed by the instance's position in their instance dataset. The
shim keeps that table in their own ``partial_loss`` object and maps an instance to its row
by (the bag's bytes, the instance's position in the bag): the harness gives the same
training-bag tensors every epoch. New rows start as their ``partialY / sum`` (``:259-262``).

What the shim adds around their code, and why:
- a single-process ``gloo`` group (world size 1) for their ``concat_all_gather`` and
  batch shuffle (``model.py:69-119, 201-212``); ``Tensor.cuda`` moves to the model's
  device while their code runs (``model.py:85``, ``utils_loss.py:39,146``); their prints
  (``resnet.py:204``, ``model.py:58``) go to /dev/null;
- ``standin/torchvision``: plain-PyTorch ResNet-18 (the CUDA-only torchvision wheel cannot
  load on this CPU torch; no ImageNet weights can be fetched, so the trunk starts random);
- their forward updates the momentum encoder, prototypes and queue inside the call; the
  shim applies those updates (and the confidence table's) after the optimiser step
  (``on_train_batch_end``), so a loss evaluated without a step leaves no trace;
- ``on_train_epoch_start``/``end``: ``prot_start`` and ``set_conf_ema_m`` per epoch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "standin"), str(HERE / "repo")]  # stand-in torchvision first

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from model import INS  # noqa: E402 - the authors' model.py
    from resnet import SupConResNet  # noqa: E402
    from utils.utils_loss import SupConLoss, partial_loss  # noqa: E402

BATCH = 64  # their -b 64 (train_onlybag_feat_by_bagcls.py:45), one process


def authors_args(epochs: int = 150, prot_start: int = 20) -> SimpleNamespace:
    """Their argparse defaults (train_onlybag_feat_by_bagcls.py:31-102) that the model reads."""
    return SimpleNamespace(dataset="cam16_mil", arch="resnet18", num_class=2, low_dim=128,
                           moco_queue=8192, moco_m=0.999, proto_m=0.9, loss_weight=0.5,
                           conf_ema_range=[0.95, 0.8], prot_start=prot_start, epochs=epochs)


def _process_group() -> None:
    import torch.distributed as dist
    if not dist.is_initialized():  # one process, as their launch on one GPU (untested on CUDA)
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


@contextlib.contextmanager
def _authors_call(device: torch.device):
    """Their code as it runs on one GPU: ``.cuda()`` goes to ``device``, prints are dropped."""
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield
    finally:
        torch.Tensor.cuda = cuda


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Their feature -> image step: ``[N, D]`` -> ``[N, 3, 32, D/32]`` (``:518-519``); D that
    is not a multiple of 32 is zero-padded to one first (D = 16: ``[N, 3, 32, 1]``)."""
    pad = -x.shape[-1] % 32
    if pad:
        x = F.pad(x, (0, pad))
    return torch.repeat_interleave(x.reshape(x.shape[0], 32, -1).unsqueeze(1), 3, dim=1)


class INSShim(INS):
    """Their ``model.INS(args, SupConResNet)`` with the harness's forward and hooks."""

    def __init__(self, dim: int, score: str = "bag_head", prot_start: int = 20) -> None:
        _process_group()
        self.args = authors_args(prot_start=prot_start)
        with warnings.catch_warnings(), _authors_call(torch.device("cpu")):
            warnings.simplefilter("ignore")  # the stand-in's "no ImageNet weights" warning
            super().__init__(self.args, SupConResNet)
        self.dim, self.score = dim, score
        self.loss_fn = partial_loss(torch.zeros(0, 2))  # their table, all instances (:278)
        self.loss_cont_fn = SupConLoss()  # (:281)
        self.rows: dict[tuple[bytes, int], int] = {}  # (bag bytes, position) -> table row
        self.start_upd_prot = prot_start <= 0
        self._pending: dict | None = None

    # ---- the bag score (their test(), under model.eval()) ----
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One bag ``x [1, N, D]`` -> the probability of class 1, ``[1]``."""
        images = to_images(x[0])
        was = self.training
        self.eval()
        try:
            with _authors_call(x.device):
                if self.score == "bag_head":  # train_onlybag_feat_by_bagcls.py:570-573
                    outputs = torch.softmax(super().forward(images, self.args, bag_flag=True), 1)
                    return torch.max(outputs[:, 1], dim=0, keepdim=True)[0]
                outputs = torch.softmax(super().forward(images, self.args, eval_only=True), 1)
                if self.score == "max":  # train_withbag_cam.py:553
                    return torch.max(outputs[:, 1], dim=0, keepdim=True)[0]
                return torch.mean(outputs[:, 1], dim=0, keepdim=True)  # :552
        finally:
            self.train(was)

    # ---- their training, one harness step ----
    def _rows(self, bags: list[torch.Tensor], positive: list[bool]) -> torch.Tensor:
        """Each instance's row of the confidence table, in bag order; new rows start as
        their ``partialY / sum`` (:259-262): [1, 0] in negative bags, [0.5, 0.5] in positive."""
        rows, fresh = [], []
        for bag, pos in zip(bags, positive, strict=True):
            key = bag.detach().cpu().numpy().tobytes()
            for i in range(bag.shape[1]):
                if (key, i) not in self.rows:
                    self.rows[key, i] = len(self.rows)
                    fresh.append([0.5, 0.5] if pos else [1.0, 0.0])
                rows.append(self.rows[key, i])
        if fresh:
            conf = self.loss_fn.confidence
            self.loss_fn.confidence = torch.cat([conf, torch.tensor(fresh).to(conf)])
        return torch.tensor(rows, dtype=torch.long)

    def _instance_batch(self, X, Y, point, index, loss_fn):
        """One iteration of their ``train()`` (:421-464) on a batch of instances."""
        images = to_images(X)
        cls_out, features_cont, pseudo_score_cont, _, score_prot = super().forward(
            images, images.clone(), Y, self.args)
        batch_size = cls_out.shape[0]
        _, pseudo_target_cont = torch.max(pseudo_score_cont, dim=1)
        pseudo_target_cont = pseudo_target_cont.contiguous().view(-1, 1)
        if self.start_upd_prot:
            loss_fn.confidence_update(temp_un_conf=score_prot, batch_index=index, batchY=Y,
                                      point=point)
            mask = torch.eq(pseudo_target_cont[:batch_size], pseudo_target_cont.T).float()
        else:
            mask = None
        loss_cont = self.loss_cont_fn(features=features_cont, mask=mask, batch_size=batch_size)
        loss_cls = loss_fn(cls_out, index)
        return loss_cls + self.args.loss_weight * loss_cont

    def batch_loss(self, bags: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """``bags``: the step's bags ``[1, N_b, D]``; ``y [B]`` 0./1. -> the loss ``[]``."""
        device = bags[0].device
        positive = [bool(v > 0.5) for v in y]
        before = self._state()
        try:
            with _authors_call(device):
                loss = self._step_loss(bags, y, positive, device)
            self._pending = self._state()
        finally:
            self._restore(before)
        return loss

    def _step_loss(self, bags, y, positive, device) -> torch.Tensor:
        self.loss_fn.confidence = self.loss_fn.confidence.to(device)  # a plain attribute
        rows = self._rows(bags, positive).to(device)
        X = torch.cat([b[0] for b in bags])
        pos = torch.cat([torch.full((b.shape[1],), p) for b, p in zip(bags, positive, strict=True)])
        if not self.start_upd_prot:  # their only_pos loader (:319): positive bags only
            X, rows, pos = X[pos.to(device)], rows[pos.to(device)], pos[pos]
        # partial labels from the bag label: {0} in negative bags, {0, 1} in positive ones
        Y = torch.stack([torch.ones_like(pos), pos], 1).float().to(device)
        point = pos.long()  # 0: negative bag, whose confidence their update resets to [1, 0]
        uniform = partial_loss(torch.full((BATCH, 2), 0.5, device=device))  # loss_fn_pos
        instance_losses = []
        if len(X):
            order = torch.randperm(len(X))  # their shuffled instance loader
            chunks = -(-len(order) // BATCH)
            # their batches all hold 64 (drop_last=True) and the queue needs a batch size
            # that divides it (model.py:59): the last batch is completed from the step's own
            order = order.repeat(-(-chunks * BATCH // len(order)))[:chunks * BATCH]
            for chunk in order.view(chunks, BATCH):
                if self.start_upd_prot:
                    index, loss_fn = rows[chunk.to(device)], self.loss_fn
                else:
                    index, loss_fn = torch.arange(BATCH, device=device), uniform
                instance_losses.append(self._instance_batch(
                    X[chunk.to(device)], Y[chunk.to(device)], point[chunk], index, loss_fn))
        bag_losses = []
        for bag, label in zip(bags, y, strict=True):  # their train_bag(), :510-528
            if bag.shape[1] < 2:  # BatchNorm cannot train on a bag of one instance
                continue
            bag_pred = super().forward(to_images(bag[0]), self.args, bag_flag=True)
            bag_losses.append(F.cross_entropy(bag_pred, label.long().reshape(1)))
        loss = torch.zeros((), device=device)
        if instance_losses:
            loss = loss + torch.stack(instance_losses).mean()
        if bag_losses:
            loss = loss + torch.stack(bag_losses).mean()
        return loss

    # ---- the updates their forward makes, applied after the optimiser step ----
    def _state(self) -> dict:
        return {"buffers": {n: b.clone() for n, b in self.named_buffers()},
                "key": [p.data.clone() for p in self.encoder_k.parameters()],
                "confidence": self.loss_fn.confidence.clone(), "rows": dict(self.rows)}

    def _restore(self, state: dict) -> None:
        for name, value in state["buffers"].items():
            module, _, leaf = name.rpartition(".")
            self.get_submodule(module)._buffers[leaf] = value.clone()
        for p, value in zip(self.encoder_k.parameters(), state["key"], strict=True):
            p.data = value.clone()
        self.loss_fn.confidence = state["confidence"].clone()
        self.rows = dict(state["rows"])

    def on_train_batch_end(self, progress) -> None:
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def on_train_epoch_start(self, progress) -> None:
        self.args.epochs = progress.epochs
        self.start_upd_prot = progress.epoch >= self.args.prot_start  # :303

    def on_train_epoch_end(self, progress) -> None:
        self.loss_fn.set_conf_ema_m(progress.epoch, self.args)  # :328


def build(dim: int) -> INSShim:
    """Their feature script's bag score (bag_flag head); judge with @output=probability."""
    return INSShim(dim, score="bag_head")


def build_max(dim: int) -> INSShim:
    """Maximum of their instance classifier's probabilities (train_withbag_cam.py:553)."""
    return INSShim(dim, score="max")


def build_mean(dim: int) -> INSShim:
    """Mean of their instance classifier's probabilities (train_withbag_cam.py:552)."""
    return INSShim(dim, score="mean")
