"""Issue 11: what a device asks of the host is bounded and checked before anything is written."""
import os

import pytest

import rawblock
from rawblock import Device, Engine, Status


def test_a_1_gib_header_is_refused_before_anything_is_written(path):
    with pytest.raises(rawblock.RawblockError) as e:
        Device.create(path, capacity_bytes=64 << 30, header_bytes=1 << 30, slot_bytes=2 << 30, engine=Engine.IO_URING)
    assert e.value.status == Status.INVALID_ARGUMENT
    assert "header_bytes 1073741824 exceeds the maximum of 1048576" in e.value.message
    assert not os.path.exists(path), "the refused format left nothing behind"


def test_no_memory_is_a_status_of_its_own():
    assert Status.NO_MEMORY == 15 and Status(15) is Status.NO_MEMORY
