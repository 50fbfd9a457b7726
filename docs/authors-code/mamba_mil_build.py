"""MambaMIL's ``MambaMIL`` (SRMamba layers) from its authors' code, unmodified, on a CPU.

Yang, Wang & Chen, "MambaMIL: Enhancing Long Sequence Modeling with Sequence Reordering in
Computational Pathology", MICCAI 2024 (arXiv 2403.06800). Code: isyangshu/MambaMIL at commit
9aea39efc13fdcd3703b5b54c28a64887b4acbd7, unpacked unmodified in ``repo/``. Licence: no licence
file at the repository's root (its README shows an "MIT" badge only); ``repo/mamba/`` is the
authors' modified copy of state-spaces/mamba (mamba_ssm 1.1.2) with its Apache-2.0 ``LICENSE``.
Nothing of it is copied anywhere else.

``build(dim)`` builds the model as the authors' trainer does for their binary task:
``repo/utils/core_utils.py:146-147`` ``MambaMIL(in_dim, n_classes, dropout=args.drop_out,
act='gelu', layer=args.mambamil_layer, rate=args.mambamil_rate, type=args.mambamil_type)``, with
``repo/train_scripts/LUAD_LUSC_512_subtyping.sh`` (lines 27-30 and 43: ``mambamil_type=SRMamba``,
``mambamil_rate=5``, ``mambamil_layer=2``, ``--drop_out 0``; two classes, ``repo/main.py:178-179``)
and ``in_dim = dim``. The width 512 is fixed in their code (``repo/models/MambaMIL.py:26,45``:
``Linear(in_dim, 512)``, ``SRMamba(d_model=512, d_state=16, d_conv=4, expand=2)``).

Call: ``forward(x [1, N, D])`` (one bag) returns ``(logits [1, 2], Y_prob, Y_hat, None, None)``;
judge it with ``@input=bag1`` (item 0, two classes: the harness reads ``z1 - z0``). Their loss is
plain ``nn.CrossEntropyLoss`` on those logits (``repo/utils/core_utils.py:124,226``), which equals
the harness's binary cross-entropy on ``z1 - z0``; no hook is added. Their optimiser (Adam, lr
2e-4, weight decay 1e-5, one slide per step, up to 200 epochs with early stopping) is not
reproduced: the harness's budget is the same for every model.

What runs: SRMamba's fused path (``use_fast_path=True``, its default; ``srmamba.py:200-232``),
the only path their scripts run. It calls CUDA extensions through the authors' unmodified
autograd Functions (``MambaInnerFnNoOutProj``, hand-written backward). They are replaced by the
stand-in modules in ``standins/`` (``causal_conv1d``, ``causal_conv1d_cuda``,
``selective_scan_cuda``), written here in plain PyTorch. The convolution's backward is
autograd's gradient of its forward. The scan (``mamba_mil_standins/selective_scan_cuda.py``
beside this file) computes the function of ``selective_scan_ref``, the reference recurrence
in the authors' own vendored ``selective_scan_interface.py`` (Apache-2.0), one multiply-add
per position, keeps every position's state where the kernel keeps its chunk states, and
writes its backward out; it equals ``selective_scan_ref`` and autograd's gradients through
it to a relative 4e-7 (``check_scan.py`` in the scratch folder). ``repo/mamba`` is put on
``sys.path`` as ``pip install ./mamba`` would install it (``mamba_ssm``), without its CUDA build;
``transformers`` (4.38.2, real) is installed because their package ``__init__`` imports its
language-model code. Their non-fused path cannot run: ``srmamba.py:308`` reads an undefined
``y_f`` (NameError), and it reverses the sequence (``x.flip``, line 236) instead of reordering it.

Bags of 1 or 2 instances run: the SR branch pads the bag with zeros to a multiple of ``rate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE / "standins", HERE / "repo", HERE / "repo" / "mamba"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Import order only: their ``mamba_ssm/__init__.py`` imports
# ``mamba.mamba_ssm.modules.mamba_simple``,
# which imports ``mamba_ssm.ops...``: loading ``mamba.mamba_ssm`` first cycles back into itself
# (ImportError, partially initialised module); loading ``mamba_ssm`` first completes both copies.
import mamba_ssm  # noqa: E402,F401
from models.MambaMIL import MambaMIL  # noqa: E402 - the authors' module, repo/models/MambaMIL.py

CLASSES, DROPOUT, ACT, LAYERS, RATE, TYPE = 2, 0, "gelu", 2, 5, "SRMamba"


def build(dim: int) -> MambaMIL:
    """``MambaMIL`` as the authors' LUAD/LUSC script builds it, for ``dim`` input features."""
    return MambaMIL(in_dim=dim, n_classes=CLASSES, dropout=DROPOUT, act=ACT, layer=LAYERS,
                    rate=RATE, type=TYPE)
