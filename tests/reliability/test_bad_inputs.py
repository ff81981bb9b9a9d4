"""Bad inputs, where a user meets them: every one gets an error (or failure, or report line) that
names the thing that is wrong and the way out, the run ends normally (no INTERNALERROR, no crash
traceback out of the plugin's hooks), and nothing on disk is lost or half-written.

Most scenarios run in real pytest sessions written with pytester, grouped so that one subprocess
covers many bad inputs (the tiny CNN is built once per session; bad inputs fail before or after
it). Sessions that only configure (bad options, an unusable cache directory) run in-process.
The table of cases and the tests that check them: docs/bad_inputs.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from small_models import FIDELITY_EVAL_FIXTURE, TINY_CNN_SOURCE, tiny_cnn_project

from pytest_ovquant import compat
from pytest_ovquant.config import QuantizeConfig
from pytest_ovquant.gate_runner import GatePlan, UpdateMode, run_gates
from pytest_ovquant.gates import parse_accuracy
from pytest_ovquant.references import MetricValues, ReferenceStore, TestReference

REPO = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 600


COMMON_ARGS = ("-p", "no:cacheprovider", "-p", "no:logging", "-rA")


@dataclass
class Session:
    """What a user sees from one pytest run: the output, the exit code, and each test's outcome."""

    out: str
    ret: int
    outcomes: dict[str, str]

    def report(self, test: str) -> str:
        """The failure/error report of one test ('___ test_x ___' up to the next report or section)."""
        match = re.search(
            rf"_{{3,}} (?:ERROR at setup of )?{re.escape(test)} _{{3,}}\n(.*?)(?=\n_{{3,}} |\n={{5,}} )", self.out, re.S
        )
        assert match, f"no report for {test} in:\n{self.out}"
        return match.group(1)


def _session(out: str, ret: int) -> Session:
    assert "INTERNALERROR" not in out, out  # nothing escaped the plugin's hooks
    outcomes = {}
    for outcome, node in re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", out, re.M):
        outcomes[node.split("::")[-1]] = outcome
    return Session(out, ret, outcomes)


def run_in_subprocess(project: Path, *args: str, env: dict[str, str] | None = None) -> Session:
    """A real pytest process in ``project`` (torch, nncf, OpenVINO state stays out of this one)."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", *COMMON_ARGS, "--ovq-no-cache", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
    return _session(completed.stdout + "\n" + completed.stderr, completed.returncode)


def run_in_process(pytester: pytest.Pytester, *args: str) -> Session:
    """For sessions that stop at configuration or marker parsing (no model is built, so no cache is used)."""
    result = pytester.runpytest_inprocess(*COMMON_ARGS, *args)
    return _session(result.stdout.str() + "\n" + result.stderr.str(), result.ret)


def write_project(path: Path, conftest: str, **modules: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pytest.ini").write_text("[pytest]\n")  # the project's own rootdir, not this repository's
    (path / "conftest.py").write_text(conftest)
    for name, text in modules.items():
        (path / f"{name}.py").write_text(textwrap.dedent(text))
    return path


def assert_no_plugin_traceback(report: str) -> None:
    """A failure reported by the plugin itself: its message only, no traceback through its hooks."""
    for frame in ("plugin.py:", "gate_runner.py:", "evaluation.py:", "references.py:"):
        assert frame not in report, report


# ---------------------------------------------------------------------------------------------
# Models and data: one session, each test picks its bad input with @pytest.mark.case(...)

MODELS_CONFTEST = TINY_CNN_SOURCE + textwrap.dedent(
    '''

    class Branchy(TinyCNN):
        """Data-dependent control flow: torch.export cannot trace it."""

        def forward(self, x):
            if x.sum() > 0:
                return super().forward(x)
            return super().forward(-x)


    class UsesBessel(TinyCNN):
        """aten.i0 between the convolutions: OpenVINO has no conversion for it."""

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.special.i0(x)
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


    class OnlyBessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x)


    class PoisonedOutputs:
        """The real INT8 module, but one output value per sample is NaN (or Inf)."""

        def __init__(self, lowered, value):
            self.lowered, self.value = lowered, value

        def __call__(self, *args):
            out = self.lowered(*args).clone()
            out[:, 0] = self.value
            return out


    def pytest_configure(config):
        config.addinivalue_line("markers", "case(name): the bad input this test gets")


    def case(request):
        marker = request.node.get_closest_marker("case")
        return marker.args[0] if marker else "good"


    MODELS = {"branchy": Branchy, "bessel": UsesBessel, "only_bessel": OnlyBessel}


    @pytest.fixture
    def ovq_model(request):
        torch.manual_seed(0)
        return MODELS.get(case(request), TinyCNN)().eval()


    @pytest.fixture
    def ovq_example_inputs(request):
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        return {
            "inputs_not_a_tuple": x,
            "inputs_wrong_shape": (torch.randn(1, 5, 16, 16),),
            "inputs_too_many": (x, x),
        }.get(case(request), (x,))


    @pytest.fixture
    def ovq_calibration_dataset(request):
        g = torch.Generator().manual_seed(2)
        good = [(torch.randn(1, 3, 16, 16, generator=g),) for _ in range(4)]
        return {
            "calibration_empty": [],
            "calibration_strings": ["img_001.png", "img_002.png"],
            "calibration_wrong_shape": [(torch.randn(1, 5, 16, 16, generator=g),)],
        }.get(case(request), good)


    @pytest.fixture
    def ovq_eval_dataset(request, ovq_model):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(8, 3, 16, 16, generator=g)
        with torch.no_grad():
            y = ovq_model(x).argmax(1)
        return {
            "eval_batch_mismatch": [(x, y[:5])],
            "eval_class_out_of_range": [(x, y + 4)],
            "eval_one_hot": [(x, torch.nn.functional.one_hot(y, 4))],
            "eval_inputs_wrong_shape": [(torch.randn(8, 5, 16, 16), y)],
        }.get(case(request), [(x, y)])


    @pytest.fixture
    def ovq_compiled_model(request, ovq_compiled_model):
        poison = {"nan_int8": float("nan"), "inf_int8": float("inf")}.get(case(request))
        return ovq_compiled_model if poison is None else PoisonedOutputs(ovq_compiled_model, poison)
    '''
)

MODELS_TESTS = textwrap.dedent(
    """
    import pytest

    @pytest.mark.case("branchy")
    def test_data_dependent_branch(ovq_compiled_model):
        pass

    @pytest.mark.case("branchy")
    @pytest.mark.ovq_quantize(strict_export=True)
    def test_data_dependent_branch_strict(ovq_exported_model):
        pass

    @pytest.mark.case("bessel")
    def test_unconvertible_op_torch_compile(ovq_compiled_model, ovq_example_inputs):
        report = ovq_compiled_model.report
        assert report.pytorch_ops == ["aten.i0.default"], report.describe()
        assert report.int8_layers == report.quantized_layers == 3  # the rest still runs int8
        ovq_compiled_model(*ovq_example_inputs)

    @pytest.mark.case("only_bessel")
    def test_unconvertible_op_only(ovq_compiled_model):
        pass

    @pytest.mark.case("bessel")
    @pytest.mark.ovq_quantize(lowering="export")
    def test_unconvertible_op_export(ovq_compiled_model):
        pass

    @pytest.mark.case("inputs_not_a_tuple")
    def test_inputs_not_a_tuple(ovq_exported_model):
        pass

    @pytest.mark.case("inputs_wrong_shape")
    def test_inputs_wrong_shape(ovq_exported_model):
        pass

    @pytest.mark.case("inputs_too_many")
    def test_inputs_too_many(ovq_exported_model):
        pass

    @pytest.mark.case("calibration_empty")
    def test_calibration_empty(ovq_quantized_model):
        pass

    @pytest.mark.case("calibration_strings")
    def test_calibration_strings(ovq_quantized_model):
        pass

    @pytest.mark.case("calibration_wrong_shape")
    def test_calibration_wrong_shape(ovq_quantized_model):
        pass

    @pytest.mark.case("eval_batch_mismatch")
    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.5)
    def test_eval_batch_mismatch():
        pass

    @pytest.mark.case("eval_class_out_of_range")
    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.5)
    def test_eval_class_out_of_range():
        pass

    @pytest.mark.case("eval_one_hot")
    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.5)
    def test_eval_one_hot():
        pass

    @pytest.mark.case("eval_inputs_wrong_shape")
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=0.5)
    def test_eval_inputs_wrong_shape():
        pass

    @pytest.mark.case("nan_int8")
    @pytest.mark.ovq_accuracy(metric="top1", max_drop=1.0)
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=-1.0)
    @pytest.mark.ovq_accuracy(metric="sqnr", min_value=-1000.0)
    def test_nan_outputs():
        pass

    @pytest.mark.case("inf_int8")
    @pytest.mark.ovq_accuracy(metric="top1", max_drop=1.0)
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=-1.0)
    @pytest.mark.ovq_accuracy(metric="sqnr", min_value=-1000.0)
    def test_inf_outputs():
        pass
    """
)




@pytest.fixture(scope="module")
def badinput_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, Path]:
    """One session over every model and data case, with --ovq-update-refs: nothing bad may be recorded."""
    project = write_project(tmp_path_factory.mktemp("models"), MODELS_CONFTEST, test_models=MODELS_TESTS)
    session = run_in_subprocess(project, "--ovq-update-refs")
    assert session.ret == pytest.ExitCode.TESTS_FAILED, session.out
    return session, project


def test_untraceable_model_names_the_model_the_construct_and_the_way_out(badinput_models):
    session, _ = badinput_models
    assert session.outcomes["test_data_dependent_branch"] == "ERROR"
    message = session.report("test_data_dependent_branch")
    assert "torch.export could not capture Branchy" in message
    assert "conftest.py:" in message and "in forward: if x.sum() > 0:" in message  # the construct, located
    assert "rewrite the branch with torch.cond or torch.where" in message
    assert "strict_export=False, is already in use" in message  # non-strict export would not help

    strict = session.report("test_data_dependent_branch_strict")
    assert session.outcomes["test_data_dependent_branch_strict"] == "ERROR"
    assert "torch.export could not capture Branchy" in strict and "if x.sum() > 0:" in strict
    assert "torch.cond" in strict


def test_ops_openvino_cannot_convert_are_named_by_the_lowering_check(badinput_models):
    session, _ = badinput_models
    # torch.compile: the op runs in PyTorch between two OpenVINO IRs; the report and the table say so
    assert session.outcomes["test_unconvertible_op_torch_compile"] == "PASSED"
    table = session.out[session.out.index("ovquant lowering") :]
    row = next(line for line in table.splitlines() if line.startswith("UsesBessel INT8"))
    assert row.endswith("ok (1 op(s) in PyTorch)"), row
    # nothing but the unconvertible op: no IR at all, a failure naming the op
    assert session.outcomes["test_unconvertible_op_only"] == "FAILED"
    only = session.report("test_unconvertible_op_only")
    assert "OnlyBessel INT8 does not run as claimed" in only
    assert "no OpenVINO IR was built: OpenVINO cannot convert aten.i0.default" in only
    # the export lowering: OpenVINO's conversion error, with the op and the way out
    assert session.outcomes["test_unconvertible_op_export"] == "ERROR"
    export = session.report("test_unconvertible_op_export")
    assert "lowering UsesBessel INT8 with ov.convert_model" in export
    assert "No conversion rule found for operations: aten.i0.default" in export
    assert "use lowering='torch.compile'" in export


@pytest.mark.parametrize(
    "test, fragments",
    [
        ("test_inputs_not_a_tuple", ["example inputs of TinyCNN must be a tuple", "got Tensor", "ovq_example_inputs"]),
        (
            "test_inputs_wrong_shape",
            ["TinyCNN does not run on its ovq_example_inputs (Tensor[1, 5, 16, 16] float32,)", "3 channels"],
        ),
        ("test_inputs_too_many", ["ovq_example_inputs (Tensor[1, 3, 16, 16]", "TinyCNN.forward(x)", "too many positional"]),
    ],
)
def test_example_inputs_that_do_not_fit_the_model_name_the_fixture_and_the_model(badinput_models, test, fragments):
    session, _ = badinput_models
    assert session.outcomes[test] == "ERROR"
    message = session.report(test)
    for fragment in fragments:
        assert fragment in message, message
    assert "return (tensor,) from the ovq_example_inputs fixture" in message or (
        "make the ovq_example_inputs fixture return a tuple of the model's forward() arguments" in message
    )
    assert "torch.export could not capture" not in message  # not blamed on export


@pytest.mark.parametrize(
    "test, fragment",
    [
        ("test_calibration_empty", "calibration dataset is empty; the ovq_calibration_dataset fixture must yield"),
        ("test_calibration_strings", "calibration item of type str (item 0) is not a tensor or a tuple of tensors"),
        (
            "test_calibration_wrong_shape",
            "calibrating TinyCNN failed on ovq_calibration_dataset item 0 (shapes [1, 5, 16, 16])",
        ),
    ],
)
def test_bad_calibration_data_names_the_fixture(badinput_models, test, fragment):
    session, _ = badinput_models
    assert session.outcomes[test] == "ERROR"
    message = session.report(test)
    assert fragment in message and "ovq_calibration_dataset" in message


@pytest.mark.parametrize(
    "test, fragment",
    [
        ("test_eval_batch_mismatch", "evaluation item 0: 5 targets for 8 input samples; yield one target per sample"),
        (
            "test_eval_class_out_of_range",
            "metric top1: target class index 4 is out of range for outputs with 4 classes (valid: 0..3)",
        ),
        ("test_eval_one_hot", "top1 needs one class index per sample, not one-hot"),
        ("test_eval_inputs_wrong_shape", "the FP32 model fails on inputs of shape [1, 5, 16, 16]"),
    ],
)
def test_evaluation_data_that_does_not_fit_is_a_failure_naming_the_dataset(badinput_models, test, fragment):
    session, _ = badinput_models
    assert session.outcomes[test] == "FAILED"
    message = session.report(test)
    assert "pytest-ovquant: evaluating TinyCNN: ovq_eval_dataset: " in message
    assert fragment in message, message
    assert_no_plugin_traceback(message)


@pytest.mark.parametrize("test, value", [("test_nan_outputs", "nan"), ("test_inf_outputs", "inf")])
def test_non_finite_int8_outputs_fail_every_metric_and_are_never_recorded(badinput_models, test, value):
    session, project = badinput_models
    assert session.outcomes[test] == "FAILED"
    message = session.report(test)
    for metric in ("top1", "cosine", "sqnr"):  # top-1 of NaN/Inf logits is a number: it must fail too
        line = next(line for line in message.splitlines() if line.startswith(f"- {metric}: "))
        assert "the INT8 module's outputs are not finite (NaN/Inf) for 8 of 8 samples" in line, line
    assert "reference not updated: the outputs are not finite" in message
    assert "NaN/Inf outputs are never recorded" in message and "if this change is intended" not in message
    assert not (project / "reference_metrics").exists()  # --ovq-update-refs recorded nothing


# ---------------------------------------------------------------------------------------------
# Reference files

GATED_CONFTEST = tiny_cnn_project(4, FIDELITY_EVAL_FIXTURE)

GATED_TEST = """
import pytest

@pytest.mark.ovq_accuracy(metric="cosine", min_value=0.5)
def test_gate():
    pass
"""

VALID_HEAD = "schema_version: 1\ntests:\n  test_gate:\n    metrics:\n"

# module -> (reference file text, what the message must say besides the file and the fix)
BAD_REFERENCE_FILES = {
    "test_ref_empty": ("", ["the file is empty", "schema_version: 1"]),
    "test_ref_truncated": (VALID_HEAD + "      cosine: {fp32: 1.0, int8: 0.9", ["line 5", "invalid YAML"]),
    "test_ref_syntax": (VALID_HEAD + "      cosine: {int8: 0.99}\n   bad: [1, 2\n", ["invalid YAML", "line 6"]),
    "test_ref_schema": ("schema_version: 7\ntests: {}\n", ["schema_version 7", "it reads 1", "upgrade pytest-ovquant"]),
    "test_ref_types": (VALID_HEAD + "      cosine: {int8: high}\n", ["metrics.cosine.int8 = 'high' must be a number"]),
    "test_ref_duplicate": (
        VALID_HEAD + "      cosine: {int8: 0.99}\n  test_gate:\n    metrics: {}\n",
        ["duplicate key 'test_gate'", "first at line 3"],
    ),
}


@pytest.fixture(scope="module")
def badinput_reference_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, Path]:
    """Six modules, each with a malformed reference file, run with --ovq-update-refs."""
    project = write_project(
        tmp_path_factory.mktemp("references"), GATED_CONFTEST, **{name: GATED_TEST for name in BAD_REFERENCE_FILES}
    )
    (project / "reference_metrics").mkdir()
    for name, (text, _) in BAD_REFERENCE_FILES.items():
        (project / "reference_metrics" / f"{name}.yaml").write_text(text)
    session = run_in_subprocess(project, "--ovq-update-refs")
    assert session.ret == pytest.ExitCode.TESTS_FAILED, session.out
    return session, project


@pytest.mark.parametrize("module", sorted(BAD_REFERENCE_FILES))
def test_malformed_reference_file_fails_its_test_naming_the_file_and_is_left_as_it_was(badinput_reference_files, module):
    session, project = badinput_reference_files
    text, fragments = BAD_REFERENCE_FILES[module]
    path = project / "reference_metrics" / f"{module}.yaml"
    assert session.outcomes["test_gate"] == "FAILED"  # (every module's test fails: checked per module below)
    report = re.search(rf"_{{3,}} test_gate _{{3,}}\n(pytest-ovquant: {re.escape(str(path))}.*?)(?=\n_{{3,}} |\n={{5,}} )", session.out, re.S)
    assert report, session.out
    message = report.group(1)
    for fragment in fragments + ["fix the file or delete it and re-record with --ovq-update-refs"]:
        assert fragment in message, message
    assert_no_plugin_traceback(message)
    assert path.read_text() == text  # --ovq-update-refs did not overwrite (or "repair") it
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(f"{m}.yaml" for m in BAD_REFERENCE_FILES)


STALE_REFERENCES = {
    # a gated test whose entry has a misspelt metric: no reference for 'cosine', and 'cosnie' is unused
    "test_ref_metric": (GATED_TEST, "schema_version: 1\ntests:\n  test_gate:\n    metrics:\n      cosnie: {int8: 0.99}\n"),
    # an ungated test that still has metrics recorded, and the entry of a test that was deleted
    "test_ref_stale": (
        "def test_kept():\n    pass\n",
        "schema_version: 1\ntests:\n  test_kept:\n    metrics:\n      top1: {int8: 0.9}\n"
        "  test_removed:\n    metrics:\n      top1: {int8: 0.8}\n",
    ),
}


@pytest.fixture(scope="module")
def badinput_stale_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = write_project(
        tmp_path_factory.mktemp("stale"), GATED_CONFTEST, **{name: test for name, (test, _) in STALE_REFERENCES.items()}
    )
    (project / "reference_metrics").mkdir()
    for name, (_, text) in STALE_REFERENCES.items():
        (project / "reference_metrics" / f"{name}.yaml").write_text(text)
    return project


def test_unknown_metric_in_an_entry_and_keys_of_deleted_tests_are_reported_not_errors(badinput_stale_project):
    project = badinput_stale_project
    session = run_in_subprocess(project)
    assert session.outcomes == {"test_gate": "FAILED", "test_kept": "PASSED"}, session.out
    failure = session.report("test_gate")
    assert "no reference for this test in" in failure  # the gated metric has no value
    assert "the reference entry has no 'cosine' but has 'cosnie'" in failure and "misspelt" in failure
    summary = session.out[session.out.index("ovquant references") :]
    stale_file = project / "reference_metrics" / "test_ref_stale.yaml"
    assert f"{stale_file}: 'test_removed': no such test (renamed or deleted?); delete the entry" in summary
    assert f"{stale_file}: 'test_kept': metric 'top1' gated by no ovq_accuracy/ovq_speedup marker" in summary
    metric_file = project / "reference_metrics" / "test_ref_metric.yaml"
    assert f"{metric_file}: 'test_gate': metric 'cosnie' gated by no ovq_accuracy/ovq_speedup marker" in summary
    for name, (_, text) in STALE_REFERENCES.items():  # reported, never edited
        assert (project / "reference_metrics" / f"{name}.yaml").read_text() == text

    # a run of part of a module cannot tell a deleted test from an uncollected one: no key is judged
    part = run_in_subprocess(project, "test_ref_stale.py::test_kept")
    assert part.outcomes == {"test_kept": "PASSED"}
    assert "'test_removed'" not in part.out
    assert "'test_kept': metric 'top1' gated by no" in part.out  # an entry of a collected test still is
    deselected = run_in_subprocess(project, "-k", "not test_gate")
    assert deselected.outcomes == {"test_kept": "PASSED"}
    assert "'test_removed': no such test" in deselected.out  # test_ref_stale.py was still collected whole
    assert "'cosnie'" not in deselected.out  # test_gate was deselected: its entry is not judged


# ---------------------------------------------------------------------------------------------
# Markers and options: they fail at setup (markers) or at configuration (options), before any build

BAD_MARKERS = {
    "test_negative_max_drop": (
        '@pytest.mark.ovq_accuracy(metric="top1", max_drop=-0.01)',
        "@pytest.mark.ovq_accuracy on test_markers.py::test_negative_max_drop: max_drop=-0.01 is impossible; it must be >= 0",
    ),
    "test_negative_max_relative_drop": (
        '@pytest.mark.ovq_accuracy(metric="top1", max_relative_drop=-0.5)',
        "max_relative_drop=-0.5 is impossible; it must be >= 0",
    ),
    "test_negative_tolerance": (
        '@pytest.mark.ovq_accuracy(metric="cosine", min_value=0.9, tolerance=-0.1)',
        "tolerance=-0.1 is impossible; it must be >= 0",
    ),
    "test_wrong_type": ('@pytest.mark.ovq_accuracy(metric="top1", max_drop="1%")', "max_drop='1%' must be a number"),
    "test_positional": ('@pytest.mark.ovq_accuracy("top1")', "takes keyword arguments only, got positional ('top1',)"),
    "test_drop_of_sqnr": (
        '@pytest.mark.ovq_accuracy(metric="sqnr", max_drop=1.0)',
        "metric 'sqnr' has no FP32 value to drop from; use min_value=",
    ),
    "test_metric_twice": (
        '@pytest.mark.ovq_accuracy(metric="top1", max_drop=0.1)\n@pytest.mark.ovq_accuracy(metric="top1", max_drop=0.2)',
        "metric 'top1' is gated twice (markers on the test, its class and its module all apply); keep one marker per metric",
    ),
    "test_speedup_zero": ("@pytest.mark.ovq_speedup(min=0)", "min=0 is impossible; it must be > 0"),
    "test_speedup_tolerance": ("@pytest.mark.ovq_speedup(min=1.5, tolerance=-0.2)", "tolerance=-0.2 is impossible"),
    "test_speedup_confidence": ("@pytest.mark.ovq_speedup(min=1.5, confidence=1.5)", "confidence=1.5 must be between 0 and 1"),
    "test_speedup_rounds": ("@pytest.mark.ovq_speedup(min=1.5, rounds=0)", "rounds=0 must be an integer >= 1"),
    "test_speedup_baseline": (
        '@pytest.mark.ovq_speedup(min=1.5, baseline="ov_int8")',
        "baseline='ov_int8' is not valid; expected one of eager, ov_fp32",
    ),
    "test_min_int8_fraction": (
        "@pytest.mark.ovq_quantize(min_int8_fraction=1.5)",
        "@pytest.mark.ovq_quantize on test_markers.py::test_min_int8_fraction: min_int8_fraction=1.5 must be a number in [0, 1]",
    ),
    "test_quantize_positional": ('@pytest.mark.ovq_quantize("mixed")', "takes keyword arguments only, got positional ('mixed',)"),
    "test_fast_bias_correction_without_nncf": (
        '@pytest.mark.ovq_quantize(method="prepare_convert", fast_bias_correction=False)',
        "fast_bias_correction=False needs method='quantize_pt2e' (method='prepare_convert' set by "
        "@pytest.mark.ovq_quantize on test_markers.py::test_fast_bias_correction_without_nncf does no bias correction); "
        "drop one of them",
    ),
    "test_smooth_quant_against_the_command_line": (
        "@pytest.mark.ovq_quantize(smooth_quant=True)",
        "@pytest.mark.ovq_quantize on test_markers.py::test_smooth_quant_against_the_command_line: smooth_quant=True "
        "needs method='quantize_pt2e' (set by command line (--ovq-*)); drop one of them",
    ),
}


def test_impossible_and_conflicting_marker_arguments_are_setup_errors_naming_the_marker(pytester):
    source = "import pytest\n" + "".join(
        f"\n{marks}\ndef {name}(ovq_config):\n    pass\n" for name, (marks, _) in BAD_MARKERS.items()
    )
    pytester.makeconftest(GATED_CONFTEST)
    pytester.makepyfile(test_markers=source)
    # --ovq-method=prepare_convert conflicts with the smooth_quant marker (the others fail on their own)
    session = run_in_process(pytester, "--strict-markers", "--ovq-method=prepare_convert")
    assert session.ret == pytest.ExitCode.TESTS_FAILED
    assert session.outcomes == {name: "ERROR" for name in BAD_MARKERS}, session.out
    for name, (_, fragment) in BAD_MARKERS.items():
        message = session.report(name)
        assert "pytest-ovquant: @pytest.mark.ovq_" in message and name in message
        assert fragment in message, message
        assert_no_plugin_traceback(message)
    assert "[ovquant]" not in session.out  # nothing was built for a test that cannot run


@pytest.mark.parametrize(
    "args, ini, fragment",
    [
        (["--ovq-min-int8-fraction=2"], "", "command line (--ovq-*): min_int8_fraction='2' must be a number in [0, 1]"),
        (["--ovq-subset-size=0"], "", "command line (--ovq-*): subset_size='0' must be a positive integer"),
        (["--ovq-target-device=tpu"], "", "command line (--ovq-*): target_device='tpu' is not valid; expected one of ANY, CPU, CPU_SPR, GPU, NPU"),
        ([], "ovq_smooth_quant = maybe", "ini [ovq_* keys]: smooth_quant='maybe' must be true or false"),
        (
            ["--ovq-smooth-quant"],
            "ovq_method = prepare_convert",
            "command line (--ovq-*): smooth_quant=True needs method='quantize_pt2e' (set by ini [ovq_* keys]); "
            "drop one of them",
        ),
    ],
    ids=["fraction-above-1", "subset-size-0", "unknown-device", "ini-not-a-bool", "smooth-quant-vs-ini-method"],
)
def test_bad_or_conflicting_options_stop_the_run_with_a_usage_error(pytester, args, ini, fragment):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    session = run_in_process(pytester, *args)
    assert session.ret == pytest.ExitCode.USAGE_ERROR
    assert f"pytest-ovquant: {fragment}" in session.out, session.out
    assert "test_nothing" not in session.outcomes  # nothing ran


def test_update_refs_with_regen_all_behaves_as_regen_all(tmp_path):
    """Not a conflict: --ovq-regen-all includes what --ovq-update-refs does (README, update flow)."""

    def gates(mode: UpdateMode, store: ReferenceStore):
        plan = GatePlan((parse_accuracy(pytest.mark.ovq_accuracy(metric="top1", max_drop=0.5).mark, "m"),))
        dataset = [(torch.eye(4), torch.arange(4))]  # identity "logits": top-1 = 1.0 for both models
        return run_gates(
            plan, node_id="test_m.py::test_a", model_name="m", config=QuantizeConfig(),
            fp32_model=lambda x: x, int8_model=lambda x: x * 0.5, eval_dataset=dataset,
            example_inputs=(torch.zeros(4, 4),), baseline_model=None, store=store, machine="here",
            machine_details={}, mode=mode,
        )

    store = ReferenceStore(tmp_path, compat.stack_versions())
    store.stage("test_m.py::test_a", TestReference("test_a", {"top1": MetricValues(fp32=1.0, int8=0.2, drop=0.8)}))
    store.write_pending()  # a stale reference that the obtained INT8 top-1 (1.0) beats by far
    for mode in (UpdateMode(update_refs=True), UpdateMode(regen_all=True), UpdateMode(update_refs=True, regen_all=True)):
        fresh = ReferenceStore(tmp_path, compat.stack_versions())
        outcome = gates(mode, fresh)
        if mode.regen_all:  # rewritten and passing, with or without --ovq-update-refs
            assert (outcome.verdict, outcome.updated) == ("passed", True), (mode, outcome)
            assert fresh.pending == {tmp_path / "test_m.yaml": ["test_a"]}
        else:  # an improvement passes and is kept unless --ovq-strict
            assert (outcome.verdict, outcome.updated) == ("passed", False), (mode, outcome)


# ---------------------------------------------------------------------------------------------
# Environment


def test_missing_transformers_skips_the_minilm_tests_saying_what_to_install(tmp_path):
    """The repository's own MiniLM user (root conftest.py), with transformers unimportable."""
    (tmp_path / "no_transformers.py").write_text("import sys\nsys.modules['transformers'] = None\n")
    session = run_in_subprocess(
        tmp_path,
        "-p", "no_transformers",
        f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml"),
        str(REPO / "tests/models/test_minilm.py"),
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert session.ret == pytest.ExitCode.OK, session.out
    skipped = re.findall(r"^SKIPPED \[(\d+)\] .*?: (.*)$", session.out, re.M)
    assert skipped and all(reason == "transformers is not installed (pip install -e '.[models]')" for _, reason in skipped)
    assert re.search(r"\b(\d+) skipped\b", session.out) and " passed" not in session.out.splitlines()[-1]


QUANTIZER_GONE = """
import sys
# as on a stack where neither package ships OpenVINOQuantizer
sys.modules["nncf.experimental.torch.fx"] = None
sys.modules["executorch.backends.openvino.quantizer"] = None
"""


def test_openvino_quantizer_not_importable_names_the_packages_that_provide_it(tmp_path):
    project = write_project(
        tmp_path, QUANTIZER_GONE + GATED_CONFTEST, test_quantizer="def test_int8(ovq_compiled_model):\n    pass\n"
    )
    session = run_in_subprocess(project)
    assert session.outcomes == {"test_int8": "ERROR"}, session.out
    assert "OpenVINOQuantizer from not found (MissingDependencyError)" in session.out  # the header says it first
    message = session.report("test_int8")
    assert "OpenVINOQuantizer is not importable from nncf.experimental.torch.fx.OpenVINOQuantizer or " in message
    assert "executorch.backends.openvino.quantizer.OpenVINOQuantizer" in message
    assert "Install 'nncf<=3.1'" in message and "'executorch'" in message


@pytest.mark.parametrize("kind", ["under-a-regular-file", "read-only-dir"])
def test_unusable_cache_directory_is_a_usage_error_naming_it_and_the_options(pytester, kind):
    if kind == "under-a-regular-file":
        (pytester.path / "not_a_dir").write_text("a regular file")
        cache = pytester.path / "not_a_dir" / "cache"  # fails for root too
    else:
        if os.geteuid() == 0:
            pytest.skip("running as root: permission bits do not stop root from writing (the regular-file case covers it)")
        cache = pytester.path / "read_only"
        cache.mkdir()
        cache.chmod(0o500)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    session = run_in_process(pytester, f"--ovq-cache-dir={cache}")
    assert session.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: pytest-ovquant: the artifact cache directory {cache} is not usable" in session.out
    assert "pass --ovq-cache-dir=<writable directory>, or disable the cache with --ovq-no-cache" in session.out
    # and the way out works
    assert run_in_process(pytester, f"--ovq-cache-dir={cache}", "--ovq-no-cache").outcomes == {"test_nothing": "PASSED"}
