"""smx's conformance kit on the chunked engine: one chunk, and chunks of 7 rows."""

from smx_chunked import ChunkedBackend

from smx.testing import parametrize_with_checks, with_params


@parametrize_with_checks([ChunkedBackend(), with_params(ChunkedBackend(), chunk_rows=7)])
def test_contract(obj, check):
    check(obj)
