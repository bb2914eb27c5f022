"""smx's conformance kit on the focal loss: every loss rule, at three values of γ."""

from smx_focal import FOCAL

from smx.testing import parametrize_with_checks, with_params


@parametrize_with_checks([FOCAL, with_params(FOCAL, gamma=0.0), with_params(FOCAL, gamma=0.5)])
def test_contract(obj, check):
    check(obj)
