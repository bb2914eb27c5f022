"""What the kit cannot know about this engine: that it really evaluates chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest
from smx_chunked import ChunkedBackend, ChunkedOptions

from smx.losses import CrossEntropy
from smx.objective import Objective
from smx.plugins import Plugins


def test_each_evaluation_sees_chunks_of_chunk_rows():
    backend = ChunkedBackend()
    backend.configure(ChunkedOptions(chunk_rows=4))
    rng = np.random.default_rng(0)
    block = backend.place(rng.normal(size=(10, 3)), rng.integers(0, 2, size=10), None, "cpu",
                          "float64")
    params = {"W": np.zeros((3, 2)), "b": np.zeros(2)}
    objective, seen = Objective(CrossEntropy()), []

    def fn(b):
        seen.append(b.n)
        return objective.partial(params, b)

    part = backend.partial(fn, block)
    assert seen == [4, 4, 2]
    assert part.weight == 10
    assert float(part.loss) == pytest.approx(10 * np.log(2), rel=1e-15)  # zero logits


def test_chunk_rows_is_validated():
    with pytest.raises(ValueError, match="chunk_rows"):
        ChunkedOptions(chunk_rows=0)


def test_smx_finds_the_installed_plugin():
    backend = Plugins().backend("chunked")
    assert isinstance(backend, ChunkedBackend)
