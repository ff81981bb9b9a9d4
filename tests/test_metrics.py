"""Metrics (per-sample values, reduce, drop, resolve_metric) and evaluate() on tiny deterministic models."""

from __future__ import annotations

import functools
import math
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch

from pytest_ovquant.errors import ConfigError
from pytest_ovquant.measure.evaluation import EvaluationError, MetricResult, count_samples, evaluate
from pytest_ovquant.measure.metrics import BUILTIN, SQNR_CEILING_DB, Metric, resolve_metric, topk

SOURCE = "@pytest.mark.ovq_accuracy on tests/test_x.py::test_a"

# 4 samples, 3 classes; top-1 indices: 1, 0, 2, 0; the label is in the top 2 for every row.
LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.0],
        [0.8, 0.1, 0.1],
        [0.2, 0.3, 0.5],
        [0.5, 0.4, 0.1],
    ]
)
LABELS = torch.tensor([1, 0, 1, 1])


def per_sample(name: str, outputs, targets=None, fp32=None) -> list[float]:
    return resolve_metric(name, SOURCE).per_sample(outputs, targets, fp32).tolist()


# ---------------------------------------------------------------------------------------------
# top-k


def test_top1_known_answers():
    assert per_sample("top1", LOGITS, LABELS) == [1.0, 1.0, 0.0, 0.0]


def test_top2_known_answers():
    assert per_sample("top2", LOGITS, LABELS) == [1.0, 1.0, 1.0, 1.0]
    # label 0 is the last of the three classes in rows 0 and 2
    assert per_sample("top2", LOGITS, torch.tensor([2, 0, 0, 2])) == [0.0, 1.0, 0.0, 0.0]


def test_top_k_with_k_equal_to_classes_always_hits():
    assert per_sample("top3", LOGITS, torch.tensor([2, 2, 0, 2])) == [1.0, 1.0, 1.0, 1.0]


def test_top1_values_are_float64_one_per_sample():
    values = resolve_metric("top1", SOURCE).per_sample(LOGITS, LABELS, None)
    assert values.dtype == torch.float64
    assert values.shape == (4,)


def test_top1_tie_counts_exactly_one_of_the_tied_classes():
    tied = torch.tensor([[3.0, 3.0, 1.0]])
    hits = [per_sample("top1", tied, torch.tensor([label]))[0] for label in range(3)]
    assert sum(hits) == 1.0  # one of the two tied classes, never both, never the third
    assert hits[2] == 0.0


def test_top2_tie_covered_by_k_hits_both_tied_classes():
    tied = torch.tensor([[3.0, 3.0, 1.0, 0.0]])
    assert [per_sample("top2", tied, torch.tensor([label]))[0] for label in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_top1_tie_below_the_top_does_not_matter():
    logits = torch.tensor([[5.0, 1.0, 1.0]])
    assert per_sample("top1", logits, torch.tensor([0])) == [1.0]
    assert per_sample("top1", logits, torch.tensor([1])) == [0.0]


def test_top1_logits_with_extra_dims_are_flattened_per_sample():
    four_d = LOGITS.reshape(4, 3, 1, 1)
    assert per_sample("top1", four_d, LABELS) == [1.0, 1.0, 0.0, 0.0]
    three_d = LOGITS.reshape(4, 1, 3)
    assert per_sample("top1", three_d, LABELS) == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda t: (t, torch.zeros(1)), id="tuple"),
        pytest.param(lambda t: [t], id="list"),
        pytest.param(lambda t: {"logits": t, "aux": torch.zeros(1)}, id="dict"),
        pytest.param(lambda t: SimpleNamespace(logits=t), id="object-with-logits"),
        pytest.param(lambda t: namedtuple("Out", "loss logits")(torch.zeros(1), t), id="namedtuple-logits"),
    ],
)
def test_top1_takes_logits_from_structured_outputs(wrap):
    assert per_sample("top1", wrap(LOGITS), LABELS) == [1.0, 1.0, 0.0, 0.0]


def test_outputs_without_a_tensor_raise_type_error():
    with pytest.raises(TypeError, match="str"):
        per_sample("top1", "not a tensor", LABELS)


def test_targets_as_list_are_accepted():
    assert per_sample("top1", LOGITS, [1, 0, 1, 1]) == [1.0, 1.0, 0.0, 0.0]


def test_wrong_number_of_targets_names_the_metric():
    with pytest.raises(ValueError, match=r"top1: 3 targets for a batch of 4"):
        per_sample("top1", LOGITS, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"top2: 5 targets for a batch of 4"):
        per_sample("top2", LOGITS, torch.tensor([1, 0, 1, 1, 0]))


def test_top_k_larger_than_classes_raises():
    with pytest.raises(ValueError, match=r"top5: outputs have only 3 classes"):
        per_sample("top5", LOGITS, LABELS)


def test_targets_none_raises_mentioning_pairs():
    with pytest.raises(ValueError, match=r"top1 needs targets.*\(inputs, target\)"):
        per_sample("top1", LOGITS, None)


# ---------------------------------------------------------------------------------------------
# fidelity metrics


def test_identical_outputs_are_ideal():
    out = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -4.0]])
    assert per_sample("cosine", out, None, out.clone()) == pytest.approx([1.0, 1.0])
    assert per_sample("max_abs_error", out, None, out.clone()) == [0.0, 0.0]
    assert per_sample("sqnr", out, None, out.clone()) == [SQNR_CEILING_DB, SQNR_CEILING_DB]


def test_cosine_known_values():
    int8 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [3.0, 6.0]])
    fp32 = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    assert per_sample("cosine", int8, None, fp32) == pytest.approx([0.0, 1 / math.sqrt(2), -1.0, 1.0])


def test_sqnr_known_values_in_db():
    fp32 = torch.tensor([[3.0, 4.0], [1.0, 3.0]])  # signal 25, 10
    int8 = torch.tensor([[3.5, 4.0], [2.0, 3.0]])  # noise 0.25, 1
    assert per_sample("sqnr", int8, None, fp32) == pytest.approx([20.0, 10.0])


def test_max_abs_error_known_values_and_aggregate_max():
    fp32 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    int8 = torch.tensor([[1.5, 2.0, 2.0], [0.0, -0.25, 0.0]])
    values = BUILTIN["max_abs_error"].per_sample(int8, None, fp32)
    assert values.tolist() == [1.0, 0.25]
    assert BUILTIN["max_abs_error"].reduce(values) == 1.0


def test_fidelity_metrics_flatten_extra_dims_per_sample():
    fp32 = torch.tensor([[3.0, 4.0], [1.0, 3.0]]).reshape(2, 1, 2)
    int8 = torch.tensor([[3.5, 4.0], [2.0, 3.0]]).reshape(2, 1, 2)
    assert per_sample("sqnr", int8, None, fp32) == pytest.approx([20.0, 10.0])


@pytest.mark.parametrize("name", ["cosine", "sqnr", "max_abs_error"])
def test_fidelity_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match=rf"{name}: INT8 output shape \(2, 3\) != FP32 \(2, 4\)"):
        per_sample(name, torch.zeros(2, 3), None, torch.zeros(2, 4))


@pytest.mark.parametrize("name", ["cosine", "sqnr", "max_abs_error"])
def test_fidelity_without_fp32_outputs_raises(name):
    with pytest.raises(ValueError, match=rf"{name} compares with FP32 outputs"):
        per_sample(name, torch.zeros(2, 3), None, None)


def test_sqnr_identical_zero_outputs_is_not_worst():
    zeros = torch.zeros(2, 3)
    values = per_sample("sqnr", zeros, None, zeros.clone())
    assert all(v > 0 for v in values)


def test_cosine_identical_zero_outputs_is_one():
    zeros = torch.zeros(2, 3)
    assert per_sample("cosine", zeros, None, zeros.clone()) == pytest.approx([1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Metric.reduce / Metric.drop


def test_reduce_mean_max_min():
    values = torch.tensor([1.0, 0.0, 0.5, 0.5])
    mean = Metric("m", "task", True, lambda o, t, f: o)
    assert mean.reduce(values) == 0.5
    assert Metric("m", "task", True, lambda o, t, f: o, aggregate="max").reduce(values) == 1.0
    assert Metric("m", "task", True, lambda o, t, f: o, aggregate="min").reduce(values) == 0.0


def test_reduce_is_done_in_double_precision():
    values = torch.full((3,), 1 / 3, dtype=torch.float32)
    assert isinstance(BUILTIN["top1"].reduce(values), float)
    assert BUILTIN["top1"].reduce(torch.tensor([1, 0, 0])) == pytest.approx(1 / 3, abs=1e-15)


def test_reduce_of_no_samples_raises_naming_the_metric():
    with pytest.raises(ValueError, match="metric top1: no samples"):
        BUILTIN["top1"].reduce(torch.empty(0))


def test_builtin_aggregates():
    assert BUILTIN["max_abs_error"].aggregate == "max"
    assert BUILTIN["cosine"].aggregate == "mean"
    assert BUILTIN["sqnr"].aggregate == "mean"


def test_drop_higher_is_better_is_fp32_minus_int8():
    assert BUILTIN["top1"].drop(0.75, 0.5) == 0.25
    assert BUILTIN["top1"].drop(0.5, 0.75) == -0.25  # INT8 better: negative drop
    assert BUILTIN["cosine"].drop(1.0, 0.75) == 0.25


def test_drop_lower_is_better_is_int8_minus_fp32():
    assert BUILTIN["max_abs_error"].higher_is_better is False
    assert BUILTIN["max_abs_error"].drop(0.0, 0.25) == 0.25
    assert BUILTIN["max_abs_error"].drop(0.5, 0.25) == -0.25


def test_drop_is_none_without_fp32_value():
    assert BUILTIN["sqnr"].drop(None, 30.0) is None
    assert BUILTIN["top1"].drop(None, 0.5) is None
    assert BUILTIN["sqnr"].drop(math.inf, 30.0) is None


# ---------------------------------------------------------------------------------------------
# resolve_metric


@pytest.mark.parametrize("name", ["top1", "top5", "cosine", "sqnr", "max_abs_error"])
def test_resolve_builtin_names(name):
    metric = resolve_metric(name, SOURCE)
    assert metric is BUILTIN[name]
    assert metric.name == name


def test_builtin_kinds_and_ideals():
    assert (BUILTIN["top1"].kind, BUILTIN["top1"].higher_is_better, BUILTIN["top1"].ideal) == ("task", True, None)
    assert (BUILTIN["cosine"].kind, BUILTIN["cosine"].ideal) == ("fidelity", 1.0)
    assert (BUILTIN["sqnr"].kind, BUILTIN["sqnr"].ideal) == ("fidelity", None)
    assert (BUILTIN["max_abs_error"].kind, BUILTIN["max_abs_error"].ideal) == ("fidelity", 0.0)


def test_resolve_top_k():
    metric = resolve_metric("top3", SOURCE)
    assert (metric.name, metric.kind, metric.higher_is_better) == ("top3", "task", True)
    assert metric.per_sample(LOGITS, torch.tensor([2, 2, 0, 2]), None).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert resolve_metric("top10", SOURCE).name == "top10"


def test_resolve_metric_instance_passes_through():
    metric = topk(2)
    assert resolve_metric(metric, SOURCE) is metric


@pytest.mark.parametrize("name", ["accuracy", "top0", "Top1", "top", "top-1", ""])
def test_resolve_unknown_name_lists_builtins_and_names_source(name):
    with pytest.raises(ConfigError) as info:
        resolve_metric(name, SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE)
    assert repr(name) in message
    for builtin in BUILTIN:
        assert builtin in message
    assert "topK" in message


def test_resolve_callable_returning_per_sample_tensor():
    def my_accuracy(outputs, targets):
        return (outputs.argmax(dim=1) == targets).int()

    metric = resolve_metric(my_accuracy, SOURCE)
    assert (metric.name, metric.kind, metric.higher_is_better) == ("my_accuracy", "task", True)
    values = metric.per_sample(LOGITS, LABELS, None)
    assert values.dtype == torch.float64
    assert values.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_resolve_callable_returning_float():
    def batch_score(outputs, targets):
        return 0.75

    metric = resolve_metric(batch_score, SOURCE)
    assert metric.name == "batch_score"
    # one number for the chunk counts once per sample in it
    assert metric.per_sample(LOGITS, LABELS, None).tolist() == [0.75] * LOGITS.shape[0]


def test_resolve_callable_without_name_uses_type_name():
    metric = resolve_metric(functools.partial(lambda o, t, scale: scale, scale=1.0), SOURCE)
    assert metric.name == "partial"


@pytest.mark.parametrize("spec", [42, None, 1.5, ["top1"]])
def test_resolve_non_callable_raises_naming_source(spec):
    with pytest.raises(ConfigError, match="must be a metric name or a callable") as info:
        resolve_metric(spec, SOURCE)
    assert str(info.value).startswith(SOURCE)


# ---------------------------------------------------------------------------------------------
# evaluate()

# Linear(3, 3) without bias: FP32 weight = identity (logits = inputs); the "INT8" model halves
# class 0's logit. Top-1 hits: FP32 [1, 1, 1, 0] (0.75), INT8 [0, 1, 1, 0] (0.5).
X = torch.tensor(
    [
        [1.0, 0.8, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.9, 1.0, 0.0],
    ]
)
Y = torch.tensor([0, 1, 2, 0])
FP32_HITS = [1.0, 1.0, 1.0, 0.0]
INT8_HITS = [0.0, 1.0, 1.0, 0.0]


def linear(weight: torch.Tensor) -> torch.nn.Module:
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    return model.eval()


def fp32_model() -> torch.nn.Module:
    return linear(torch.eye(3))


def int8_model() -> torch.nn.Module:
    return linear(torch.diag(torch.tensor([0.5, 1.0, 1.0])))


class Recorder:
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model):
        self.model = model
        self.batches: list[int] = []
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, *args):
        self.batches.append(args[0].shape[0])
        self.calls.append(tuple(a.clone() for a in args))
        return self.model(*args)


def dataset(sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, start = [], 0
    for size in sizes:
        out.append((X[start : start + size], Y[start : start + size]))
        start += size
    assert start == len(X)
    return out


@pytest.mark.parametrize("sizes", [[4], [1, 1, 1, 1], [3, 1], [1, 3], [2, 2]])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 8])
def test_evaluate_top1_per_sample_for_any_batching(sizes, batch_size):
    int8 = Recorder(int8_model())
    results = evaluate(fp32_model(), int8, dataset(sizes), [BUILTIN["top1"]], batch_size=batch_size)
    result = results["top1"]
    assert isinstance(result, MetricResult)
    assert result.fp32_samples.tolist() == FP32_HITS
    assert result.int8_samples.tolist() == INT8_HITS
    assert (result.fp32, result.int8, result.drop) == (0.75, 0.5, 0.25)
    assert result.samples == 4
    assert all(1 <= b <= batch_size for b in int8.batches)
    assert sum(int8.batches) == 4


def test_evaluate_chunks_each_item_to_batch_size():
    fp32, int8 = Recorder(fp32_model()), Recorder(int8_model())
    evaluate(fp32, int8, dataset([3, 1]), [BUILTIN["top1"]], batch_size=2)
    assert int8.batches == [2, 1, 1]
    assert fp32.batches == [2, 1, 1]
    # both models see the same samples, in order
    assert torch.equal(torch.cat([c[0] for c in int8.calls]), X)
    assert torch.equal(torch.cat([c[0] for c in fp32.calls]), X)


def test_evaluate_batch_size_below_one_is_treated_as_one():
    int8 = Recorder(int8_model())
    results = evaluate(fp32_model(), int8, dataset([4]), [BUILTIN["top1"]], batch_size=0)
    assert int8.batches == [1, 1, 1, 1]
    assert results["top1"].int8 == 0.5


def test_evaluate_several_metrics_at_once():
    metrics = [BUILTIN["top1"], resolve_metric("top2", SOURCE), BUILTIN["cosine"], BUILTIN["max_abs_error"]]
    results = evaluate(fp32_model(), int8_model(), dataset([2, 2]), metrics, batch_size=2)
    assert set(results) == {"top1", "top2", "cosine", "max_abs_error"}
    assert results["top2"].fp32 == 1.0
    assert results["top2"].int8_samples.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_evaluate_fidelity_metric_fp32_is_ideal():
    metrics = [BUILTIN["cosine"], BUILTIN["max_abs_error"], BUILTIN["sqnr"]]
    results = evaluate(fp32_model(), int8_model(), dataset([3, 1]), metrics, batch_size=2)
    cosine, max_abs, sqnr = results["cosine"], results["max_abs_error"], results["sqnr"]
    assert cosine.fp32 == 1.0 and cosine.fp32_samples is None
    assert max_abs.fp32 == 0.0 and max_abs.fp32_samples is None
    assert sqnr.fp32 is None and sqnr.drop is None
    assert cosine.samples == max_abs.samples == sqnr.samples == 4
    # INT8 differs from FP32 only in logit 0, by half of input 0
    assert max_abs.int8_samples.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.45])
    assert max_abs.int8 == 0.5
    assert max_abs.drop == 0.5
    with torch.no_grad():
        expected_cos = torch.nn.functional.cosine_similarity(int8_model()(X).double(), X.double(), dim=1)
    assert cosine.int8_samples.tolist() == pytest.approx(expected_cos.tolist())
    assert cosine.int8 == pytest.approx(float(expected_cos.mean()))
    assert cosine.drop == pytest.approx(1.0 - float(expected_cos.mean()))
    assert sqnr.int8_samples[1].item() == SQNR_CEILING_DB  # identical sample


def test_evaluate_fidelity_metric_accepts_target_none():
    results = evaluate(fp32_model(), int8_model(), [(X[:2], None), (X[2:], None)], [BUILTIN["cosine"]], batch_size=1)
    assert results["cosine"].samples == 4


def test_evaluate_task_metric_callable():
    def hits(outputs, targets):
        return outputs.argmax(dim=1) == targets

    results = evaluate(fp32_model(), int8_model(), dataset([3, 1]), [resolve_metric(hits, SOURCE)], batch_size=2)
    result = results["hits"]
    assert result.fp32_samples.tolist() == FP32_HITS
    assert result.int8_samples.tolist() == INT8_HITS
    assert (result.fp32, result.int8) == (0.75, 0.5)


def test_evaluate_model_with_tuple_outputs():
    fp32 = fp32_model()
    int8 = int8_model()
    results = evaluate(
        lambda x: (fp32(x), None), lambda x: {"logits": int8(x)}, dataset([4]), [BUILTIN["top1"]], batch_size=4
    )
    assert (results["top1"].fp32, results["top1"].int8) == (0.75, 0.5)


def test_evaluate_multi_tensor_inputs_are_sliced_consistently():
    a = X
    b = torch.arange(4, dtype=torch.float32).reshape(4, 1)  # sample index

    def model(x, index):  # logits = x; index checks that both inputs are the same samples
        return x + 0.0 * index

    fp32, int8 = Recorder(model), Recorder(model)
    results = evaluate(fp32, int8, [((a[:3], b[:3]), Y[:3]), ((a[3:], b[3:]), Y[3:])], [BUILTIN["top1"]], batch_size=2)
    assert int8.batches == [2, 1, 1]
    for first, second in int8.calls:
        assert first.shape[0] == second.shape[0]
    assert torch.equal(torch.cat([c[0] for c in int8.calls]), a)
    assert torch.equal(torch.cat([c[1] for c in int8.calls]), b)
    assert results["top1"].int8_samples.tolist() == FP32_HITS


def test_evaluate_inputs_as_list_of_tensors():
    int8 = Recorder(lambda x, y: x + y)
    results = evaluate(lambda x, y: x + y, int8, [([X, torch.zeros(4, 3)], Y)], [BUILTIN["top1"]], batch_size=3)
    assert int8.batches == [3, 1]
    assert results["top1"].int8 == 0.75


@pytest.mark.parametrize(
    "bad_item, kind",
    [
        pytest.param(X[:1], "Tensor", id="bare-tensor"),
        pytest.param((X[:1], Y[:1], None), "tuple", id="triple"),
        pytest.param((X[:1],), "tuple", id="single"),
        pytest.param({"x": X[:1]}, "dict", id="dict"),
    ],
)
def test_evaluate_item_not_a_pair_names_the_index(bad_item, kind):
    data = [(X[:1], Y[:1]), bad_item]
    with pytest.raises(EvaluationError, match=rf"evaluation item 1 is a {kind}, not an \(inputs, target\) pair"):
        evaluate(fp32_model(), int8_model(), data, [BUILTIN["top1"]], batch_size=1)


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([[1.0, 0.0, 0.0]], id="nested-list"),
        pytest.param("abc", id="string"),
        pytest.param((), id="empty-tuple"),
        pytest.param((X[:1], [1.0]), id="tuple-with-non-tensor"),
        pytest.param(None, id="none"),
    ],
)
def test_evaluate_inputs_not_tensors(inputs):
    with pytest.raises(EvaluationError, match="not a tensor or a tuple of tensors"):
        evaluate(fp32_model(), int8_model(), [(inputs, Y[:1])], [BUILTIN["top1"]], batch_size=1)


def test_evaluate_empty_dataset():
    with pytest.raises(EvaluationError, match="empty"):
        evaluate(fp32_model(), int8_model(), [], [BUILTIN["top1"]], batch_size=1)
    with pytest.raises(EvaluationError, match="empty"):
        evaluate(fp32_model(), int8_model(), iter([]), [BUILTIN["cosine"]], batch_size=1)


def test_evaluate_dataset_of_zero_sample_batches_is_empty():
    with pytest.raises(EvaluationError, match="empty"):
        evaluate(fp32_model(), int8_model(), [(X[:0], Y[:0])], [BUILTIN["top1"]], batch_size=1)


def test_evaluate_fewer_targets_than_samples_names_the_item():
    data = [(X[:2], Y[:2]), (X[2:4], Y[2:3])]
    with pytest.raises(EvaluationError, match=r"evaluation item 1: 1 targets for 2 input samples"):
        evaluate(fp32_model(), int8_model(), data, [BUILTIN["top1"]], batch_size=2)


def test_evaluate_missing_targets_for_task_metric_names_the_item():
    with pytest.raises(EvaluationError, match=r"evaluation item 0: .*needs targets"):
        evaluate(fp32_model(), int8_model(), [(X, None)], [BUILTIN["top1"]], batch_size=4)


def test_evaluate_error_from_model_output_shape_names_the_item():
    data = [(X[:2], Y[:2]), (X[2:], Y[2:])]
    calls = []

    def bad_int8(x):
        calls.append(x)
        return x if len(calls) == 1 else x[:, :2]

    with pytest.raises(EvaluationError, match=r"evaluation item 1: metric cosine: INT8 output shape"):
        evaluate(fp32_model(), bad_int8, data, [BUILTIN["cosine"]], batch_size=2)


def test_evaluate_more_targets_than_samples_names_the_item():
    data = [(X[:2], Y[:2]), (X[2:3], Y[2:4])]  # item 1: 1 sample, 2 labels
    with pytest.raises(EvaluationError, match="evaluation item 1"):
        evaluate(fp32_model(), int8_model(), data, [BUILTIN["top1"]], batch_size=2)


def test_evaluate_list_targets_are_chunked_with_the_inputs():
    results = evaluate(fp32_model(), int8_model(), [(X, Y.tolist())], [BUILTIN["top1"]], batch_size=1)
    assert results["top1"].int8_samples.tolist() == INT8_HITS


def test_evaluate_list_targets_without_chunking():
    results = evaluate(fp32_model(), int8_model(), [(X, Y.tolist())], [BUILTIN["top1"]], batch_size=4)
    assert results["top1"].int8_samples.tolist() == INT8_HITS


def test_evaluate_float_metric_does_not_depend_on_chunking():
    def batch_accuracy(outputs, targets):
        return float((outputs.argmax(dim=1) == targets).double().mean())

    metric = resolve_metric(batch_accuracy, SOURCE)
    data = dataset([4])  # INT8 hits [0, 1, 1, 0]
    by_one = evaluate(fp32_model(), int8_model(), data, [metric], batch_size=1)["batch_accuracy"]
    by_three = evaluate(fp32_model(), int8_model(), data, [metric], batch_size=3)["batch_accuracy"]
    assert by_one.int8 == 0.5
    assert by_three.int8 == pytest.approx(by_one.int8)  # observed: mean(2/3, 0) = 1/3


class ProgressRecorder:
    def __init__(self):
        self.counts: list[int] = []
        self.closed = 0

    def __call__(self, done: int) -> None:
        assert self.closed == 0, "progress called after close()"
        self.counts.append(done)

    def close(self) -> None:
        self.closed += 1


def test_evaluate_progress_counts_sum_to_samples_and_close_is_called():
    progress = ProgressRecorder()
    evaluate(fp32_model(), int8_model(), dataset([3, 1]), [BUILTIN["top1"]], batch_size=2, progress=progress)
    assert progress.counts == [2, 1, 1]
    assert sum(progress.counts) == 4
    assert progress.closed == 1


def test_evaluate_progress_plain_function_without_close():
    counts: list[int] = []
    evaluate(fp32_model(), int8_model(), dataset([1, 3]), [BUILTIN["top1"]], batch_size=4, progress=counts.append)
    assert counts == [1, 3]


def test_evaluate_progress_closed_on_empty_dataset():
    progress = ProgressRecorder()
    with pytest.raises(EvaluationError):
        evaluate(fp32_model(), int8_model(), [], [BUILTIN["top1"]], progress=progress)
    assert progress.counts == []
    assert progress.closed == 1


def test_evaluate_runs_without_grad():
    grad_enabled = []

    def model(x):
        grad_enabled.append(torch.is_grad_enabled())
        return x

    evaluate(model, model, dataset([4]), [BUILTIN["top1"]], batch_size=4)
    assert grad_enabled == [False, False]


def test_count_samples():
    assert count_samples(dataset([3, 1])) == 4
    assert count_samples([((X[:2], X[:2]), Y[:2]), (X[2:], Y[2:])]) == 4
    assert count_samples(iter(dataset([4]))) is None  # not sized
    assert count_samples([("not a tensor", None)]) is None
    assert count_samples([]) == 0
