from .corpus import Emission, MarkovTextSource, english_like_grammar, tiny_corpus
from .tokenizers import CharTokenizer, WordTokenizer
from .batching import lm_batches, lm_eval_windows, train_val_split
from .tasks import (IGNORE_INDEX, Seq2SeqBatch, TaskBatch, associative_recall, copy_task, delayed_recall,
                    induction_heads, key_value_lookup, masked_targets, meap_mask, reverse_task, selective_copying)
