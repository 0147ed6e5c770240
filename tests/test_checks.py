"""minilib._checks: the argument checks every family shares."""
import pytest
import torch

from minilib._checks import (check_attention_inputs, check_divisible, check_nonnegative_int, check_positive_int,
                             check_token_ids, default_scale, require_tensor)


@pytest.mark.parametrize("value", [1, 7, 2**40])
def test_positive_int_accepts(value):
    assert check_positive_int("n", value) == value


@pytest.mark.parametrize("value", [0, -3, True, False, 2.0, "3", None])
def test_positive_int_rejects_and_names_the_argument(value):
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        check_positive_int("block_q", value)


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_nonnegative_int_rejects(value):
    with pytest.raises(ValueError, match="seq_len must be a non-negative int"):
        check_nonnegative_int("seq_len", value)
    assert check_nonnegative_int("seq_len", 0) == 0


def test_token_ids():
    check_token_ids("idx", torch.tensor([[0, 4]]), ndim=2, vocab_size=5)
    with pytest.raises(TypeError, match="idx must hold integer token ids"):
        check_token_ids("idx", torch.zeros(1, 2), ndim=2)
    with pytest.raises(TypeError, match="idx must hold integer token ids"):
        check_token_ids("idx", torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"idx holds ids outside \[0, 5\): min 0, max 5"):
        check_token_ids("idx", torch.tensor([[0, 5]]), vocab_size=5)
    with pytest.raises(ValueError, match="idx must have 2 dimensions"):
        check_token_ids("idx", torch.tensor([1, 2]), ndim=2)
    with pytest.raises(TypeError, match="idx must be a torch.Tensor"):
        check_token_ids("idx", [[1, 2]])


def test_default_scale():
    assert default_scale(64, None) == 0.125
    assert default_scale(64, 0.5) == 0.5


def test_require_tensor_and_attention_inputs():
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        require_tensor("x", torch.zeros(2, dtype=torch.long), floating=True)
    q, k = torch.randn(2, 4, 5, 8), torch.randn(2, 3, 6, 8)
    with pytest.raises(ValueError, match=r"query heads \(4\) must be a multiple of key/value heads \(3\)"):
        check_attention_inputs(q, k, k)
    with pytest.raises(ValueError, match="k and v must share heads and length"):
        check_attention_inputs(q, torch.randn(2, 2, 6, 8), torch.randn(2, 2, 5, 8))


def test_divisible_names_both_sizes():
    check_divisible("d_model", 24, "n_heads", 4)
    with pytest.raises(ValueError, match=r"d_model \(18\) must be divisible by n_heads \(4\)"):
        check_divisible("d_model", 18, "n_heads", 4)
