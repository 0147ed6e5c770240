"""Whole-model pieces of chapter 08 against plain references: greedy decoding, explicit masking, written-out loops."""
import pytest
import torch

from minilib.models import TransformerConfig, TransformerLM
from minilib.models.looped import (CrossLayerLM, block_updates, continuous_thought, early_exit, extract_submodel, greedy_accept,
                                   hidden_states, ladder_logits, set_ffn_widths, speculative_greedy)
from tests.models_support import decode_in_pieces


def mat_lm(seed=0, n_layers=3):
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig(vocab_size=16, d_model=16, n_layers=n_layers, n_heads=2, ffn="matformer",
                                           d_ff=32, max_len=64)).eval()


def test_mix_n_match_extraction_equals_running_at_those_widths_and_full_equals_base():
    model = mat_lm()
    idx = torch.randint(0, 16, (2, 9))
    full = model(idx)
    torch.testing.assert_close(extract_submodel(model, 32)(idx), full)
    small = extract_submodel(model, [4, 16, 8])
    set_ffn_widths(model, [4, 16, 8])
    torch.testing.assert_close(small(idx), model(idx))
    counts = [sum(p.numel() for p in extract_submodel(model, m).parameters()) for m in (4, 8, 16, 32)]
    assert counts == sorted(counts) and counts[1] - counts[0] == 3 * 3 * 16 * 4  # 3 layers x 3 matrices x d x 4 units


@pytest.mark.parametrize("seed", range(6))
def test_speculative_equals_plain_greedy(seed):
    target = mat_lm(seed)
    draft = extract_submodel(target, 4)
    idx = torch.randint(0, 16, (1, 5), generator=torch.Generator().manual_seed(seed))
    out, stats = speculative_greedy(target, draft, idx, 15, k=3)
    assert torch.equal(out, target.generate(idx, 15, temperature=0))
    assert stats["verifier_calls"] <= 15 and stats["accepted"] + stats["verifier_calls"] >= 15


def test_greedy_accept():
    assert greedy_accept(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3, 4])) == (3, 4)
    assert greedy_accept(torch.tensor([1, 5, 3]), torch.tensor([1, 2, 3, 4])) == (1, 2)
    assert greedy_accept(torch.tensor([7, 2, 3]), torch.tensor([1, 2, 3, 4])) == (0, 1)
    with pytest.raises(ValueError, match="target_tokens"):
        greedy_accept(torch.tensor([1, 2]), torch.tensor([1, 2]))


def test_continuous_thought_feeds_hidden_state_back():
    model = mat_lm()
    idx = torch.randint(0, 16, (2, 4))
    torch.testing.assert_close(continuous_thought(model, idx, 0), model(idx)[:, -1])
    h1 = hidden_states(model, idx)[-1][:, -1:]          # the last hidden state becomes the next input
    x = torch.cat([model.embed(idx), h1], dim=1)
    for block in model.blocks:
        x = block(x)
    torch.testing.assert_close(continuous_thought(model, idx, 1), model.logits(x[:, -1]))


def exit_reference(model, idx, threshold, shortcuts=None, halting=None):
    """Token by token and layer by layer: a token's state is frozen once its read-out's top probability (or its halting
    unit's probability) passes the threshold."""
    x, n_layers = model.embed(idx), len(model.blocks)
    B, T = idx.shape
    logits, layers = torch.zeros(B, T, model.vocab_size, dtype=x.dtype), torch.full((B, T), n_layers)
    running = [[True] * T for _ in range(B)]
    for layer, block in enumerate(model.blocks):
        new = block(x)
        x = torch.stack([torch.stack([new[b, t] if running[b][t] else x[b, t] for t in range(T)]) for b in range(B)])
        for b in range(B):
            for t in range(T):
                if not running[b][t]:
                    continue
                h = x[b, t] if layer == n_layers - 1 or shortcuts is None else x[b, t] @ shortcuts[layer]
                z = model.logits(h[None])[0]
                last = layer == n_layers - 1
                if last or (torch.softmax(z, -1).max() if halting is None else halting[layer](x[b:b + 1, t:t + 1])[0, 0]) > threshold:
                    logits[b, t], layers[b, t], running[b][t] = z, layer + 1, False
    return logits, layers


@pytest.mark.parametrize("seed", range(3))
def test_early_exit_threshold_one_is_the_full_model_and_lower_thresholds_match_a_token_loop(seed):
    torch.manual_seed(seed)
    model = TransformerLM(TransformerConfig(vocab_size=8, d_model=16, n_layers=4, n_heads=2)).double().eval()
    idx = torch.randint(0, 8, (2, 7))
    logits, layers = early_exit(model, idx, 1.0)
    assert torch.equal(logits, model(idx)) and (layers == 4).all()
    first = early_exit(model, idx, 0.0)                 # every probability beats 0: all tokens leave after layer 1
    torch.testing.assert_close(first[0], model.logits(hidden_states(model, idx)[0]))
    assert (first[1] == 1).all()
    shortcuts = [torch.randn(16, 16, dtype=torch.float64) * 0.5 for _ in range(3)]
    lens = torch.stack([torch.softmax(model.logits(h), -1).amax(-1) for h in hidden_states(model, idx)])
    for q, maps in ((0.5, None), (0.8, None), (0.7, shortcuts)):  # thresholds that split the tokens across layers
        threshold = lens.quantile(q).item()
        got, got_layers = early_exit(model, idx, threshold, shortcuts=maps)
        want, want_layers = exit_reference(model, idx, threshold, maps)
        torch.testing.assert_close(got, want)
        assert torch.equal(got_layers, want_layers)
        assert maps is not None or len(set(got_layers.flatten().tolist())) > 1
    units = [torch.nn.Linear(16, 1).double() for _ in range(3)]                    # learned halting units
    halting = [lambda h, u=u: torch.sigmoid(u(h))[..., 0] for u in units]
    assert torch.equal(early_exit(model, idx, 1.0, halting=halting)[0], model(idx))
    scores = torch.stack([unit(h) for unit, h in zip(halting, hidden_states(model, idx))])
    for threshold in scores.flatten(1).median(dim=1).values.tolist():  # each layer's median halting probability
        got, got_layers = early_exit(model, idx, threshold, halting=halting)
        want, want_layers = exit_reference(model, idx, threshold, halting=halting)
        torch.testing.assert_close(got, want)
        assert torch.equal(got_layers, want_layers)
    assert len(set(early_exit(model, idx, scores[0].median().item(), halting=halting)[1].flatten().tolist())) > 1


def test_hidden_states_and_ladder():
    model = mat_lm()
    idx = torch.randint(0, 16, (2, 6))
    torch.testing.assert_close(model.logits(hidden_states(model, idx)[-1]), model(idx))
    torch.testing.assert_close(ladder_logits(model, idx, offset=0), model(idx), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ladder_logits(model, idx, offset=1), model(idx))
    assert len(block_updates(model)) == 6


@pytest.mark.parametrize("options", [{"depth_attention": True}, {"value_residual": "gated"}, {"value_residual": "static"}])
def test_cross_layer_lm_decodes_in_pieces_with_a_standard_cache(options):
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=16, d_model=16, n_layers=3, n_heads=2, mixer_kwargs=options)
    model, vanilla = CrossLayerLM(config).double(), TransformerLM(TransformerConfig(vocab_size=16, d_model=16, n_layers=3, n_heads=2))
    idx = torch.randint(0, 16, (2, 9))
    full = model(idx)
    caches = model.new_caches()
    pieces = decode_in_pieces(lambda piece: model(piece, caches=caches), idx, [4, 5])
    torch.testing.assert_close(pieces, full)
    assert [c.k.shape for c in caches] == [(2, 2, 9, 8)] * 3 and [c.v.shape for c in caches] == [(2, 2, 9, 8)] * 3
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in vanilla.parameters())
    assert extra == {"depth_attention": 0, "gated": 3 * (16 * 2 + 2), "static": 3}[options.get("value_residual", "depth_attention")]


def test_bad_arguments():
    plain = TransformerLM(TransformerConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2))
    with pytest.raises(ValueError, match="MatFFN"):
        extract_submodel(plain, 4)
    with pytest.raises(ValueError, match="widths"):
        set_ffn_widths(mat_lm(), [4, 8])
    with pytest.raises(ValueError, match="idx"):
        speculative_greedy(mat_lm(), mat_lm(), torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(TypeError, match="model"):
        continuous_thought(object(), torch.zeros(1, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="threshold"):
        early_exit(plain, torch.zeros(1, 2, dtype=torch.long), 1.5)
    with pytest.raises(ValueError, match="shortcuts"):
        early_exit(plain, torch.zeros(1, 2, dtype=torch.long), 0.5, shortcuts=[torch.eye(16)] * 2)
    with pytest.raises(ValueError, match="halting"):
        early_exit(plain, torch.zeros(1, 2, dtype=torch.long), 0.5, halting=[print, print])
    with pytest.raises(ValueError, match="pre_norm"):
        CrossLayerLM(TransformerConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2, pre_norm=False))
