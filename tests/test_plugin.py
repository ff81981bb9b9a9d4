"""The plugin as a user meets it: a conftest and a test file written by pytester, run in a subprocess.

Each run is a real pytest process (with real xdist workers where asked) importing torch, nncf and
OpenVINO, so the tests here are few and each checks several things.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest

from small_models import TINY_CNN_SOURCE, tiny_input_fixtures

from pytest_ovquant import compat

USER_CONFTEST = TINY_CNN_SOURCE + textwrap.dedent(
    '''


    class TinyMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(3 * 16 * 16, 32)
            self.fc2 = torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


    MODELS = {"tiny_cnn": TinyCNN, "tiny_mlp": TinyMLP}


    @pytest.fixture(scope="session", params=MODEL_PARAMS)
    def ovq_model(request):
        torch.manual_seed(0)
        return MODELS[request.param]().eval()


    '''
) + tiny_input_fixtures(8)


def write_project(pytester: pytest.Pytester, tests: str, models: tuple[str, ...] = ("tiny_cnn",), ini: str = "") -> None:
    pytester.makeconftest(USER_CONFTEST.replace("MODEL_PARAMS", repr(list(models))))
    pytester.makepyfile(test_user=textwrap.dedent(tests))
    if ini:
        pytester.makeini(textwrap.dedent(ini))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess, as a user's run would be: dynamo/OpenVINO global state stays out of this process.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=600)


# The break the installed stack has, provoked on purpose through the marker.
if compat.needs_own_compile_backend():
    BROKEN_MARK = 'compile_backend="openvino"'
    BROKEN_CAUSE = "weights are runtime inputs"
else:
    BROKEN_MARK = 'compile_backend="openvino", compile_options={}'
    BROKEN_CAUSE = "no OpenVINO IR was built"


def test_a_test_that_names_only_the_compiled_model_gets_real_int8_and_a_broken_lowering_fails(pytester):
    write_project(
        pytester,
        f"""
        import pytest
        import torch

        def test_int8(ovq_compiled_model, ovq_quantized_model, ovq_example_inputs):
            report = ovq_compiled_model.report
            assert report.int8_layers == report.quantized_layers == 3
            out = ovq_compiled_model(*ovq_example_inputs)
            ref = ovq_quantized_model(*ovq_example_inputs)
            assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99

        @pytest.mark.ovq_quantize({BROKEN_MARK})
        def test_broken_lowering(ovq_compiled_model):
            pass

        @pytest.mark.ovq_quantize({BROKEN_MARK}, verify=False)
        def test_broken_lowering_opted_out(ovq_lowering_report):
            assert not ovq_lowering_report.ok
        """,
    )
    result = run(pytester, "-v", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_int8*PASSED*",
            "*::test_broken_lowering?tiny_cnn? FAILED*",
            "*test_broken_lowering_opted_out*PASSED*",
        ]
    )
    output = result.stdout.str()
    assert "does not run as claimed" in output
    assert "0 of 3 quantized layers run in int8" in output or "no OpenVINO IR was built" in output
    assert BROKEN_CAUSE in output
    assert "lowering='export'" in output  # the way out is named
    # the header names the stack and where things were found
    assert "ovquant: torch " in output and "OpenVINOQuantizer from " in output
    # the end-of-run lowering table has one ok row and one PROBLEM row for the two INT8 lowerings
    section = output[output.index("ovquant lowering") :]
    assert section.count(" ok") >= 1 and "PROBLEM" in section
    # JUnit XML carries the lowering facts
    tree = ET.parse(pytester.path / "junit.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in tree.iter("testcase")
        for p in case.iter("property")
    }
    assert props[("test_int8[tiny_cnn]", "ovq_int8_layers")] == "3/3"


def test_each_model_and_config_is_built_once_and_shared(pytester):
    write_project(
        pytester,
        """
        import pytest

        def test_a(ovq_compiled_model):
            assert ovq_compiled_model.report.ok

        def test_b(ovq_compiled_model, ovq_quantized_model):
            assert ovq_compiled_model.report.ok

        @pytest.mark.ovq_quantize(lowering="export")
        def test_export_lowering_reuses_the_quantized_model(ovq_compiled_model):
            assert ovq_compiled_model.lowering == "export"

        @pytest.mark.ovq_quantize(preset="mixed")
        def test_other_preset_is_a_new_build(ovq_compiled_model):
            assert ovq_compiled_model.report.ok
        """,
        models=("tiny_cnn", "tiny_mlp"),
    )
    result = run(pytester, "-v", "-W", "error::UserWarning")
    result.assert_outcomes(passed=8)
    lines = [line for line in result.stdout.lines if line.startswith("[ovquant]")]
    for model in ("tiny_cnn", "tiny_mlp"):
        mine = [line for line in lines if line.startswith(f"[ovquant] {model}:")]
        assert sum(": export " in line for line in mine) == 1, mine
        assert sum(": quantize " in line for line in mine) == 2, mine  # default preset + mixed
        assert sum(": lower INT8 " in line for line in mine) == 3, mine  # compile, export, mixed


def test_options_ini_and_marker_precedence_and_bad_values(pytester):
    write_project(
        pytester,
        """
        import pytest

        def test_from_ini_and_cli(ovq_config):
            assert ovq_config.lowering == "export"          # ini
            assert ovq_config.preset == "mixed"             # command line over ini's performance
            assert ovq_config.target_device == "CPU"        # ini

        @pytest.mark.ovq_quantize(preset="performance")
        def test_marker_wins(ovq_config):
            assert ovq_config.preset == "performance"

        @pytest.mark.ovq_quantize(presett="mixed")
        def test_unknown_marker_argument(ovq_config):
            pass

        @pytest.mark.ovq_quantize(subset_size="lots")
        def test_wrong_type(ovq_config):
            pass
        """,
        ini="""
        [pytest]
        ovq_lowering = export
        ovq_preset = performance
        ovq_target_device = cpu
        """,
    )
    result = run(pytester, "--strict-markers", "--ovq-preset=mixed")
    result.assert_outcomes(passed=2, errors=2)
    output = result.stdout.str()
    assert "not found in `markers` configuration option" not in output  # --strict-markers is clean
    assert "@pytest.mark.ovq_quantize on test_user.py::test_unknown_marker_argument" in output
    assert "unknown argument 'presett'" in output
    assert "subset_size='lots' must be a positive integer" in output

    bad_option = run(pytester, "--ovq-lowering=inductor")
    assert bad_option.ret == pytest.ExitCode.USAGE_ERROR
    bad_option.stderr.fnmatch_lines(["*command line (--ovq-*): lowering='inductor' is not valid*torch.compile, export*"])


def test_missing_user_fixtures_and_default_calibration_say_what_to_define(pytester):
    pytester.makepyfile(
        test_user="""
        def test_no_model(ovq_compiled_model):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define an `ovq_model` fixture*"])

    write_project(
        pytester,
        """
        def test_calibrates_on_example(ovq_quantized_model):
            pass
        """,
    )
    pytester.makeconftest(USER_CONFTEST.replace("MODEL_PARAMS", "['tiny_cnn']").split("@pytest.fixture(scope=\"session\")\ndef ovq_calibration_dataset")[0])
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*no `ovq_calibration_dataset` fixture; calibrating on the example inputs only*"])


def test_xdist_workers_run_the_flow(pytester):
    write_project(
        pytester,
        """
        import pytest

        @pytest.mark.parametrize("lowering", ["torch.compile", "export"])
        def test_int8(request, lowering, ovq_artifacts, ovq_config):
            import dataclasses
            config = dataclasses.replace(ovq_config, lowering=lowering)
            lowered = ovq_artifacts.lowered(config, quantized=True)
            assert lowered.report.ok, lowered.report.describe()
        """,
        models=("tiny_cnn", "tiny_mlp"),
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    assert "2 workers" in result.stdout.str()
    # both workers needed both models' quantized programs: each was built exactly once
    from pytest_ovquant.cache import ArtifactCache

    cache = ArtifactCache(pytester.path / ".ovquant_cache")
    builds = cache.build_log()
    programs = [entry for entry in builds if entry.kind == "program"]
    assert len(programs) == 2, programs
    # every key (2 exported programs, 2 graph records, 2 programs, 2 models x 2 lowerings) built exactly once
    expected = ["exported"] * 2 + ["graph"] * 2 + ["lowering"] * 4 + ["program"] * 2
    assert sorted(entry.kind for entry in builds) == expected, builds
    assert len({entry.key for entry in builds}) == len(builds)
    # a later run reuses them all: nothing is built
    again = run(pytester, "-n", "2")
    again.assert_outcomes(passed=4)
    assert cache.build_log() == builds


def test_a_warm_run_replays_lowerings_but_times_a_real_torch_compile(pytester):
    write_project(
        pytester,
        """
        import pytest

        def test_int8(ovq_compiled_model):
            assert ovq_compiled_model.report.ok, ovq_compiled_model.report.describe()
            with open("served.txt", "a") as f:
                f.write(type(ovq_compiled_model.module).__name__ + "\\n")

        @pytest.mark.ovq_speedup(min=0.001, baseline="ov_fp32", rounds=3, warmup=1, budget=2, tolerance=0.9)
        def test_speed(ovq_model):
            pass
        """,
    )
    cold = run(pytester, "-p", "no:xdist", "--ovq-regen-all")  # records the speed reference
    cold.assert_outcomes(passed=2)
    cold_steps = progress_steps(cold)
    assert [step for step, _ in cold_steps if step.startswith("lower")] == ["lower INT8", "lower FP32"], cold.outlines
    assert all(detail.endswith(", built") for step, detail in cold_steps if step.startswith("lower")), cold_steps

    warm = run(pytester, "-p", "no:xdist")
    warm.assert_outcomes(passed=2)
    warm_steps = progress_steps(warm)
    # served from the cache; the speed gate's INT8 and FP32 modules are real torch.compile lowerings
    # of the cached program (so it is loaded), built in this run
    assert [step for step, _ in warm_steps] == [
        "lower INT8",
        "quantize",
        "lower INT8 (torch.compile)",
        "lower FP32",
        "export",
        "lower FP32 (torch.compile)",
    ], warm.outlines
    assert all(warm_steps[i][1].endswith("cache hit") for i in (0, 1, 3)), warm_steps
    assert (pytester.path / "served.txt").read_text().split() == ["OptimizedModule", "ReplayedTorchCompile"]


def test_a_warm_run_replays_the_fp32_side_of_the_accuracy_gates(pytester):
    write_project(
        pytester,
        """
        import pytest
        import torch

        @pytest.fixture(scope="session")
        def ovq_eval_dataset():
            g = torch.Generator().manual_seed(3)
            return [(torch.randn(4, 3, 16, 16, generator=g), None) for _ in range(3)]

        @pytest.mark.ovq_accuracy(metric="cosine", min_value=0.5)
        @pytest.mark.ovq_accuracy(metric="sqnr", min_value=1.0)
        def test_fidelity(ovq_model):  # ovq_model: the conftest's is parametrized
            pass
        """,
    )
    outcomes = []
    for name, flags in (("cold", ["--ovq-regen-all"]), ("warm", [])):  # the warm run compares with what cold recorded
        result = run(pytester, "-p", "no:xdist", *flags, f"--ovq-results={name}.json")
        result.assert_outcomes(passed=1)
        [(step, detail)] = [(s, d) for s, d in progress_steps(result) if s == "evaluate"]
        outcomes.append((detail, json.loads((pytester.path / f"{name}.json").read_text())["gates"][0]["rows"]))
    (cold_detail, cold_rows), (warm_detail, warm_rows) = outcomes
    # 12 samples in chunks of the example inputs' batch (1): 12 FP32 calls, run once, then replayed
    assert cold_detail == "FP32 outputs of 12 call(s) run and recorded"
    assert warm_detail == "FP32 outputs of 12 call(s) replayed from the cache"
    values = [[(r["name"], r["fp32"], r["int8"], r["drop"]) for r in rows] for rows in (cold_rows, warm_rows)]
    assert values[0] == values[1] and {r["name"] for r in warm_rows} == {"cosine", "sqnr"}
    assert [r["status"] for r in warm_rows] == ["pass", "pass"]  # the same values as the reference
    from pytest_ovquant.cache import ArtifactCache

    assert [e.kind for e in ArtifactCache(pytester.path / ".ovquant_cache").build_log()].count("fp32-outputs") == 1


def progress_steps(result: pytest.RunResult) -> list[tuple[str, str]]:
    """(step, detail) of each progress line "[ovquant] <model>: <step> <seconds>s (<detail>)"."""
    import re

    lines = (re.match(r"\[ovquant\] \S+: (.+) \d+\.\ds \((.*)\)$", line) for line in result.outlines)
    return [(m.group(1), m.group(2)) for m in lines if m]
