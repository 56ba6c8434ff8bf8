import os
from pathlib import Path

import pytest

from rawblock import Device

# Scratch files live under target/ (O_DIRECT works there; /tmp may be tmpfs).
SCRATCH = Path(__file__).resolve().parents[2] / "target" / "python-tests"


@pytest.fixture
def path(request):
    SCRATCH.mkdir(parents=True, exist_ok=True)
    p = SCRATCH / f"{request.node.name}-{os.getpid()}.img"
    p.unlink(missing_ok=True)
    yield str(p)
    p.unlink(missing_ok=True)


def create(path, **kw):
    return Device.create(path, overwrite=True, capacity_bytes=16 << 20, slot_bytes=64 << 10, **kw)
