"""kernels._validate: the shared integer check and the description of a received value."""

import pytest

from kernels._validate import check_int


def test_accepts_ints_at_or_above_the_bound():
    assert check_int("n", 3, 1) == 3 and check_int("n", 0, 0) == 0


@pytest.mark.parametrize("value", [0, -5, 2.0, True, "3", None])
def test_rejects_with_a_message_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^n: expected an int >= 1, received"):
        check_int("n", value, 1)


def test_describe_names_dtype_and_shape_or_the_type():
    import torch

    from kernels._validate import describe

    assert describe(torch.zeros(2, 3, dtype=torch.int64)) == "torch.int64 tensor of shape (2, 3)"
    assert describe([1, 2]) == "list" and describe(None) == "NoneType"
