"""lm_loss, train, evaluate: a tiny model learns a deterministic sequence; losses and counts by hand."""
import pytest
import torch

from minilib.models import TransformerLM, evaluate, lm_loss, train


def test_training_learns_a_deterministic_sequence():
    torch.manual_seed(0)
    model = TransformerLM(5, 16, 1, 2, max_len=16)
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    batches = iter(lambda: (x, y), None)
    losses = train(model, batches, steps=60, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.1
    assert evaluate(model, iter(lambda: (x, y), None), n_batches=2) == pytest.approx(lm_loss(model.eval(), (x, y)).item(), rel=1e-5)


def test_lm_loss_is_the_mean_cross_entropy_over_kept_targets():
    torch.manual_seed(0)
    model = TransformerLM(7, 8, 1, 2, max_len=8).double()
    x = torch.randint(0, 7, (2, 5))
    y = torch.randint(0, 7, (2, 5))
    y[0, 1] = y[1, 4] = -100
    logp = torch.log_softmax(model(x), dim=-1)
    kept = [(b, t) for b in range(2) for t in range(5) if y[b, t] != -100]
    want = -sum(logp[b, t, y[b, t]] for b, t in kept) / len(kept)
    assert lm_loss(model, (x, y)).item() == pytest.approx(want.item(), rel=1e-12)


def test_train_decays_matrices_but_not_vectors_or_marked_parameters():
    model = torch.nn.Linear(3, 1)
    marked = torch.nn.Parameter(torch.ones(2, 2))
    marked._no_weight_decay = True
    model.register_parameter("marked", marked)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # zero gradients: AdamW moves a parameter only by its weight decay, lr * wd * p
    train(model, iter(lambda: None, 0), steps=1, lr=0.1, weight_decay=0.5, grad_clip=None,
          loss_fn=lambda m, batch: 0 * sum(p.sum() for p in m.parameters()), progress=False)
    torch.testing.assert_close(model.weight, before["weight"] * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model.bias, before["bias"])
    torch.testing.assert_close(model.marked, before["marked"])


def test_train_rejects_no_steps():
    with pytest.raises(ValueError, match="steps"):
        train(TransformerLM(5, 8, 1, 2), iter([]), steps=0, lr=1e-3, progress=False)


def test_train_adds_the_models_aux_loss_but_returns_the_task_loss():
    class Pulled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def aux_loss(self):
            return 10.0 * self.w.pow(2).sum()

    model = Pulled()
    losses = train(model, iter(lambda: None, 0), steps=30, lr=0.05, weight_decay=0.0,
                   loss_fn=lambda m, batch: 0.0 * m.w.sum() + 3.0, progress=False)
    assert losses == [3.0] * 30
    assert model.w.abs().max() < 0.5  # only the aux loss moves the weights
