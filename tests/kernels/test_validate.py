"""kernels._validate: the shared integer check."""

import pytest

from kernels._validate import check_int


def test_accepts_ints_at_or_above_the_bound():
    assert check_int("n", 3, 1) == 3 and check_int("n", 0, 0) == 0


@pytest.mark.parametrize("value", [0, -5, 2.0, True, "3", None])
def test_rejects_with_a_message_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^n: expected an int >= 1, received"):
        check_int("n", value, 1)
