"""smx's conformance kit on Lion: every optimizer rule, with and without weight decay."""

from smx_lion import LION

from smx.testing import parametrize_with_checks, with_params


@parametrize_with_checks([LION, with_params(LION, weight_decay=0.1)])
def test_contract(obj, check):
    check(obj)
