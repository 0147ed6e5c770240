"""Chapter 13's zoo: the rows build, are causal and match the budget; the state counter against closed forms; the
MQAR metric against a loop."""
import pytest
import torch

import minilib  # noqa: F401  (registers every mixer)
from minilib.attention import kv_cache_bytes
from minilib.data import associative_recall
from minilib.mixing import registered_mixers
from minilib.models import count_parameters
from minilib.models.zoo import EXCLUDED, ZOO_ROWS, decoding_state_bytes, matched_d_ff, mqar_accuracy, zoo_config, zoo_model

SIZES = dict(vocab_size=24, d_model=32, n_layers=2, n_heads=4, max_len=64)  # the benchmark's widths


def test_rows_and_exclusions_name_registered_mixers():
    named = {fields.get("mixer", "attention") for fields in ZOO_ROWS.values()}
    assert named <= set(registered_mixers())
    assert not named & set(EXCLUDED)
    assert set(EXCLUDED) <= set(registered_mixers())


@pytest.mark.parametrize("row", sorted(ZOO_ROWS))
def test_every_row_is_causal_and_matched(row):
    target = count_parameters(zoo_model("attention", **SIZES))
    torch.manual_seed(0)
    model = zoo_model(row, d_ff=matched_d_ff(row, target, **SIZES), **SIZES)
    assert abs(count_parameters(model) / target - 1) <= 0.05
    idx = torch.randint(0, 24, (2, 12))
    idx2 = idx.clone()
    idx2[:, 7] = (idx[:, 7] + 1) % 24
    with torch.no_grad():
        a, b = model(idx), model(idx2)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-5)


def test_state_bytes_of_attention_is_the_kv_cache_formula():
    model = zoo_model("gqa", **SIZES)
    for T in (5, 17):
        caches = model.new_caches()
        with torch.no_grad():
            model(torch.randint(0, 24, (1, T)), caches=caches)
        assert decoding_state_bytes(caches) == kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=8, seq_len=T,
                                                              dtype=torch.float32)


def test_state_bytes_of_linear_attention_is_fixed():
    model = zoo_model("linear_attention", **SIZES)
    held = []
    for T in (3, 30):
        caches = model.new_caches()
        with torch.no_grad():
            model(torch.randint(0, 24, (1, T)), caches=caches)
        held.append(decoding_state_bytes(caches))
    assert held[0] == held[1] >= 2 * 4 * 8 * 8 * 4  # per layer at least H d_h x d_h floats


def test_state_bytes_counts_a_shared_tensor_once():
    class Cache:
        def __init__(self, t):
            self.a, self.b = t, [t]
    t = torch.zeros(3, dtype=torch.float64)
    assert decoding_state_bytes([Cache(t), Cache(t)]) == 24


def test_mqar_accuracy_against_a_loop():
    g = torch.Generator().manual_seed(0)
    b = associative_recall(6, n_pairs=4, n_keys=8, n_values=8, n_queries=3, generator=g)
    logits = torch.randn(*b.inputs.shape, 16, generator=g)
    logits[0, b.mask[0].nonzero()[0, 0], b.targets[0, b.mask[0]][0]] = 100.0
    hits = total = 0
    for i in range(6):
        for t in range(b.inputs.shape[1]):
            if b.mask[i, t]:
                total += 1
                hits += int(max(range(16), key=lambda v: logits[i, t, v].item()) == b.targets[i, t].item())
    assert mqar_accuracy(logits, b.targets, b.mask) == pytest.approx(hits / total)


def test_mqar_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="mask"):
        mqar_accuracy(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="targets"):
        mqar_accuracy(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))


def test_bad_rows_and_caches():
    with pytest.raises(ValueError, match="row"):
        zoo_config("nope", **SIZES)
    with pytest.raises(ValueError, match="caches"):
        decoding_state_bytes(None)


def test_looped_row_is_one_block_applied_n_layers_times():
    from minilib.models.zoo import LOOP_ONE_BLOCK

    assert ZOO_ROWS["looped"] == {LOOP_ONE_BLOCK: True}
    torch.manual_seed(0)
    model = zoo_model("looped", **SIZES)
    plain = zoo_model("attention", **SIZES)
    assert model.blocks[0] is model.blocks[1]
    block_params = sum(p.numel() for p in model.blocks[0].parameters())
    assert count_parameters(plain) - count_parameters(model) == block_params  # one block fewer, nothing else
    idx = torch.randint(0, 24, (2, 9))
    with torch.no_grad():
        h = model.embed(idx)
        for _ in range(2):  # the loop written out: the same block twice
            h = model.blocks[0](h)
        want = model.final_norm(h) @ model.embed.weight.T  # RoPE acts inside the attention, so no position is added
        got = model(idx)
    torch.testing.assert_close(got, want)
    caches = model.new_caches()
    assert caches[0] is not caches[1]  # one KV cache per pass through the block
    with torch.no_grad():
        step = torch.cat([model(idx[:, :5], caches=caches), model(idx[:, 5:], caches=caches)], dim=1)
    torch.testing.assert_close(step, got, rtol=1e-5, atol=1e-5)


def test_ffn_row_keeps_attention_and_swaps_the_feed_forward():
    from minilib.moe import MoE

    model = zoo_model("moe", **SIZES)
    assert all(isinstance(block.ffn, MoE) for block in model.blocks)
    assert type(model.blocks[0].mixer) is type(zoo_model("attention", **SIZES).blocks[0].mixer)
