"""Independent random streams derived from a run's seed.

Every source of randomness in a run (each data split, the model's initial weights, the
order of the training batches) gets its own stream, derived from the run's seed and a
name with :class:`numpy.random.SeedSequence`. Streams do not overlap, so changing, say,
the number of training bags never changes the validation bags or the initial weights.
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, stream: str) -> int:
    """Return a 63-bit integer seed for the named stream of ``seed``.

    Args:
        seed: the run's seed, a non-negative integer.
        stream: a name for the purpose, e.g. ``"data/train"`` or ``"model/init"``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sequence = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def cpu_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded for the named stream of ``seed``.

    Sampling happens on the CPU with this generator even when training runs on a GPU,
    so the same seed gives the same bags and the same initial weights on any hardware.
    """
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, stream))


@contextlib.contextmanager
def seeded_global_rngs(seed: int, stream: str) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global random generators from the named stream
    of ``seed`` for the block, and restore their states after it.

    The harness draws its own numbers from explicit generators; this is for models that
    draw from the global ones while training (dropout, or numpy's global generator as
    torchmil's DTFD-MIL does for its pseudo-bags), so that they too repeat with the seed.
    """
    value = derive_seed(seed, stream)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
