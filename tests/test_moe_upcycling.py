"""Upcycling: one dense model into identical experts computes the dense model exactly; several models' FFNs become
distinct experts and the rest is averaged."""
import pytest
import torch

from minilib.models import TransformerLM, TransformerConfig
from minilib.moe import upcycle


def _dense(seed):
    torch.manual_seed(seed)
    return TransformerLM(vocab_size=9, d_model=16, n_layers=2, n_heads=2, d_ff=24).double()


def test_upcycled_dense_model_has_the_dense_logits():
    dense = _dense(0)
    config = TransformerConfig(vocab_size=9, d_model=16, n_layers=2, n_heads=2, d_ff=24, ffn="moe",
                               ffn_kwargs={"n_experts": 4, "top_k": 2})
    moe = TransformerLM(config).double()
    moe.load_state_dict(upcycle([dense.state_dict()], 4))
    x = torch.randint(0, 9, (3, 11))
    torch.testing.assert_close(moe(x), dense(x), rtol=0, atol=1e-12)


def test_several_models_give_distinct_experts_and_averaged_attention():
    a, b = _dense(1), _dense(2)
    sd = upcycle([a.state_dict(), b.state_dict()], 4)
    assert torch.equal(sd["blocks.0.ffn.experts.1.w1.weight"], b.state_dict()["blocks.0.ffn.w1.weight"])
    assert torch.equal(sd["blocks.0.ffn.experts.2.w1.weight"], a.state_dict()["blocks.0.ffn.w1.weight"])
    key = "blocks.1.mixer.q_proj.weight" if "blocks.1.mixer.q_proj.weight" in sd else \
        next(k for k in sd if k.startswith("blocks.1.mixer") and k.endswith("weight"))
    torch.testing.assert_close(sd[key], (a.state_dict()[key] + b.state_dict()[key]) / 2)
    assert sd["blocks.1.ffn.router.weight"].abs().sum() == 0


def test_bam_upcycles_attention_into_experts_and_keeps_the_dense_function():
    dense = _dense(3)
    config = TransformerConfig(vocab_size=9, d_model=16, n_layers=2, n_heads=2, d_ff=24, ffn="moe",
                               ffn_kwargs={"n_experts": 2, "top_k": 2}, mixer="moa", mixer_kwargs={"n_experts": 3})
    bam = TransformerLM(config).double()
    bam.load_state_dict(upcycle([dense.state_dict()], 2, attention=True, n_attention_experts=3))
    x = torch.randint(0, 9, (3, 11))
    torch.testing.assert_close(bam(x), dense(x), rtol=0, atol=1e-12)


def test_bam_gives_each_models_attention_to_its_own_expert():
    a, b = _dense(1), _dense(2)
    sd = upcycle([a.state_dict(), b.state_dict()], 2, attention=True)
    for e, model in ((0, a), (1, b)):
        for name in ("wq", "wk", "wv", "wo"):
            assert torch.equal(sd[f"blocks.1.mixer.experts.{e}.{name}.weight"], model.state_dict()[f"blocks.1.mixer.{name}.weight"])
    assert sd["blocks.0.mixer.router.weight"].shape == (2, 16) and sd["blocks.0.mixer.router.weight"].abs().sum() == 0
    assert "blocks.0.mixer.wq.weight" not in sd
    torch.testing.assert_close(sd["embed.weight"], (a.state_dict()["embed.weight"] + b.state_dict()["embed.weight"]) / 2)


@pytest.mark.parametrize("call, error, name", [
    (lambda: upcycle([_dense(0).state_dict()], 2, attention=1), TypeError, "attention"),
    (lambda: upcycle([_dense(0).state_dict()], 2, attention=True, n_attention_experts=0), ValueError,
     "n_attention_experts"),
    (lambda: upcycle([], 2), TypeError, "state_dicts"),
    (lambda: upcycle([{"w": torch.zeros(1)}], 0), ValueError, "n_experts"),
    (lambda: upcycle([{"w": torch.zeros(1)}], 2), ValueError, "state_dicts")])
def test_bad_arguments_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()
