"""The gates as a user meets them: markers, the reference file, the update flow, the reports.

Each scenario writes a project with pytester and runs pytest in a subprocess. The model is tiny,
its evaluation labels are its own FP32 predictions (FP32 top-1 = 1.0), so INT8 values are stable.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest
import yaml

from small_models import tiny_cnn_project

from pytest_ovquant import compat

CONFTEST = tiny_cnn_project(
    8,
    """
@pytest.fixture(scope="session")
def ovq_eval_dataset(ovq_model):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = ovq_model(x).argmax(1)
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
""",
)

GATED_TESTS = textwrap.dedent(
    """
    import pytest

    @pytest.mark.ovq_accuracy(metric="top1", max_drop=0.5)
    @pytest.mark.ovq_accuracy(metric="cosine", min_value=0.9)
    def test_accuracy():
        pass

    # A tiny model on a shared machine: run-to-run shifts are large (other processes contend for
    # OpenVINO's threads), so the baseline is OpenVINO FP32 (contended alike) and the tolerance wide.
    @pytest.mark.ovq_speedup(min=0.001, baseline="ov_fp32", rounds=10, warmup=2, tolerance=0.9, budget=3)
    def test_speed():
        pass
    """
)

REFERENCE = "reference_metrics/test_gated.yaml"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gated=GATED_TESTS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:logging", "--strict-markers", *args, timeout=600)


# As syrupy's own suite does: the flows that write references run without xdist, with -n 0 and
# with two real workers, whose results and reference updates must reach the controller.
XDIST_MODES = {"no-xdist": ("-p", "no:xdist"), "n0": ("-n", "0"), "n2": ("-n", "2")}


@pytest.fixture(params=sorted(XDIST_MODES))
def xdist_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return XDIST_MODES[request.param]


def load_reference(pytester: pytest.Pytester) -> dict:
    return yaml.safe_load((pytester.path / REFERENCE).read_text())


def edit_reference(pytester: pytest.Pytester, edit) -> None:
    data = load_reference(pytester)
    edit(data["tests"])
    (pytester.path / REFERENCE).write_text(yaml.safe_dump(data))


def test_missing_reference_then_update_refs_then_pass(project, xdist_args):
    first = run(project, *xdist_args)
    first.assert_outcomes(failed=2)
    out = first.stdout.str()
    assert "no reference for this test in" in out
    assert "pytest 'test_gated.py::test_accuracy' --ovq-update-refs" in out  # the command that records it
    assert "INT8 (obtained)" in out and "allowed" in out  # the obtained/reference/difference table
    assert not (project.path / REFERENCE).exists()  # nothing is written unless asked

    update = run(project, "--ovq-update-refs", *xdist_args)
    update.assert_outcomes(failed=2)  # tests that had no reference still fail this run
    assert "reference updated in" in update.stdout.str()
    data = load_reference(project)
    assert data["schema_version"] == 1
    assert set(data["tests"]) == {"test_accuracy", "test_speed"}
    entry = data["tests"]["test_accuracy"]
    assert entry["metrics"]["top1"]["fp32"] == 1.0
    assert set(entry["metrics"]) == {"top1", "cosine"}
    assert entry["environment"]["torch"] == compat.stack_versions()["torch"]
    assert data["tests"]["test_speed"]["speedup"]["baseline"] == "ov_fp32"

    again = run(project, "--junitxml=junit.xml", "--ovq-results=results.json", *xdist_args)
    again.assert_outcomes(passed=2)
    summary = again.stdout.str()[again.stdout.str().index("ovquant gates") :]
    assert "test_gated.py::test_accuracy" in summary and "passed" in summary
    results = json.loads((project.path / "results.json").read_text())
    assert {g["node_id"]: g["verdict"] for g in results["gates"]} == {
        "test_gated.py::test_accuracy": "passed",
        "test_gated.py::test_speed": "passed",
    }
    assert results["machine"]["id"] == data["tests"]["test_speed"]["speedup"]["machine"]
    props = {p.get("name"): p.get("value") for p in ET.parse(project.path / "junit.xml").iter("property")}
    assert props["ovq_top1_fp32"] == "1.0" and props["ovq_gate_verdict"] == "passed"
    assert "ovq_speedup" in props


def test_regressions_improvements_strict_xfail_and_regen_all(project, xdist_args):
    run(project, "--ovq-update-refs", *xdist_args)
    recorded = load_reference(project)["tests"]

    # a reference better than what INT8 gets: a regression beyond the tolerance fails
    edit_reference(project, lambda t: t["test_accuracy"]["metrics"]["cosine"].update(int8=1.5))
    regressed = run(project, "-k", "test_accuracy")
    regressed.assert_outcomes(failed=1, deselected=1)
    assert "reference: INT8" in regressed.stdout.str() and "worse than the reference 1.5" in regressed.stdout.str()
    assert "if this change is intended, update the reference:" in regressed.stdout.str()

    # a recorded known regression turns the failure into an xfail with its reason
    edit_reference(project, lambda t: t["test_accuracy"].update(xfail_reason="known drop in openvino X"))
    known = run(project, "-k", "test_accuracy", "-rx")
    known.assert_outcomes(xfailed=1, deselected=1)
    assert "known drop in openvino X" in known.stdout.str()

    # an improvement beyond the tolerance passes with a note, and fails with --ovq-strict
    def improved(tests):
        tests["test_accuracy"].pop("xfail_reason")
        tests["test_accuracy"]["metrics"]["cosine"]["int8"] = recorded["test_accuracy"]["metrics"]["cosine"]["int8"] - 0.05

    edit_reference(project, improved)
    lenient = run(project, "-k", "test_accuracy")
    lenient.assert_outcomes(passed=1, deselected=1)
    strict = run(project, "-k", "test_accuracy", "--ovq-strict")
    strict.assert_outcomes(failed=1, deselected=1)
    assert "better than the reference" in strict.stdout.str()

    # a speedup reference from this machine, far above what is measured: fails; regen-all rewrites and passes
    edit_reference(project, lambda t: t["test_speed"]["speedup"].update(value=1000.0))
    slow = run(project, "-k", "test_speed")
    slow.assert_outcomes(failed=1, deselected=1)
    assert "below the reference" in slow.stdout.str()
    regen = run(project, "--ovq-regen-all", *xdist_args)
    regen.assert_outcomes(passed=2)
    rewritten = load_reference(project)["tests"]
    assert rewritten["test_speed"]["speedup"]["value"] < 1000.0
    assert rewritten["test_accuracy"]["metrics"]["cosine"]["int8"] == pytest.approx(
        recorded["test_accuracy"]["metrics"]["cosine"]["int8"], abs=1e-6
    )


def test_thresholds_in_code_fail_without_any_reference_involved(project):
    project.makepyfile(
        test_gated="""
        import pytest

        @pytest.mark.ovq_accuracy(metric="cosine", min_value=1.5)
        def test_accuracy():
            pass

        @pytest.mark.ovq_speedup(min=10000, rounds=3, warmup=1, budget=2)
        def test_speed():
            pass
        """
    )
    result = run(project, "--ovq-regen-all")  # regenerating the reference does not lift a code threshold
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "not >= 1.5" in out
    assert "< min 1e+04x" in out or "< min 10000x" in out


def test_per_stack_override_file_changes_the_reference(project):
    run(project, "--ovq-update-refs", "-k", "test_accuracy")
    torch_major_minor = ".".join(compat.stack_versions()["torch"].split("+")[0].split(".")[:2])
    override = project.path / f"reference_metrics/test_gated@torch-{torch_major_minor}.yaml"
    override.write_text(
        yaml.safe_dump({"schema_version": 1, "tests": {"test_accuracy": {"metrics": {"cosine": {"int8": 2.0}}}}})
    )
    other_stack = project.path / "reference_metrics/test_gated@torch-1.0.yaml"
    other_stack.write_text(
        yaml.safe_dump({"schema_version": 1, "tests": {"test_accuracy": {"metrics": {"top1": {"int8": 9.0}}}}})
    )
    result = run(project, "-k", "test_accuracy")
    result.assert_outcomes(failed=1, deselected=1)
    out = result.stdout.str()
    assert "worse than the reference 2" in out  # the matching override applied
    assert "reference 9" not in out  # the other stack's did not
    assert f"test_gated@torch-{torch_major_minor}.yaml" in out


def test_malformed_reference_and_bad_marker_arguments_are_clear_errors(project):
    (project.path / "reference_metrics").mkdir()
    (project.path / REFERENCE).write_text("schema_version: 1\ntests:\n  test_accuracy: [unclosed\n")
    broken = run(project, "-k", "test_accuracy")
    broken.assert_outcomes(failed=1, deselected=1)
    assert "test_gated.yaml" in broken.stdout.str()
    assert "--ovq-update-refs" in broken.stdout.str()  # the fix is named

    project.makepyfile(
        test_gated="""
        import pytest

        @pytest.mark.ovq_accuracy(metric="top1", max_dropp=0.01)
        def test_typo():
            pass

        @pytest.mark.ovq_speedup(min=-1)
        def test_impossible():
            pass

        @pytest.mark.ovq_accuracy(metric="top7x")
        def test_unknown_metric():
            pass
        """
    )
    bad = run(project)
    bad.assert_outcomes(errors=3)
    out = bad.stdout.str()
    assert "@pytest.mark.ovq_accuracy on test_gated.py::test_typo: unknown argument(s) 'max_dropp'" in out
    assert "min=-1 is impossible" in out
    assert "unknown metric 'top7x'" in out
    assert "not found in `markers` configuration option" not in out  # --strict-markers is clean


def test_real_trained_model_passes_its_committed_reference_and_fails_with_a_worse_config(pytester):
    """The repo's digits CNN (trained weights) against reference_metrics/, with a worse calibration.

    --ovq-subset-size=1 calibrates on a single image instead of 300: its cosine to FP32 falls
    below the committed reference by more than the gate's tolerance.
    """
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    target = str(repo / "tests/models/test_model_gates.py")
    common = ("-p", "no:cacheprovider", "-p", "no:logging", f"--rootdir={repo}", "-c", str(repo / "pyproject.toml"))
    good = pytester.runpytest_subprocess(target, "-k", "digits", *common, timeout=600)
    good.assert_outcomes(passed=1)
    worse = pytester.runpytest_subprocess(target, "-k", "digits", "--ovq-subset-size=1", *common, timeout=600)
    worse.assert_outcomes(failed=1)
    out = worse.stdout.str()
    assert "cosine: reference: INT8" in out and "worse than the reference" in out
    assert "pytest 'tests/models/test_model_gates.py::test_digits_accuracy[digits_cnn]' --ovq-update-refs" in out
