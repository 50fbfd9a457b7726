"""RRT-MIL (R^2T-MIL) from its authors' code, unmodified, as their Camelyon16 command builds it.

Paper: Tang, Zhou, Huang, Zhu, Zhang & Liu, "Feature Re-Embedding: Towards Foundation
Model-Level Performance in Computational Pathology", CVPR 2024 (arXiv 2402.17228).
Code: DearCaat/RRT-MIL at commit 7ecbdfb8955594b430a8b93cf880f22cfaaecacc, unpacked
unmodified in ``repo/`` next to this file. The repository has NO licence file: nothing of
it is copied anywhere else; this shim only imports it.

``build(dim)`` builds the authors' ``modules.rrt.RRTMIL`` with the keyword arguments their
``main.py`` passes (main.py:157-192), from their argparse defaults (main.py:637-692) and
their README's first Camelyon16 command, C16-R50 (README.md:78-84: ``--model=rrtmil
--pool=attn --n_trans_layers=2 --da_act=tanh --epeg_k=15 --crmsa_k=1 --all_shortcut``),
with ``input_dim`` = the instances' dimension (theirs: 1024 ResNet-50 features). Their
first layer is ``Linear(input_dim, 512)`` fixed in code (modules/rrt.py:208), so the
width is 512. Two classes (``n_classes=2``, main.py:638).

Tensor shapes: ``forward(x [1, N, D]) -> logits [1, 2]`` (one bag per call, as their
loader gives with ``batch_size=1``); judge it with ``@input=bag1``; the harness reads the
log-odds ``z1 - z0``. Their loss is plain cross-entropy on the two logits (main.py:226-227,
452-453), which is the binary cross-entropy on ``z1 - z0`` the harness applies, so no
``loss`` hook is added. It runs on bags of 1 to 16 instances: their square grid
(``region_num=8`` per side) pads every bag below 65 instances to 64 cells with zero
vectors, one instance per region (modules/rmsa.py:175-202).

What the shim adds: ``sys.path`` entries for ``repo/`` (their code imports the package
``modules``) and for ``standin/``, a stand-in ``timm`` that exposes only the two timm
helpers their model files import (``DropPath``, ``trunc_normal_``), taken from the real
timm files installed with ``pip install --no-deps timm`` (the real ``timm`` package
imports torchvision, which would change torch). Neither helper runs in this
configuration. It also needs ``einops`` (modules/nystrom_attention.py, emb_position.py).

``SPEC_COSINE``: the same model with the harness's named cosine schedule (decay to 0, no
warm-up), the shape of their default ``--lr_sche cosine`` (main.py:235-236, 647; stepped
per epoch over ``num_epoch``). Not in the main command (see REPORT.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _path in (_HERE / "repo", _HERE / "standin"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from modules.rrt import RRTMIL  # noqa: E402 - the authors' package root, on sys.path above

from mil_assert import ModelSpec  # noqa: E402

# main.py:157-192's keyword arguments: argparse defaults, with the C16-R50 command's flags.
C16_R50 = dict(
    n_classes=2, dropout=0.25, act="relu", region_num=8, pos="none", pos_pos=0,
    pool="attn", peg_k=7, drop_path=0.0, n_layers=2, n_heads=8, attn="rmsa",
    da_act="tanh",              # --da_act=tanh (default relu)
    trans_dropout=0.1, ffn=False, mlp_ratio=4.0, trans_dim=64, epeg=True,
    min_region_num=0, qkv_bias=True,
    epeg_k=15,                  # --epeg_k=15
    epeg_2d=False, epeg_bias=True, epeg_type="attn", region_attn="native",
    peg_1d=False, cr_msa=True,
    crmsa_k=1,                  # --crmsa_k=1 (default 3)
    all_shortcut=True,          # --all_shortcut
    crmsa_mlp=False, crmsa_heads=8,
)


def build(dim: int) -> RRTMIL:
    """The authors' ``RRTMIL`` as their C16-R50 command builds it, for ``dim`` features."""
    return RRTMIL(input_dim=dim, **C16_R50)


SPEC_COSINE = ModelSpec(
    name="rrt_mil_authors_cosine", factory=build, input="bag1",
    budget={"lr_schedule": "cosine", "warmup_epochs": 0},
    citation="Tang et al., CVPR 2024; DearCaat/RRT-MIL@7ecbdfb, C16-R50 command, cosine LR",
)
