"""The MetaFormer comparison's tasks, labels recomputed by loops, its parameter matching and its training loop."""
import pytest
import torch

from minilib.mixers import MetaFormer
from minilib.experiments import count_parameters
from minilib.mixers.zoo import BIGRAMS, TASKS, ZOO, build_classifier, make_task, matched_d_ff, train_classifier


def test_bigram_labels_are_the_most_frequent_bigram_without_ties():
    task = make_task("bigrams", n_train=50, n_test=10, seed=3)
    x, y = task.train
    assert x.shape == (50, 24) and set(y.tolist()) <= {0, 1, 2, 3}
    for row, label in zip(x.tolist(), y.tolist()):
        counts = [sum(1 for t in range(23) if (row[t], row[t + 1]) == bigram) for bigram in BIGRAMS]
        assert counts[label] == max(counts) and counts.count(max(counts)) == 1


def test_recall_labels_are_the_value_bound_to_the_query_key():
    task = make_task("recall", n_train=40, n_test=10, seed=1)
    x, y = task.train
    assert x.shape == (40, 9) and task.readout == "last"
    for row, label in zip(x.tolist(), y.tolist()):
        pairs = {tok // 8: tok % 8 for tok in row[:-1]}
        assert len(pairs) == 8  # distinct keys
        assert pairs[row[-1] - 128] == label


@pytest.mark.parametrize("task_name", TASKS)
def test_every_mixer_is_matched_to_the_attention_budget_within_5_percent(task_name):
    task = make_task(task_name, n_train=8, n_test=8)
    target = count_parameters(build_classifier("attention", task))
    for mixer in ZOO:
        model = build_classifier(mixer, task, d_ff=matched_d_ff(mixer, task, target))
        assert isinstance(model, MetaFormer)
        assert abs(count_parameters(model) / target - 1) < 0.05, mixer
        assert model(task.test[0][:3]).shape == (3, task.n_classes)


def test_training_beats_chance_on_digits_quickly():
    torch.manual_seed(0)
    task = make_task("digits")
    acc = train_classifier(build_classifier("pool", task), task, steps=60, seed=0)
    assert acc > 0.5  # chance is 0.1


def test_bad_names_fail_clearly():
    with pytest.raises(ValueError, match="name must be one of"):
        make_task("mnist")
    with pytest.raises(ValueError, match="mixer must be one of"):
        build_classifier("hyena", make_task("digits"))


def test_listops_labels_are_the_value_of_each_expression():
    from minilib.data import listops_value

    task = make_task("listops", n_train=6, n_test=4)
    for x, y in (task.train, task.test):
        assert x.shape[1] == task.seq_len == 64 and task.readout == "last"
        assert [listops_value(row.tolist()) for row in x] == y.tolist()
