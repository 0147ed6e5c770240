"""Chapter 08 questions: their references against the library and against written-out definitions on their own cases.
The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get
from minilib.looped import LoopedTransformer, MatFFN
from minilib.models import TransformerConfig, TransformerLM
from minilib.models.looped import early_exit, greedy_accept

QUESTIONS = for_chapter("08")


def test_chapter_08_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"08.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["looped_forward", "lora_linear", "sub_ffn", "greedy_accept_step", "exit_layers"]


def test_loop_reference_equals_the_library_loop():
    class Residual(torch.nn.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = w, b

        def forward(self, h):
            return h + torch.tanh(h @ self.w + self.b)

    for case in get("08.q1").cases():
        x, w, b, n = case.args
        x, w, b = x.double(), w.double(), b.double()
        looped = LoopedTransformer(Residual(w, b), n)
        torch.testing.assert_close(get("08.q1").reference(x, w, b, n), looped(x[None])[0])


def test_sub_ffn_reference_equals_matffn_extract():
    for case in get("08.q3").cases():
        x, w1, w2, m = (a.double() if torch.is_tensor(a) else a for a in case.args)
        ffn = MatFFN(w1.shape[1], w1.shape[0], kind="gelu", widths=(m,)).double()
        with torch.no_grad():
            ffn.full.w1.weight.copy_(w1), ffn.full.w2.weight.copy_(w2)
        torch.testing.assert_close(get("08.q3").reference(x, w1, w2, m), ffn.extract(m)(x))


def test_accept_reference_equals_library_greedy_accept_and_cases_cover_each_branch():
    counts = set()
    for case in get("08.q4").cases():
        draft, logits = case.args
        n, nxt = greedy_accept(draft, logits.argmax(-1))
        expected = torch.full((draft.shape[0] + 1,), -1.0, dtype=torch.float64)
        expected[:n], expected[n] = draft[:n].double(), nxt
        torch.testing.assert_close(get("08.q4").reference(draft, logits.double()), expected)
        counts.add(n == draft.shape[0])
    assert counts == {True, False}


def test_lora_reference_is_the_relaxed_weight():
    x, w, a, b = (t.double() for t in get("08.q2").cases()[1].args)
    torch.testing.assert_close(get("08.q2").reference(x, w, a, b), torch.nn.functional.linear(x, w + b @ a))


def test_library_is_forbidden():
    def borrowed(x, w1, w2, m):
        from minilib.looped import MatFFN as Borrowed  # noqa: F401
        return torch.zeros(x.shape[0], w2.shape[0], dtype=x.dtype)

    assert "forbidden" in grade.check("08.q3", borrowed).message


def test_exit_reference_equals_the_library_exit_layers():
    """On a model's logit-lens read-outs: the library's exit layer of every token at the first layer.

    Tokens that exit at layer 1 leave before any state is frozen, so their exit agrees with the read-outs of the full
    model; the reference is then checked on every token for thresholds where all tokens exit at layer 1 or never."""
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(vocab_size=6, d_model=16, n_layers=3, n_heads=2)).double().eval()
    idx = torch.randint(0, 6, (1, 9))
    with torch.no_grad():
        x = model.embed(idx)
        probs = []
        for block in model.blocks[:-1]:
            x = block(x)
            probs.append(torch.softmax(model.logits(x), -1)[0])
        probs = torch.stack(probs)
        for threshold in (0.0, 1.0, probs[0].amax(-1).median().item()):
            layers = early_exit(model, idx, threshold)[1][0]
            reference = get("08.q5").reference(probs, threshold)
            first = layers == 1
            assert torch.equal(reference[first], layers[first].double())
            assert (reference[~first] > 1).all()
