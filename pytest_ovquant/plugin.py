"""pytest entry point (``pytest11: ovquant``): options, markers, fixtures and hooks; nothing else.

The flow lives in ``flow/``, the lowering check in ``verify``, builds-once in ``artifacts``,
terminal output in ``report`` / ``progress``, plugin state in ``session``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from . import compat, markers, options, report, results
from .artifacts import ArtifactStore, ModelArtifacts
from .cache import ArtifactCache, CacheError
from .config import QuantizeConfig, make_config
from .errors import ConfigError, OVQuantError
from .flow.lower import LoweredModel
from .gate_runner import UpdateMode, outcome_from_dict, plan_for, run_gates
from .measure import machine
from .measure.evaluation import chunk_size
from .measure.exclusive import MachineLock, default_lock_path
from .progress import ProgressPrinter, SampleProgress
from .references import ReferenceStore, TestReference, split_node_id
from .session import GATE_KEY, SERVED_KEY, SESSION_KEY, GateContext, SessionState
from .stale_references import StaleReferenceReport
from .verify import LoweringReport


class OVQuantWarning(UserWarning):
    """Something works but probably not the way the user meant (e.g. calibrating on one input)."""


# -- hooks -----------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    markers.register(config)
    config.pluginmanager.register(StaleReferenceReport(), "ovquant-stale-references")
    store = ArtifactStore(listener=ProgressPrinter(config), cache=_artifact_cache(config))
    mode = UpdateMode(
        update_refs=config.getoption("ovq_update_refs"),
        regen_all=config.getoption("ovq_regen_all"),
        strict=config.getoption("ovq_strict"),
    )
    reference_dir = config.getoption("ovq_reference_dir") or config.getini("ovq_reference_dir") or "reference_metrics"
    references = ReferenceStore(
        Path(config.rootpath, reference_dir), compat.stack_versions(), isa_class=machine.int8_isa_class()
    )
    state = SessionState(
        store=store,
        references=references,
        mode=mode,
        machine_lock=MachineLock(default_lock_path()),
    )
    try:
        state.option_layers = options.config_layers(config)
        make_config(*state.option_layers)  # fail fast on a bad --ovq-* / ini value
    except ConfigError as error:
        raise pytest.UsageError(f"pytest-ovquant: {error}") from None
    config.stash[SESSION_KEY] = state
    if not config.getoption("ovq_exit_gc"):
        # At exit the interpreter's last collections walk every object torch, OpenVINO and the
        # model libraries made (1.5-2 s a run here) to free memory the OS takes back anyway.
        # Freezing the heap at exit (not before: an in-process pytester run must not freeze its
        # host) skips that; objects in reference cycles then get no __del__ at exit, which CPython
        # never promises. atexit handlers, pytest's own reports and files closed explicitly are unaffected.
        atexit.register(gc.freeze)


def _artifact_cache(config: pytest.Config) -> ArtifactCache:
    root = Path(config.rootpath, config.getoption("ovq_cache_dir") or config.getini("ovq_cache_dir") or ".ovquant_cache")
    try:
        cache = ArtifactCache(root, enabled=not config.getoption("ovq_no_cache"))
        # only the xdist controller (configured before any worker starts) may empty it
        if config.getoption("ovq_clear_cache") and not _is_xdist_worker(config):
            cache.clear()
    except CacheError as error:
        raise pytest.UsageError(f"pytest-ovquant: {error}") from None
    return cache


def pytest_report_header(config: pytest.Config) -> str:
    machine_id, details = config.stash[SESSION_KEY].machine()
    return report.header_line() + f"\novquant machine {machine_id}: {report.machine_line(details)}"


def _check_lowerings(item: pytest.Item) -> None:
    """Fail a test served a lowered module that does not run the way it claims (before its body)."""
    for lowered, verify in item.stash.get(SERVED_KEY, []):
        r = lowered.report
        item.user_properties.extend(
            [
                (f"ovq_{'int8' if r.quantized else 'fp32'}_lowering", f"{r.lowering}/{r.backend or 'openvino.Core'}"),
                (f"ovq_{'int8' if r.quantized else 'fp32'}_irs", r.n_irs),
            ]
        )
        if r.quantized:
            item.user_properties.append(("ovq_int8_layers", f"{r.int8_layers}/{r.quantized_layers}"))
        if verify and not r.ok:
            pytest.fail(
                f"pytest-ovquant: {lowered.name} does not run as claimed\n{r.describe()}\n"
                "(opt out for this test with @pytest.mark.ovq_quantize(verify=False), or --ovq-no-verify)",
                pytrace=False,
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Check the lowerings before the test body, run the gates after it (a gated test needs no body)."""
    _check_lowerings(item)
    outcome = yield
    try:
        _run_gates(item)
    except OVQuantError as error:  # unusable eval data or reference file: a failure naming it, not a crash
        message = f"pytest-ovquant: {error}"
    else:
        return outcome
    pytest.fail(message, pytrace=False)  # outside the except: the message once, without the chain


def _run_gates(item: pytest.Item) -> None:
    context = item.stash.get(GATE_KEY, None)
    if context is None:
        return
    state = item.config.stash[SESSION_KEY]
    machine_id, details = state.machine()
    gated = run_gates(
        context.plan,
        node_id=item.nodeid,
        model_name=context.model_name,
        config=context.config,
        fp32_model=context.fp32_model,
        int8_model=context.int8_model,
        eval_dataset=context.eval_dataset,
        example_inputs=context.example_inputs,
        baseline_model=context.baseline_model,
        store=state.references,
        machine=machine_id,
        machine_details=details,
        mode=state.mode,
        progress=SampleProgress(item.config, f"evaluating {context.model_name}", context.eval_dataset),
        machine_lock=state.machine_lock,
        fp32_outputs=context.fp32_outputs,
    )
    if context.fp32_outputs is not None and state.store.listener is not None:
        recorded = context.fp32_outputs
        state.store.listener(context.model_name, "evaluate", recorded.seconds, recorded.describe())
    state.outcomes.append(gated)
    item.user_properties.extend(results.junit_properties(gated))
    if gated.verdict == "xfailed":
        pytest.xfail(f"{gated.xfail_reason} (recorded in {gated.reference_file})")
    if gated.verdict == "failed":
        pytest.fail(report.gate_failure_message(gated), pytrace=False)


WORKER_OUTPUT_KEY = "ovquant"


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    if _is_xdist_worker(session.config):
        # Workers write nothing shared: they send their results to the controller, which writes
        # the references, the results file and the summary once (syrupy does the same).
        session.config.workeroutput[WORKER_OUTPUT_KEY] = {  # type: ignore[attr-defined]
            "outcomes": [o.to_dict() for o in state.outcomes],
            "lowerings": [report.lowering_summary(m) for m in state.store.lowered_models()],
        }
        return
    staged = set(state.references.pending)
    try:
        state.written_references = state.references.write_pending()
    except OVQuantError as error:  # the files stay as they were; the run fails and says why
        state.written_references = sorted(staged - set(state.references.pending))
        state.reference_error = str(error)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = session.config.getoption("ovq_results")
    if path:
        results.write_results(Path(path), results.results_payload(state.sorted_outcomes(), state.machine(), state.lowerings()))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file and state.outcomes:
        results.append_markdown(Path(summary_file), report.markdown_summary(state.sorted_outcomes(), report.header_line()))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """Controller side of xdist: take a finished worker's outcomes, lowerings and reference updates."""
    state = node.config.stash.get(SESSION_KEY, None)
    payload = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if state is None or not payload:
        return
    for data in payload["outcomes"]:
        outcome = outcome_from_dict(data)
        state.outcomes.append(outcome)
        if outcome.staged_reference is not None:
            key = split_node_id(outcome.node_id)[1]
            state.references.stage(
                outcome.node_id, TestReference.from_dict(key, outcome.staged_reference, source=f"xdist worker {node.gateway.id}")
            )
    state.remote_lowerings.extend(payload["lowerings"])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    if state.outcomes:
        terminalreporter.section("ovquant gates")
        for line in report.summary_table(state.sorted_outcomes()):
            terminalreporter.write_line(line)
        for path in state.written_references:
            terminalreporter.write_line(f"reference written: {path}")
    if state.reference_error is not None:
        terminalreporter.section("ovquant references not written", red=True)
        terminalreporter.write_line(f"pytest-ovquant: {state.reference_error}", red=True)
    lowerings = state.lowerings()
    if not lowerings:
        return
    terminalreporter.section("ovquant lowering")
    for line in report.lowering_table(lowerings):
        terminalreporter.write_line(line)
    if config.getoption("ovq_show_lowering"):
        for model in state.store.lowered_models():  # full reports exist in this process only
            terminalreporter.write_line("")
            terminalreporter.write_line(f"{model.name}:")
            terminalreporter.write_line(model.report.describe())


# -- user-provided fixtures (defaults explain what to define) ---------------------------------
@pytest.fixture
def ovq_model() -> torch.nn.Module:
    """The FP32 model under test. Override in conftest.py (any scope; may be parametrized)."""
    pytest.fail(
        "pytest-ovquant: define an `ovq_model` fixture (in conftest.py) returning the FP32 torch.nn.Module",
        pytrace=False,
    )


@pytest.fixture
def ovq_example_inputs() -> tuple[Any, ...]:
    """Example inputs for export and compilation: a tuple of tensors. Override in conftest.py."""
    pytest.fail(
        "pytest-ovquant: define an `ovq_example_inputs` fixture (in conftest.py) returning a tuple of "
        "tensors, e.g. (torch.randn(1, 3, 224, 224),)",
        pytrace=False,
    )


@pytest.fixture
def ovq_calibration_dataset(ovq_example_inputs: tuple[Any, ...]) -> Any:
    """Calibration data: an ``nncf.Dataset`` or an iterable of model inputs. Default: the example inputs."""
    warnings.warn(
        "pytest-ovquant: no `ovq_calibration_dataset` fixture; calibrating on the example inputs only. "
        "Define one returning representative inputs for meaningful quantization ranges.",
        OVQuantWarning,
        stacklevel=2,
    )
    return [ovq_example_inputs]


@pytest.fixture
def ovq_model_name(request: pytest.FixtureRequest, ovq_model: torch.nn.Module) -> str:
    """Name used in reports: the ``ovq_model`` parameter when it is a string, else the class name."""
    callspec = getattr(request.node, "callspec", None)
    param = callspec.params.get("ovq_model") if callspec is not None else None
    return param if isinstance(param, str) else type(ovq_model).__name__


@pytest.fixture
def ovq_eval_dataset() -> Any:
    """Evaluation data for ``ovq_accuracy`` gates: an iterable of ``(inputs, target)`` batches."""
    pytest.fail(
        "pytest-ovquant: @pytest.mark.ovq_accuracy needs an `ovq_eval_dataset` fixture (in conftest.py) "
        "yielding (inputs, target) batches; target may be None for cosine/sqnr/max_abs_error",
        pytrace=False,
    )


def _data_dir(config: pytest.Config) -> Path:
    value = config.getoption("ovq_data_dir") or config.getini("ovq_data_dir")
    if not value:
        pytest.fail("pytest-ovquant: the ovq_image_folder_* fixtures need --ovq-data-dir DIR (or ini ovq_data_dir)", pytrace=False)
    return Path(config.rootpath, value)


@pytest.fixture(scope="session")
def ovq_image_transform() -> Any:
    """Preprocessing for the ovq_image_folder_* fixtures; None = ImageNet's (Resize 256, CenterCrop 224,
    Normalize). Override in conftest.py for other sizes or statistics."""
    return None


@pytest.fixture(scope="session")
def ovq_image_folder_calibration(request: pytest.FixtureRequest, ovq_image_transform: Any) -> list[tuple[torch.Tensor]]:
    """Calibration inputs from --ovq-data-dir; return it from ovq_calibration_dataset.

    Session-scoped: it takes subset_size from --ovq-subset-size / ini, not from a test's marker.
    """
    from . import data

    state = request.config.stash[SESSION_KEY]
    root = _data_dir(request.config)
    try:
        calibration, evaluation = data.split_dirs(root)
        if calibration == evaluation:
            warnings.warn(
                f"pytest-ovquant: {root} has no calibration/ and val/ subfolders: calibrating on the images "
                "that are also evaluated, which flatters the INT8 accuracy",
                OVQuantWarning,
                stacklevel=2,
            )
        return data.calibration_set(root, make_config(*state.option_layers).subset_size, ovq_image_transform)
    except OVQuantError as error:
        pytest.fail(f"pytest-ovquant: {error}", pytrace=False)


@pytest.fixture(scope="session")
def ovq_image_folder_eval(request: pytest.FixtureRequest, ovq_image_transform: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches from --ovq-data-dir; return it from ovq_eval_dataset."""
    from . import data

    try:
        return data.eval_set(_data_dir(request.config), transform=ovq_image_transform)
    except OVQuantError as error:
        pytest.fail(f"pytest-ovquant: {error}", pytrace=False)


# -- plugin fixtures -------------------------------------------------------------------------
@pytest.fixture
def ovq_config(request: pytest.FixtureRequest) -> QuantizeConfig:
    """This test's config: defaults < ini < --ovq-* < @pytest.mark.ovq_quantize(...)."""
    state = request.config.stash[SESSION_KEY]
    try:
        return make_config(*state.option_layers, *markers.quantize_marker_layers(request.node))
    except ConfigError as error:
        pytest.fail(f"pytest-ovquant: {error}", pytrace=False)


@pytest.fixture
def ovq_artifacts(
    request: pytest.FixtureRequest, ovq_model: torch.nn.Module, ovq_example_inputs: tuple[Any, ...], ovq_model_name: str
) -> ModelArtifacts:
    """Build-once access to this model's exported / quantized / lowered artifacts."""
    state = request.config.stash[SESSION_KEY]
    artifacts = ModelArtifacts(
        state.store,
        ovq_model,
        ovq_example_inputs,
        ovq_model_name,
        calibration=lambda: request.getfixturevalue("ovq_calibration_dataset"),
    )
    artifacts.machine_lock = state.machine_lock  # type: ignore[attr-defined]
    return artifacts


@pytest.fixture
def ovq_exported_model(ovq_artifacts: ModelArtifacts, ovq_config: QuantizeConfig) -> torch.fx.GraphModule:
    """``torch.export.export(ovq_model, ovq_example_inputs).module()``."""
    with _heavy_work(ovq_artifacts):
        return ovq_artifacts.exported(ovq_config)


@pytest.fixture
def ovq_quantized_model(ovq_artifacts: ModelArtifacts, ovq_config: QuantizeConfig) -> torch.fx.GraphModule:
    """The exported model quantized with OpenVINOQuantizer (quantize/dequantize pairs, not folded)."""
    with _heavy_work(ovq_artifacts):
        return ovq_artifacts.quantized(ovq_config)


def _heavy_work(artifacts: ModelArtifacts) -> Any:
    """Builds run beside other workers' builds, never beside a timed section."""
    lock = getattr(artifacts, "machine_lock", None)
    return lock.shared() if lock is not None else contextlib.nullcontext()


def _serve(request: pytest.FixtureRequest, lowered: LoweredModel, config: QuantizeConfig) -> LoweredModel:
    request.node.stash.setdefault(SERVED_KEY, []).append((lowered, config.verify))
    return lowered


@pytest.fixture
def ovq_compiled_model(
    request: pytest.FixtureRequest, ovq_artifacts: ModelArtifacts, ovq_config: QuantizeConfig
) -> LoweredModel:
    """The INT8 model lowered to OpenVINO; the test fails if it does not really run int8."""
    with _heavy_work(ovq_artifacts):
        lowered = ovq_artifacts.lowered(ovq_config, quantized=True)
    return _serve(request, lowered, ovq_config)


@pytest.fixture
def ovq_compiled_fp32_model(
    request: pytest.FixtureRequest, ovq_artifacts: ModelArtifacts, ovq_config: QuantizeConfig
) -> LoweredModel:
    """The FP32 model lowered the same way (the speed baseline); fails on a fallback to inductor."""
    with _heavy_work(ovq_artifacts):
        lowered = ovq_artifacts.lowered(ovq_config, quantized=False)
    return _serve(request, lowered, ovq_config)


@pytest.fixture
def ovq_lowering_report(ovq_compiled_model: LoweredModel) -> LoweringReport:
    """What OpenVINO runs for ``ovq_compiled_model`` (IRs, FakeQuantize, runtime precisions)."""
    return ovq_compiled_model.report


@pytest.fixture(autouse=True)
def _ovq_gates(request: pytest.FixtureRequest) -> None:
    """For a test with ovq_accuracy / ovq_speedup markers: build what its gates need, at setup."""
    try:
        plan = plan_for(request.node)
    except ConfigError as error:
        pytest.fail(f"pytest-ovquant: {error}", pytrace=False)
    if plan is None:
        return
    config: QuantizeConfig = request.getfixturevalue("ovq_config")
    int8_model: LoweredModel = request.getfixturevalue("ovq_compiled_model")
    fp32_model = request.getfixturevalue("ovq_model")
    baseline = None
    artifacts: ModelArtifacts = request.getfixturevalue("ovq_artifacts")
    eval_dataset = request.getfixturevalue("ovq_eval_dataset") if plan.accuracy else None
    fp32_outputs = None
    if eval_dataset is not None:
        machine_id, _ = request.config.stash[SESSION_KEY].machine()
        fp32_outputs = artifacts.fp32_outputs_store(eval_dataset, chunk_size(artifacts.example_inputs), machine_id)
    if plan.speedup is not None:
        # timed: the lowering itself, never one replayed from the artifact cache (flow.replay)
        with _heavy_work(artifacts):
            int8_model = artifacts.lowered(config, quantized=True, timing=True)
            if plan.speedup.baseline == "ov_fp32":
                request.getfixturevalue("ovq_compiled_fp32_model")  # checked like every served lowering
                baseline = artifacts.lowered(config, quantized=False, timing=True)
            else:
                baseline = fp32_model
    request.node.stash[GATE_KEY] = GateContext(
        plan=plan,
        config=config,
        model_name=request.getfixturevalue("ovq_model_name"),
        fp32_model=fp32_model.eval(),
        int8_model=int8_model,
        example_inputs=request.getfixturevalue("ovq_example_inputs"),
        eval_dataset=eval_dataset,
        baseline_model=baseline,
        fp32_outputs=fp32_outputs,
    )
