"""Reading the next Parquet chunk ahead in a thread (io.sources.prefetched)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from mixedmodels.io.sources import FrameChunks, ParquetFiles, prefetched


def _files(tmp_path, n=3):
    paths = []
    for i in range(n):
        frame = pd.DataFrame({"y": np.arange(10.0) + 10 * i, "g": np.arange(10) % 3})
        path = tmp_path / f"part-{i}.parquet"
        frame.to_parquet(path)
        paths.append(path)
    return ParquetFiles(str(tmp_path / "*.parquet"))


def _readers() -> int:
    return sum(t.name == "mixedmodels-prefetch" for t in threading.enumerate())


def test_prefetched_chunks_are_the_chunks(tmp_path):
    src = _files(tmp_path)
    plain = list(src.chunks(["y", "g"], 4))
    ahead = list(prefetched(src.chunks(["y", "g"], 4), src))
    assert [w for w, _ in ahead] == [w for w, _ in plain]
    for (_, a), (_, b) in zip(ahead, plain, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert _readers() == 0


def test_prefetched_raises_the_readers_error_and_stops_early(tmp_path):
    src = _files(tmp_path)

    def failing():
        yield from src.chunks(["y"], 4)
        raise ValueError("file 3 of 3 is broken")

    with pytest.raises(ValueError, match="broken"):
        for _ in prefetched(failing(), src):
            pass
    assert _readers() == 0
    # The caller stops after one chunk: the reader ends too.
    gen = prefetched(src.chunks(["y"], 2), src)
    next(gen)
    gen.close()
    assert _readers() == 0


def test_other_sources_are_read_in_the_callers_thread():
    src = FrameChunks(pd.DataFrame({"y": np.arange(5.0)}))
    seen = []

    def chunks():
        for item in src.chunks(["y"], 2):
            seen.append(threading.current_thread() is threading.main_thread())
            yield item

    assert len(list(prefetched(chunks(), src))) == 3
    assert all(seen)
