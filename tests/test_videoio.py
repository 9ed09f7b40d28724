"""The clip writer lets go of its file on every path, errors included."""

import os

import numpy as np
import pytest

from pks.videoio import Mp4Writer


def open_fds(path) -> list[str]:
    return [fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
def test_a_writer_whose_flush_fails_still_closes_its_file(tmp_path):
    path = tmp_path / "x.mp4"
    w = Mp4Writer(path, 24, 64, 64)
    for _ in range(60):  # past the encoder's lookahead: packets are muxed, the file is open
        w.write(np.zeros((64, 64, 3), np.uint8))
    assert open_fds(path)

    class Failing:  # the final flush fails, as a full disk or a broken encoder makes it
        def encode(self, frame):
            raise RuntimeError("flush failed")

    w.stream = Failing()
    with pytest.raises(RuntimeError, match="flush failed"):
        w.close()
    assert open_fds(path) == []
