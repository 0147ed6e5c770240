"""Chapter 11 questions: each reference against a second, independent computation on its own cases, the
off-limits list, and the hints. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get

QUESTIONS = for_chapter("11")


def test_chapter_11_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"11.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["patch_embed", "window_partition", "window_reverse", "shifted_window_weights",
                                          "seq_pool"]


def test_patch_reference_equals_slicing_each_patch():
    for case in get("11.q1").cases():
        images, weight, bias, p = (a.double() if torch.is_tensor(a) else a for a in case.args)
        B, C, H, W = images.shape
        rows = [images[:, :, i:i + p, j:j + p].reshape(B, -1) @ weight.T + bias
                for i in range(0, H, p) for j in range(0, W, p)]
        torch.testing.assert_close(get("11.q1").reference(images, weight, bias, p), torch.stack(rows, 1))


def test_partition_and_reverse_references_are_inverse():
    for case in get("11.q2").cases():
        x, w = case.args
        windows = get("11.q2").reference(x, w)
        torch.testing.assert_close(get("11.q3").reference(windows, w, x.shape[1], x.shape[2]), x, rtol=0, atol=0)
    for case in get("11.q3").cases():
        windows, w, H, W = case.args
        torch.testing.assert_close(get("11.q2").reference(get("11.q3").reference(windows, w, H, W), w), windows,
                                   rtol=0, atol=0)


def test_shift_reference_equals_dense_attention_with_the_library_mask():
    """The reference (a loop over pairs in rolled coordinates) agrees with Swin's region labels in minilib.vision."""
    from minilib.vision import shifted_window_mask

    for case in get("11.q4").cases():
        scores, H, W, w, s = case.args
        keep = shifted_window_mask((H, W), w, s)
        want = torch.softmax(scores.double().masked_fill(~keep, float("-inf")), -1)
        torch.testing.assert_close(get("11.q4").reference(scores.double(), H, W, w, s), want)


def test_shift_cases_include_shift_zero_and_non_square_grids():
    labels = [c.label for c in get("11.q4").cases()]
    assert any("shift=0" in label for label in labels)
    assert any(label.split()[1].split("x")[0] != label.split()[1].split("x")[1].rstrip(",") for label in labels)


def test_pool_reference_equals_softmax_weighted_sum():
    for case in get("11.q5").cases():
        z, w = (a.double() for a in case.args)
        want = (torch.softmax(z @ w, dim=1)[..., None] * z).sum(1)
        torch.testing.assert_close(get("11.q5").reference(z, w), want)


def test_library_and_conv_are_forbidden():
    def borrowed(images, weight, bias, patch):
        from minilib.vision import PatchEmbedding  # noqa: F401 - importing is enough to be caught when called

        return torch.nn.functional.conv2d(images, weight.reshape(weight.shape[0], images.shape[1], patch, patch), bias,
                                          stride=patch).flatten(2).transpose(1, 2)

    assert "forbidden" in grade.check("11.q1", borrowed).message


def test_non_square_grid_gets_the_row_by_row_hint():
    from tests.grade_support.wrong_ch11 import partition_column_major

    result = grade.check("11.q2", partition_column_major)
    assert "max abs error" in result.message


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
