"""Data for The Transformer Zoo: a generated corpus with an exact entropy rate, tokenizers,
language-model batches, and the synthetic tasks later chapters reuse.

- :mod:`minilib.data.corpus`: :class:`MarkovTextSource`, :func:`english_like_grammar`, :func:`tiny_corpus`;
- :mod:`minilib.data.tokenizers`: :class:`CharTokenizer`, :class:`WordTokenizer`;
- :mod:`minilib.data.batching`: :func:`lm_batches`, :func:`train_val_split`, :func:`lm_eval_windows`;
- :mod:`minilib.data.tasks`: copy, reversal, associative recall, selective copying, delayed recall,
  induction heads, key-value lookup, and :func:`meap_mask`;
- :mod:`minilib.data.arithmetic`: modular expressions with and without chain-of-thought steps, :func:`arith_tasks`;
  letter counting with character or merged tokens, :func:`letter_counting`;
- :mod:`minilib.data.long_range`: mini Long Range Arena tasks, :func:`lra_listops`, :func:`lra_retrieval`,
  :func:`needle_retrieval`, :func:`marked_parity`;
- :mod:`minilib.data.digits`: scikit-learn's 8x8 digits, :func:`digits_split`, :func:`labelled_batches`.

Typical use in a chapter::

    text, source = tiny_corpus(200_000, seed=0)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), 0.1)
    batches = lm_batches(train_ids, batch_size=32, seq_len=128, generator=torch.Generator().manual_seed(0))
    floor = source.entropy_rate_per_char()      # nats/char, the loss no model can beat
    baseline = source.char_unigram_entropy()    # nats/char, letter frequencies only
"""
from .arithmetic import MERGED_PIECES, arith_tasks, letter_counting
from .batching import lm_batches, lm_eval_windows, train_val_split
from .digits import digits_split, labelled_batches
from .long_range import LISTOPS_TOKENS, listops_value, lra_listops, lra_retrieval, marked_parity, needle_retrieval
from .corpus import Emission, MarkovTextSource, english_like_grammar, tiny_corpus
from .tasks import (IGNORE_INDEX, Seq2SeqBatch, TaskBatch, associative_recall, copy_task, delayed_recall,
                    induction_heads, key_value_lookup, masked_targets, meap_mask, reverse_task, selective_copying)
from .tokenizers import CharTokenizer, WordTokenizer

__all__ = [
    "CharTokenizer", "arith_tasks", "letter_counting", "MERGED_PIECES", "Emission", "IGNORE_INDEX", "LISTOPS_TOKENS", "MarkovTextSource", "Seq2SeqBatch", "TaskBatch", "WordTokenizer",
    "associative_recall", "copy_task", "delayed_recall", "digits_split", "english_like_grammar", "induction_heads",
    "key_value_lookup", "labelled_batches", "listops_value", "lm_batches", "lm_eval_windows", "lra_listops", "lra_retrieval",
    "marked_parity", "masked_targets", "meap_mask", "needle_retrieval", "reverse_task",
    "selective_copying", "tiny_corpus", "train_val_split",
]
