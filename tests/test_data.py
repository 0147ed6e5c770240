"""Tests for minilib.data: the generated corpus against closed forms and Monte Carlo, tokenizers,
batching, and every synthetic task against a naive re-construction with Python loops."""
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.data import (
    IGNORE_INDEX, CharTokenizer, Emission, MarkovTextSource, WordTokenizer, associative_recall, copy_task,
    delayed_recall, english_like_grammar, induction_heads, key_value_lookup, lm_batches, lm_eval_windows,
    masked_targets, meap_mask, reverse_task, selective_copying, tiny_corpus, train_val_split,
)



@pytest.fixture(scope="module")
def default_source():
    return MarkovTextSource(*english_like_grammar())


@pytest.fixture(scope="module")
def long_sample(default_source):
    return default_source.sample(300_000, seed=123)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- corpus: hand-computable sources

def two_state_source():
    # A --x (1/2)--> A,  A --yy (1/2)--> B,  B --z (1)--> A.
    # pi = (2/3, 1/3); H_word = (2/3) ln 2; mean length = (2/3)(1.5) + (1/3)(1) = 4/3; H_char = ln(2) / 2.
    return MarkovTextSource({"A": [Emission("x", "x", 0.5, "A"), Emission("y", "yy", 0.5, "B")],
                             "B": [Emission("z", "z", 1.0, "A")]}, "A")


def test_two_state_source_matches_hand_derivation():
    src = two_state_source()
    np.testing.assert_allclose(src.stationary_distribution(), [2 / 3, 1 / 3], atol=1e-12)
    assert src.entropy_rate_per_char() == pytest.approx(math.log(2) / 2, abs=1e-12)
    # characters per 4/3 chars on average: x with weight (2/3)(1/2), y twice that, z (1/3)
    f = {"x": (1 / 3) / (4 / 3), "y": (2 / 3) / (4 / 3), "z": (1 / 3) / (4 / 3)}
    assert src.char_unigram_entropy() == pytest.approx(-sum(p * math.log(p) for p in f.values()), abs=1e-12)


def test_iid_source_log_prob_by_hand():
    p = 0.3
    src = MarkovTextSource({"s": [Emission("a", "a", p, "s"), Emission("b", "bb", 1 - p, "s")]}, "s")
    assert src.entropy_rate_per_char() == pytest.approx(
        -(p * math.log(p) + (1 - p) * math.log(1 - p)) / (p + 2 * (1 - p)), abs=1e-12)
    assert src.log_prob("abba") == pytest.approx(2 * math.log(p) + math.log(1 - p), abs=1e-12)
    assert src.log_prob("ab") == pytest.approx(math.log(p) + math.log(1 - p), abs=1e-12)  # last word cut
    assert src.log_prob("") == 0.0
    assert src.log_prob("aba") == -math.inf  # "b" must come in pairs
    assert src.log_prob("c") == -math.inf
    np.testing.assert_allclose(src.char_log_probs("abba"), np.log([p, 1 - p, 1.0, p]), atol=1e-12)
    np.testing.assert_array_equal(src.char_log_probs("aba")[2:], [-np.inf])


def test_source_rejects_bad_tables():
    with pytest.raises(ValueError, match="sum"):
        MarkovTextSource({"s": [Emission("a", "a", 0.5, "s")]}, "s")
    with pytest.raises(ValueError, match="prefix-free"):
        # "a" then "b" and "ab" write the same characters
        MarkovTextSource({"s": [Emission("a", "a", 0.4, "s"), Emission("b", "b", 0.3, "s"),
                                Emission("ab", "ab", 0.3, "s")]}, "s")
    # "ab" is a word and "a" is one too, but no word starts with "b": one character of look-ahead decides
    MarkovTextSource({"s": [Emission("a", "a", 0.5, "s"), Emission("ab", "ab", 0.5, "s")]}, "s")
    with pytest.raises(ValueError, match="several emissions"):  # same word to two states: not unifilar
        MarkovTextSource({"s": [Emission("a", "a", 0.5, "s"), Emission("a", "a", 0.5, "t")],
                          "t": [Emission("b", "b", 1.0, "s")]}, "s")
    with pytest.raises(ValueError, match="unknown state"):
        MarkovTextSource({"s": [Emission("a", "a", 1.0, "t")]}, "s")
    with pytest.raises(ValueError, match="irreducible"):
        MarkovTextSource({"s": [Emission("a", "a", 1.0, "t")], "t": [Emission("b", "b", 1.0, "t")]}, "s")
    with pytest.raises(ValueError, match="start"):
        MarkovTextSource({"s": [Emission("a", "a", 1.0, "s")]}, "nope")
    with pytest.raises(ValueError, match="zipf_exponent"):
        english_like_grammar(zipf_exponent=-1.0)


# ---------------------------------------------------------------- corpus: the default grammar

def independent_entropy_rate(src):
    """H_char recomputed from the emission table alone: stationary law by power iteration of the lazy chain."""
    states = list(src.emissions)
    pos = {s: i for i, s in enumerate(states)}
    P = np.zeros((len(states), len(states)))
    for s, es in src.emissions.items():
        for e in es:
            P[pos[s], pos[e.next_state]] += e.prob
    lazy = 0.5 * (np.eye(len(states)) + P)  # same stationary law, aperiodic
    pi = np.full(len(states), 1.0 / len(states))
    for _ in range(20_000):
        pi = pi @ lazy
    h = sum(pi[pos[s]] * sum(-e.prob * math.log(e.prob) for e in es) for s, es in src.emissions.items())
    ell = sum(pi[pos[s]] * sum(e.prob * len(e.text) for e in es) for s, es in src.emissions.items())
    return h / ell


def test_entropy_rate_equals_power_iteration(default_source):
    assert default_source.entropy_rate_per_char() == pytest.approx(independent_entropy_rate(default_source), rel=1e-9)


def test_entropy_rate_matches_monte_carlo(default_source, long_sample):
    mc = -default_source.log_prob(long_sample) / len(long_sample)
    assert mc == pytest.approx(default_source.entropy_rate_per_char(), rel=0.01)


def test_unigram_entropy_matches_empirical_frequencies(default_source, long_sample):
    counts = Counter(long_sample)
    n = len(long_sample)
    empirical = -sum(c / n * math.log(c / n) for c in counts.values())
    assert empirical == pytest.approx(default_source.char_unigram_entropy(), rel=0.01)
    assert set(counts) <= set(default_source.char_distribution())


def test_default_corpus_has_room_between_floor_and_unigram(default_source):
    floor, unigram = default_source.entropy_rate_per_char(), default_source.char_unigram_entropy()
    assert 0 < floor < unigram
    assert unigram - floor > 1.5  # a char LM has a lot to learn beyond letter frequencies


def test_log_prob_of_prefixes_is_consistent(default_source, long_sample):
    # P(t) = sum_c P(t + c): the prefix probabilities form one distribution over continuations.
    alphabet = list(default_source.char_distribution())
    for cut in (0, 1, 3, 17, 58, 203):
        t = long_sample[:cut]
        total = np.logaddexp.reduce([default_source.log_prob(t + c) for c in alphabet])
        assert total == pytest.approx(default_source.log_prob(t), abs=1e-9)


def test_char_log_probs_are_normalised_conditionals(default_source, long_sample):
    alphabet = list(default_source.char_distribution())
    text = long_sample[:400]
    scores = default_source.char_log_probs(text)
    assert scores.shape == (400,) and np.all(scores <= 1e-12)
    assert scores.sum() == pytest.approx(default_source.log_prob(text), abs=1e-8)
    for t in (0, 5, 44, 211, 399):  # sum over every possible next character is 1
        nxt = [default_source.char_log_probs(text[:t] + c)[-1] for c in alphabet]
        assert np.logaddexp.reduce(nxt) == pytest.approx(0.0, abs=1e-9)
        assert nxt[alphabet.index(text[t])] == pytest.approx(scores[t], abs=1e-9)


def test_log_prob_of_impossible_text_is_minus_inf(default_source):
    assert default_source.log_prob("the cat") == -math.inf  # a sentence starts with a capital
    assert default_source.log_prob("The The") == -math.inf
    assert default_source.log_prob("The cat sees.\n") == -math.inf  # a transitive verb needs an object
    assert default_source.log_prob("Xyz") == -math.inf
    assert default_source.log_prob("The foxes sees the cat.\n") == -math.inf  # number agreement
    assert default_source.log_prob("The cat sleeps.\n") > -math.inf
    assert default_source.log_prob("Two hungry foxes chased my ball into the river.\n") > -math.inf


def test_sampling_is_deterministic_and_seed_dependent(default_source):
    a = default_source.sample(5_000, seed=7)
    assert a == default_source.sample(5_000, seed=7)
    assert a != default_source.sample(5_000, seed=8)
    assert len(a) == 5_000
    assert default_source.sample(0, seed=7) == ""
    text, src = tiny_corpus(2_000, seed=3)
    assert text == tiny_corpus(2_000, seed=3)[0] and len(text) == 2_000
    assert src.entropy_rate_per_char() == pytest.approx(default_source.entropy_rate_per_char())


def test_sample_reads_as_sentences(long_sample):
    sentences = long_sample.split("\n")[:-1]
    assert len(sentences) > 1000
    assert all(re.fullmatch(r"[A-Z][a-z]*( [A-Za-z]+)+\.", s) for s in sentences)


def test_sample_bad_arguments(default_source):
    with pytest.raises(ValueError, match="n_chars"):
        default_source.sample(-1, seed=0)
    with pytest.raises(TypeError, match="seed"):
        default_source.sample(10, seed=None)


# ---------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trip_and_vocab(long_sample):
    tok = CharTokenizer(long_sample)
    assert tok.itos == sorted(set(long_sample)) and tok.vocab_size == len(set(long_sample))
    assert all(tok.stoi[c] == i for i, c in enumerate(tok.itos))
    ids = tok.encode(long_sample[:5000])
    assert ids.dtype == torch.long and ids.shape == (5000,)
    assert tok.decode(ids) == long_sample[:5000]
    assert tok.decode(ids.tolist()) == long_sample[:5000]
    assert [tok.itos[i] for i in tok.encode_list("The cat")] == list("The cat")


@settings(max_examples=20, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_char_tokenizer_round_trip_any_text(text):
    tok = CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_unknown_symbols():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="ids"):
        tok.decode([0, 7])
    with pytest.raises(ValueError, match="symbols"):
        CharTokenizer("")
    with pytest.raises(TypeError, match="text"):
        tok.encode(["a"])


def naive_word_split(text):
    tokens, word = [], ""
    for ch in text:
        if ch.isascii() and ch.isalpha():
            word += ch
            continue
        if word:
            tokens.append(word)
            word = ""
        if ch == "\n" or not ch.isspace():
            tokens.append(ch)
    return tokens + ([word] if word else [])


def test_word_tokenizer_round_trip(long_sample):
    sentences = long_sample[:long_sample.rindex("\n") + 1]  # the sample's last word is cut
    tok = WordTokenizer(sentences)
    part = long_sample[:long_sample.index("\n", 20_000) + 1]  # whole sentences: the sample's last word is cut
    assert WordTokenizer.split(part) == naive_word_split(part)
    assert tok.decode(tok.encode(part)) == part
    assert tok.itos == sorted(set(naive_word_split(sentences)))
    assert tok.split("Hello, world.\nBye") == ["Hello", ",", "world", ".", "\n", "Bye"]
    grammar_words = {piece for es in MarkovTextSource(*english_like_grammar()).emissions.values()
                     for e in es for piece in naive_word_split(e.text)}
    assert set(tok.itos) <= grammar_words


def test_word_tokenizer_unknown_words():
    tok = WordTokenizer("the cat sat.")
    with pytest.raises(ValueError, match="'dog'"):
        tok.encode("the dog sat.")
    with pytest.raises(ValueError, match="corpus"):
        WordTokenizer("   ")


# ---------------------------------------------------------------- batching

def test_lm_batches_are_shifted_windows():
    ids = torch.arange(12)
    it = lm_batches(ids, batch_size=4, seq_len=4, generator=gen(0))
    starts = set()
    for _ in range(200):
        x, y = next(it)
        assert x.shape == y.shape == (4, 4)
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            a = row_x[0]
            assert row_x == list(range(a, a + 4)) and row_y == list(range(a + 1, a + 5))
            starts.add(a)
    assert starts == set(range(0, 8))  # every window that fits, and no other


def test_lm_batches_deterministic():
    ids = torch.randint(0, 50, (1000,), generator=gen(1))
    a = [next(lm_batches(ids, batch_size=3, seq_len=7, generator=gen(5))) for _ in range(2)]
    x1, _ = a[0]
    x2, _ = a[1]
    assert torch.equal(x1, x2)
    x3, _ = next(lm_batches(ids, batch_size=3, seq_len=7, generator=gen(6)))
    assert not torch.equal(x1, x3)


def test_train_val_split_and_eval_windows():
    ids = torch.arange(103)
    tr, va = train_val_split(ids, 0.1)
    assert len(va) == 10 and torch.equal(torch.cat([tr, va]), ids)
    x, y = lm_eval_windows(ids, seq_len=10)
    assert x.shape == y.shape == (10, 10)
    for k in range(10):
        assert x[k].tolist() == list(range(10 * k, 10 * k + 10))
        assert y[k].tolist() == list(range(10 * k + 1, 10 * k + 11))


@pytest.mark.parametrize("call, name", [
    (lambda: lm_batches(torch.arange(10), batch_size=0, seq_len=3, generator=gen()), "batch_size"),
    (lambda: lm_batches(torch.arange(10), batch_size=2, seq_len=10, generator=gen()), "seq_len"),
    (lambda: lm_batches(torch.arange(10).reshape(2, 5), batch_size=2, seq_len=3, generator=gen()), "ids"),
    (lambda: train_val_split(torch.arange(10), 1.5), "val_frac"),
    (lambda: lm_eval_windows(torch.arange(3), seq_len=5), "seq_len"),
])
def test_batching_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_batching_wrong_types():
    with pytest.raises(TypeError, match="generator"):
        lm_batches(torch.arange(10), batch_size=1, seq_len=3, generator=0)
    with pytest.raises(TypeError, match="ids"):
        train_val_split([1, 2, 3], 0.5)


# ---------------------------------------------------------------- synthetic tasks (naive references)

def check_next_token_layout(batch):
    x, y, m = batch
    assert x.dtype == y.dtype == torch.long and m.dtype == torch.bool
    assert x.shape == y.shape == m.shape
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), L=st.integers(1, 9), V=st.integers(1, 7), seed=st.integers(0, 100))
def test_copy_task(B, L, V, seed):
    batch = copy_task(B, seq_len=L, vocab_size=V, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, 2 * L)
    for b in range(B):
        s = x[b, :L].tolist()
        assert all(0 <= t < V for t in s) and x[b, L] == V
        expected_y = s[1:] + [V] + s
        assert y[b].tolist() == expected_y
        assert m[b].tolist() == [False] * L + [True] * L
        assert [y[b, t].item() for t in range(2 * L) if m[b, t]] == s


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), L=st.integers(1, 16), V=st.integers(1, 16), seed=st.integers(0, 100))
def test_reverse_task(B, L, V, seed):
    src, tgt_in, tgt_out = reverse_task(B, seq_len=L, vocab_size=V, generator=gen(seed))
    assert src.shape == tgt_in.shape == tgt_out.shape == (B, L)
    for b in range(B):
        s = src[b].tolist()
        rev = [s[L - 1 - i] for i in range(L)]
        assert tgt_out[b].tolist() == rev
        assert tgt_in[b].tolist() == [V] + rev[:-1]
        assert all(0 <= t < V for t in s)


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 4), N=st.integers(1, 8), extra_keys=st.integers(0, 4), n_values=st.integers(1, 6),
       Q=st.integers(1, 8), distinct=st.booleans(), seed=st.integers(0, 100))
def test_associative_recall(B, N, extra_keys, n_values, Q, distinct, seed):
    Q = min(Q, N)
    n_keys = N + extra_keys if distinct else max(1, extra_keys)
    batch = associative_recall(B, n_pairs=N, n_keys=n_keys, n_values=n_values, n_queries=Q,
                               distinct_keys=distinct, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, 2 * N + 2 * Q - 1)
    for b in range(B):
        z = x[b].tolist() + [y[b, -1].item()]
        keys, values = z[0:2 * N:2], z[1:2 * N:2]
        assert all(0 <= k < n_keys for k in keys) and all(n_keys <= v < n_keys + n_values for v in values)
        if distinct:
            assert len(set(keys)) == N
        answers_checked = 0
        for t in range(x.shape[1]):
            if not m[b, t]:
                continue
            q = x[b, t].item()
            last = None
            for i in range(N):
                if keys[i] == q:
                    last = values[i]
            assert last is not None and y[b, t].item() == last
            answers_checked += 1
        assert answers_checked == Q
        assert m[b].sum() == Q and all(m[b, t] == (t >= 2 * N and (t - 2 * N) % 2 == 0) for t in range(x.shape[1]))


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), n=st.integers(1, 6), extra=st.integers(0, 10), V=st.integers(1, 6), seed=st.integers(0, 100))
def test_selective_copying(B, n, extra, V, seed):
    L = n + extra
    batch = selective_copying(B, n_tokens=n, seq_len=L, vocab_size=V, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, L + n)
    for b in range(B):
        region = x[b, :L].tolist()
        kept = [t for t in region if t != V]
        assert len(kept) == n and all(0 <= t < V for t in kept)
        assert x[b, L] == V + 1
        assert [y[b, t].item() for t in range(L + n) if m[b, t]] == kept
        assert m[b].tolist() == [False] * L + [True] * n


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), delay=st.integers(0, 12), k=st.integers(1, 4), V=st.integers(1, 6), seed=st.integers(0, 100))
def test_delayed_recall(B, delay, k, V, seed):
    batch = delayed_recall(B, delay=delay, vocab_size=V, n_remember=k, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, 2 * k + delay)
    for b in range(B):
        remembered = x[b, :k].tolist()
        assert x[b, k:k + delay].tolist() == [V] * delay and x[b, k + delay] == V + 1
        assert [y[b, t].item() for t in range(x.shape[1]) if m[b, t]] == remembered
        assert m[b].sum() == k and m[b, -k:].all()


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), L=st.integers(3, 20), V=st.integers(1, 6), seed=st.integers(0, 100))
def test_induction_heads(B, L, V, seed):
    batch = induction_heads(B, seq_len=L, vocab_size=V, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, L)
    for b in range(B):
        row = x[b].tolist()
        trigger_at = [t for t, tok in enumerate(row) if tok == V]
        assert len(trigger_at) == 2 and trigger_at[1] == L - 1 and trigger_at[0] <= L - 3
        assert y[b, L - 1] == row[trigger_at[0] + 1]
        assert m[b].tolist() == [False] * (L - 1) + [True]


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 3), N=st.integers(1, 8), V=st.integers(3, 6), kl=st.integers(1, 3), vl=st.integers(1, 3),
       fixed=st.booleans(), seed=st.integers(0, 100))
def test_key_value_lookup(B, N, V, kl, vl, fixed, seed):
    N = min(N, V ** kl)
    qp = N // 2 if fixed else None
    batch = key_value_lookup(B, n_pairs=N, vocab_size=V, key_len=kl, value_len=vl, query_pair=qp, generator=gen(seed))
    check_next_token_layout(batch)
    x, y, m = batch
    assert x.shape == (B, N * (kl + vl + 2) + kl + vl + 1)
    for b in range(B):
        z = x[b].tolist() + [y[b, -1].item()]
        book, i = {}, 0
        order = []
        while z[i] != V + 2:  # parse "key : value ," entries up to '?'
            key = tuple(z[i:i + kl])
            assert z[i + kl] == V and z[i + kl + 1 + vl] == V + 1
            assert key not in book
            book[key] = z[i + kl + 1:i + kl + 1 + vl]
            order.append(key)
            i += kl + vl + 2
        assert len(book) == N
        query = tuple(z[i + 1:i + 1 + kl])
        assert z[i + 1 + kl] == V
        if fixed:
            assert query == order[qp]
        assert [y[b, t].item() for t in range(x.shape[1]) if m[b, t]] == book[query]
        assert m[b].sum() == vl and m[b, -vl:].all()


def test_query_pair_covers_all_positions():
    seen = Counter()
    for s in range(20):
        x, y, m = key_value_lookup(8, n_pairs=5, vocab_size=4, generator=gen(s))
        for b in range(8):
            z = x[b].tolist()
            keys = [tuple(z[i:i + 2]) for i in range(0, 5 * 6, 6)]
            seen[keys.index(tuple(z[-4:-2]))] += 1
    assert set(seen) == set(range(5))


TASKS = {
    "copy_task": lambda g: copy_task(4, seq_len=6, vocab_size=5, generator=g),
    "associative_recall": lambda g: associative_recall(4, n_pairs=4, n_keys=8, n_values=8, generator=g),
    "selective_copying": lambda g: selective_copying(4, n_tokens=3, seq_len=10, vocab_size=5, generator=g),
    "delayed_recall": lambda g: delayed_recall(4, delay=5, vocab_size=5, n_remember=2, generator=g),
    "induction_heads": lambda g: induction_heads(4, seq_len=12, vocab_size=5, generator=g),
    "key_value_lookup": lambda g: key_value_lookup(4, n_pairs=4, vocab_size=5, generator=g),
    "reverse_task": lambda g: reverse_task(4, seq_len=6, vocab_size=5, generator=g),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_deterministic_per_generator(name):
    a, b, c = TASKS[name](gen(1)), TASKS[name](gen(1)), TASKS[name](gen(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


@pytest.mark.parametrize("call, name", [
    (lambda: copy_task(0, seq_len=3, vocab_size=4, generator=gen()), "batch_size"),
    (lambda: copy_task(2, seq_len=0, vocab_size=4, generator=gen()), "seq_len"),
    (lambda: reverse_task(2, seq_len=3, vocab_size=0, generator=gen()), "vocab_size"),
    (lambda: associative_recall(2, n_pairs=5, n_keys=4, n_values=4, generator=gen()), "n_pairs"),
    (lambda: associative_recall(2, n_pairs=3, n_keys=4, n_values=4, n_queries=4, generator=gen()), "n_queries"),
    (lambda: selective_copying(2, n_tokens=5, seq_len=4, vocab_size=4, generator=gen()), "n_tokens"),
    (lambda: delayed_recall(2, delay=-1, vocab_size=4, generator=gen()), "delay"),
    (lambda: induction_heads(2, seq_len=2, vocab_size=4, generator=gen()), "seq_len"),
    (lambda: key_value_lookup(2, n_pairs=17, vocab_size=4, key_len=2, generator=gen()), "n_pairs"),
    (lambda: key_value_lookup(2, n_pairs=3, vocab_size=4, query_pair=3, generator=gen()), "query_pair"),
    (lambda: meap_mask(torch.zeros(2, 3, dtype=torch.long), p=1.5, mask_id=9, generator=gen()), "p"),
    (lambda: meap_mask(torch.zeros(3, dtype=torch.long), p=0.1, mask_id=9, generator=gen()), "idx"),
    (lambda: meap_mask(torch.zeros(2, 3, dtype=torch.long), p=0.1, mask_id=9, generator=gen(),
                       protect=torch.zeros(4, dtype=torch.bool)), "protect"),
    (lambda: masked_targets(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)), "mask"),
])
def test_task_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_task_wrong_generator_type():
    with pytest.raises(TypeError, match="generator"):
        copy_task(2, seq_len=3, vocab_size=4, generator=0)


# ---------------------------------------------------------------- MEAP masking

def test_meap_mask_fraction_and_untouched_targets():
    x, y, m = key_value_lookup(64, n_pairs=6, vocab_size=6, generator=gen(0))
    x_before, y_before = x.clone(), y.clone()
    mask_id = 6 + 3
    xm = meap_mask(x, p=0.1, mask_id=mask_id, generator=gen(1))
    assert torch.equal(x, x_before) and torch.equal(y, y_before)  # inputs not modified, targets untouched
    T = x.shape[1]
    changed = xm != x
    assert torch.equal(changed, xm == mask_id)
    for b in range(64):
        assert changed[b].sum().item() == round(0.1 * T)
        for t in range(T):
            assert xm[b, t] == (mask_id if changed[b, t] else x[b, t])
    # positions are spread over the whole row, not a fixed set
    assert (changed.sum(0) > 0).sum() > 0.8 * T


def test_meap_mask_protect_and_extremes():
    idx = torch.arange(40).reshape(2, 20)
    protect = torch.zeros(20, dtype=torch.bool)
    protect[-5:] = True
    out = meap_mask(idx, p=1.0, mask_id=-1, generator=gen(0), protect=protect)
    assert (out[:, :15] == -1).all() and torch.equal(out[:, 15:], idx[:, 15:])
    assert torch.equal(meap_mask(idx, p=0.0, mask_id=-1, generator=gen(0)), idx)
    half = meap_mask(idx, p=0.5, mask_id=-1, generator=gen(0), protect=protect)
    assert ((half[:, :15] == -1).sum(1) == round(0.5 * 15)).all() and torch.equal(half[:, 15:], idx[:, 15:])
    a = meap_mask(idx, p=0.3, mask_id=-1, generator=gen(3))
    assert torch.equal(a, meap_mask(idx, p=0.3, mask_id=-1, generator=gen(3)))
    assert not torch.equal(a, meap_mask(idx, p=0.3, mask_id=-1, generator=gen(4)))


def test_masked_targets_marks_ignored_positions():
    _, y, m = copy_task(3, seq_len=4, vocab_size=5, generator=gen(0))
    out = masked_targets(y, m)
    for b in range(3):
        for t in range(8):
            assert out[b, t] == (y[b, t] if m[b, t] else IGNORE_INDEX)
    logits = torch.randn(3, 8, 6, dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 6), out.reshape(-1))
    ref = -torch.log_softmax(logits, -1).gather(2, y[..., None])[..., 0][m].mean()
    torch.testing.assert_close(loss, ref)


# ---------------------------------------------------------------------------- digits

def test_digits_split_is_a_seeded_partition_of_all_images():
    from sklearn.datasets import load_digits

    from minilib.data import digits_split

    (xtr, ytr), (xte, yte) = digits_split(n_test=300, seed=3)
    assert xtr.shape == (1497, 8, 8) and xte.shape == (300, 8, 8) and ytr.shape == (1497,)
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0
    everything = torch.cat([xtr, xte]).reshape(len(ytr) + len(yte), -1) * 16
    reference = torch.tensor(load_digits().data, dtype=torch.float32)
    assert sorted(map(tuple, everything.tolist())) == sorted(map(tuple, reference.tolist()))  # each image once
    (_, _), (xte2, yte2) = digits_split(n_test=300, seed=3)
    assert torch.equal(xte, xte2) and torch.equal(yte, yte2)
    with pytest.raises(ValueError, match="n_test"):
        digits_split(n_test=5000)


def test_labelled_batches_draw_matching_rows():
    from minilib.data import labelled_batches

    x = torch.arange(10.0)[:, None].repeat(1, 3)
    y = torch.arange(10)
    xb, yb = next(labelled_batches(x, y, batch_size=7, generator=torch.Generator().manual_seed(0)))
    assert xb.shape == (7, 3) and torch.equal(xb[:, 0].long(), yb)
    with pytest.raises(ValueError, match="batch_size"):
        next(labelled_batches(x, y, batch_size=0, generator=torch.Generator()))
    with pytest.raises(ValueError, match="same non-zero number of rows"):
        next(labelled_batches(x, y[:3], batch_size=2, generator=torch.Generator()))


@pytest.mark.parametrize("call, name", [
    (lambda g: lm_batches(torch.arange(50), batch_size=True, seq_len=4, generator=g), "batch_size"),
    (lambda g: lm_eval_windows(torch.arange(50), seq_len=0), "seq_len"),
    (lambda g: copy_task(2, seq_len=True, vocab_size=5, generator=g), "seq_len"),
    (lambda g: induction_heads(2, seq_len=2, vocab_size=5, generator=g), "seq_len must be an int >= 3"),
    (lambda g: delayed_recall(2, delay=-1, vocab_size=5, generator=g), "delay"),
    (lambda g: MarkovTextSource(*english_like_grammar()).sample(True, seed=0), "n_chars"),
])
def test_sizes_are_checked_by_name(call, name):
    with pytest.raises(ValueError, match=name):
        call(torch.Generator().manual_seed(0))


def test_token_ids_are_checked_by_name():
    with pytest.raises(TypeError, match="ids must hold integer token ids"):
        lm_eval_windows(torch.ones(10), seq_len=2)
    with pytest.raises(ValueError, match=r"ids must have 1 dimensions, got shape \(2, 5\)"):
        train_val_split(torch.zeros(2, 5, dtype=torch.long))
