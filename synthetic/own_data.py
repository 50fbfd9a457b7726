"""The user's own bags as a ``single_concept`` shift test.

Format: a folder with one ``.pt`` file per bag, a float tensor ``[N, D]`` (``torch.save``;
CLAM's and torchmil's feature pipelines write one such file per slide), and a
``labels.csv`` with the columns ``bag,label``: the file's stem and 0 or 1.

The shift test: the bags are split at random, per seed and stratified by label, into
training (50%), validation (25%) and test (25%) bags; one *poison* instance, off the
data's support, is added to every negative training and validation bag and to every
positive test bag. The poison is the features' mean minus ten times their standard
deviation in every dimension (the synthetic poison's -10 for unit-variance background).
"Poison present means negative" then fits the training data; a set-monotone model cannot
use it as negative evidence and keeps its ranking of the test bags, a model that learned
it ranks them upside down. The verdict rule decides as for ``single_concept``. The
instances' labels are never needed: the test adds its own.

Bad data (a missing file, an empty bag, a NaN, mixed D, one class only) stops the run
before training with :class:`DataError`, one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from mil_assert.seeding import cpu_generator
from mil_assert.synthetic.bags import BACKGROUND, POISON, Bags, Splits
from mil_assert.synthetic.regime import RegimeError

POISON_SDS = 10.0
"""How many standard deviations below the features' mean the poison lies."""
SPLIT = (0.5, 0.25, 0.25)
"""Fractions of each class's bags for training, validation and test."""
MIN_BAGS_PER_CLASS = 4
"""Fewest bags of each class: each of the three sets needs at least one of each."""


class DataError(RegimeError):
    """The user's bags cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class OwnBags:
    """Every bag of the folder: ``bags`` float tensors ``[N_i, D]``, labels in {0, 1}."""

    folder: Path
    names: tuple[str, ...]
    bags: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    @property
    def dim(self) -> int:
        return self.bags[0].shape[1]


@functools.lru_cache(maxsize=4)
def load(folder: str) -> OwnBags:
    """Read and check the folder (see the module docstring); cached per folder."""
    root = Path(folder).expanduser()
    table = root / "labels.csv"
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; give a folder of BAG.pt files with a "
                        f"labels.csv")
    if not table.is_file():
        raise DataError(f"{table}: missing; write a labels.csv with the columns bag,label "
                        f"(the .pt file's stem, 0 or 1)")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"bag", "label"} <= set(rows[0]):
        raise DataError(f"{table}: needs the header bag,label and one row per bag")
    names, bags, labels = [], [], []
    for line, row in enumerate(rows, start=2):
        name, label = row["bag"].strip(), row["label"].strip()
        if label not in ("0", "1"):
            raise DataError(f"{table}, line {line}: label {label!r} for bag {name!r}; use 0 or 1")
        path = root / f"{name}.pt"
        if not path.is_file():
            raise DataError(f"{path}: missing, though {table.name} lists bag {name!r}; add "
                            f"the file or remove the row")
        bag = torch.load(path, map_location="cpu", weights_only=True)
        bags.append(_checked(bag, path, bags[0].shape[1] if bags else None))
        names.append(name)
        labels.append(float(label))
    y = torch.tensor(labels)
    for value in (0.0, 1.0):
        if int((y == value).sum()) < MIN_BAGS_PER_CLASS:
            raise DataError(f"{table}: {int((y == value).sum())} bag(s) of label {int(value)}; "
                            f"the shift test needs at least {MIN_BAGS_PER_CLASS} of each class")
    return OwnBags(root, tuple(names), tuple(bags), y)


def _checked(bag: object, path: Path, dim: int | None) -> torch.Tensor:
    if not isinstance(bag, torch.Tensor) or bag.dim() != 2 or not bag.is_floating_point():
        what = (f"a {bag.dim()}-d {bag.dtype} tensor" if isinstance(bag, torch.Tensor)
                else f"a {type(bag).__name__}")
        raise DataError(f"{path}: holds {what}; save one float tensor [N, D] per bag")
    if bag.shape[0] == 0:
        raise DataError(f"{path}: an empty bag (0 instances); remove it and its row")
    if not torch.isfinite(bag).all():
        raise DataError(f"{path}: holds NaN or infinite values; fix or remove the bag")
    if dim is not None and bag.shape[1] != dim:
        raise DataError(f"{path}: D = {bag.shape[1]}, but the first bag has D = {dim}; every "
                        f"bag needs the same feature dimension")
    return bag.float()


def poisoned_splits(folder: str, seed: int) -> Splits:
    """The seed's training, validation and test bags of the folder, poisoned."""
    data = load(folder)
    everything = torch.cat(data.bags)
    poison = everything.mean(dim=0) - POISON_SDS * everything.std(dim=0).clamp(min=1e-6)
    generator = cpu_generator(seed, "data/own/split")
    parts: list[list[int]] = [[], [], []]
    for value in (0.0, 1.0):
        index = (data.labels == value).nonzero().squeeze(1)
        index = index[torch.randperm(len(index), generator=generator)].tolist()
        n_train = max(1, round(SPLIT[0] * len(index)))
        n_val = max(1, round(SPLIT[1] * len(index)))
        parts[0] += index[:n_train]
        parts[1] += index[n_train:n_train + n_val]
        parts[2] += index[n_train + n_val:]
    train, val, test = (_padded(data, rows, poison, label, generator)
                        for rows, label in zip(parts, (0, 0, 1), strict=True))
    return Splits(train, val, test)


def _padded(data: OwnBags, rows: list[int], poison: torch.Tensor, poison_in: int,
            generator: torch.Generator) -> Bags:
    """The bags ``rows``, padded, with the poison inserted at a random place in those of
    label ``poison_in``."""
    n = max(len(data.bags[row]) for row in rows) + 1
    X = torch.zeros(len(rows), n, data.dim)
    mask = torch.zeros(len(rows), n, dtype=torch.bool)
    labels = torch.full((len(rows), n), BACKGROUND, dtype=torch.int64)
    for i, row in enumerate(rows):
        bag = data.bags[row]
        if int(data.labels[row]) == poison_in:
            at = int(torch.randint(len(bag) + 1, (1,), generator=generator))
            bag = torch.cat([bag[:at], poison[None], bag[at:]])
            labels[i, at] = POISON
        X[i, :len(bag)] = bag
        mask[i, :len(bag)] = True
    return Bags(X, mask, data.labels[rows].float(), labels)


def bags_from_csv(table: str | Path, folder: str | Path, standardize: bool = False) -> int:
    """Write a CSV of instances (one row each: bag label, bag id, features; the classic
    MIL benchmarks' layout, as the ``mil`` package ships Musk1, Musk2 and Elephant) as a
    folder of the format above. ``standardize``: each feature z-scored over all instances.
    Returns the number of bags written."""
    rows: dict[str, list[list[float]]] = {}
    labels: dict[str, str] = {}
    with Path(table).open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            try:
                label, bag, features = row[0].strip(), row[1].strip(), [float(v) for v in row[2:]]
            except (IndexError, ValueError) as error:
                raise DataError(f"{table}, line {line}: not label,bag,features... ({error})") \
                    from None
            if label not in ("0", "1") or labels.setdefault(bag, label) != label:
                raise DataError(f"{table}, line {line}: bag {bag!r} has label {label!r}; every "
                                f"instance of a bag needs the same label, 0 or 1")
            rows.setdefault(bag, []).append(features)
    bags = {bag: torch.tensor(values) for bag, values in rows.items()}
    if standardize:
        everything = torch.cat(list(bags.values()))
        mean, std = everything.mean(dim=0), everything.std(dim=0).clamp(min=1e-6)
        bags = {bag: (x - mean) / std for bag, x in bags.items()}
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for bag, x in bags.items():
        torch.save(x.float(), out / f"{bag}.pt")
    (out / "labels.csv").write_text("bag,label\n" + "".join(f"{bag},{labels[bag]}\n"
                                                            for bag in bags))
    return len(bags)
