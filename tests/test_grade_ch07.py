"""Chapter 07 questions: the references against independent computations, the hints specific mistakes get, and
the library's mixers forbidden. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get

QUESTIONS = for_chapter("07")


def test_chapter_07_has_the_four_questions():
    assert [q.id for q in QUESTIONS] == [f"07.q{i}" for i in range(1, 5)]
    assert [q.name for q in QUESTIONS] == ["pool_mixer", "fnet_mixer", "global_conv", "segment_max"]


def test_references_agree_with_torch_builtins():
    # independent of the loops: avg_pool1d without counted padding, fft2, the convolution theorem, max_pool1d
    for case in get("07.q1").cases():
        x, k = case.args
        x = x.double()
        if k % 2:
            avg = torch.nn.functional.avg_pool1d(x.transpose(1, 2), k, 1, k // 2, count_include_pad=False)
            torch.testing.assert_close(get("07.q1").reference(x, k), avg.transpose(1, 2) - x)
    for case in get("07.q2").cases():
        (x,) = case.args
        torch.testing.assert_close(get("07.q2").reference(x.double()), torch.fft.fft2(x.double(), dim=(1, 2)).real)
    for case in get("07.q3").cases():
        x, h = (a.double() for a in case.args)
        spectral = torch.fft.ifft(torch.fft.fft(x, dim=1) * torch.fft.fft(h, dim=0), dim=1).real
        torch.testing.assert_close(get("07.q3").reference(x, h), spectral)
    for case in get("07.q4").cases():
        x, k = case.args
        x = x.double()
        pooled = torch.nn.functional.max_pool1d(x.transpose(1, 2), k, k, ceil_mode=True).transpose(1, 2)
        torch.testing.assert_close(get("07.q4").reference(x, k), pooled.repeat_interleave(k, 1)[:, : x.shape[1]])


def test_zero_padding_gets_the_minus_infinity_hint():
    from tests.grade_support.wrong_ch07 import segment_zero_padding

    assert "-inf" in grade.check("07.q4", segment_zero_padding).details["hint"]


def test_irfft_without_n_fails_on_the_odd_length_case():
    from tests.grade_support.wrong_ch07 import conv_without_n

    result = grade.check("07.q3", conv_without_n)
    assert "odd L" in result.message and "n=L" in result.details["hint"]


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
