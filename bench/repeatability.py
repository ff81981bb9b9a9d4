"""How repeatable is the speed gate's measurement, and how often would a fair threshold fail it?

Run from the project root:

    .venv/bin/python bench/repeatability.py                        # K=6 repeats, N=12 gated runs
    .venv/bin/python bench/repeatability.py --repeats 10 --runs-for-false-failures 20   # ~13-20 min here
    PYTHONPATH=. .venv-legacy/bin/python bench/repeatability.py    # the legacy stack

What it measures. resnet18 (torchvision, random weights ``torch.manual_seed(0)``, eval mode) at
batch 1, built the way the model suite's zoo (root ``conftest.py``) builds it: example input one
random 1x3x224x224 image (seed 1), 8 calibration images (seed 2), default config
(``prepare_pt2e`` / calibrate / ``convert_pt2e``), lowered ONCE through the default
``torch.compile`` lowering. Baseline: the eager FP32 model, called as the plugin's gate calls it
(``lambda: model(*example_inputs)`` under ``torch.no_grad``, as the gate runs it); candidate: the INT8
``LoweredModel``.

Two measurement methods, interleaved run by run (A F A F ...) so that machine drift hits both:

- adaptive: ``gate_runner.measure_for_gate`` (``measure_speedup_adaptive``) with ``SpeedupGate`` defaults (min_rounds 10, warmup 3,
  max_rounds 400, target relative width 3%, budget 30 s, confidence 0.95), exactly the keyword
  arguments ``gate_runner.run_gates`` passes;
- fixed: ``measure_speedup(rounds=30)`` (the pre-adaptive measurement), warmup 3.

Phase 1 (``--repeats`` K): K measurements per method, without a threshold (the adaptive one stops
only when its interval is narrow, at max_rounds or at the budget). Printed per run: speedup,
95% interval (adaptive; the fixed method has none), rounds, stop reason; then per method the
mean, stdev, coefficient of variation (stdev/mean) and median of the K speedups.

Phase 2 (``--runs-for-false-failures`` N): threshold T = 0.9 x the median of the K adaptive
speedups (a gate set 10% below what the machine delivers, which should never fail). N more
measurements per method, the adaptive ones with ``threshold=T`` as the plugin passes
``threshold=gate.min`` (so they may also stop early as "decided"), each judged by the plugin's own
rule: ``decide_speedup(parse_speedup(pytest.mark.ovq_speedup(min=T).mark, "bench"), measurement,
None, machine)``. A run "fails" when the row's status is FAIL (no reference is involved, so only
the min bound can fail it). Printed: each run and the count of false failures per method.

Duration: an adaptive run stops when its interval is 3% narrow (10-50 blocks, 1-4.5 s each for
resnet18 on this 2-core machine), or at its 30 s budget on a loaded machine; K=10, N=20 took 1m23s
on a quiet machine here (2026-12-04), up to 20 minutes when the machine was shared.

Nothing is asserted; the figures are for a human (the machine may be shared: provisional).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import pytest
import torch

from pytest_ovquant.compat import stack_versions
from pytest_ovquant.config import make_config
from pytest_ovquant.flow import export_model, lower, quantize
from pytest_ovquant.gate_runner import measure_for_gate
from pytest_ovquant.gates import FAIL, SpeedupGate, decide_speedup, parse_speedup
from pytest_ovquant.measure.latency import SpeedupMeasurement, measure_speedup

FIXED_ROUNDS = 30
THRESHOLD_FRACTION = 0.9


def build() -> tuple[torch.nn.Module, Any, tuple[torch.Tensor, ...]]:
    """resnet18 as the zoo builds it; returns (eager model, INT8 LoweredModel, example inputs)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    example = (_images(1, 1)[0],)
    calibration = [(x,) for x in _images(8, 2)]
    config = make_config(("bench", {}))
    exported = export_model(model, example, name="resnet18")
    quantized = quantize(exported, config, calibration, name="resnet18")
    int8 = lower(quantized, example, config, quantized=True, name="resnet18")
    return model, int8, example


def _images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 224, 224, generator=generator) for _ in range(count)]


def adaptive(baseline: Callable[[], Any], candidate: Callable[[], Any], gate: SpeedupGate,
             threshold: float | None) -> SpeedupMeasurement:
    """The plugin's own speed-gate measurement (``gate_runner.measure_for_gate``)."""
    return measure_for_gate(gate, baseline, candidate, threshold)


def fixed(baseline: Callable[[], Any], candidate: Callable[[], Any], gate: SpeedupGate) -> SpeedupMeasurement:
    return measure_speedup(baseline, candidate, baseline_name=gate.baseline, rounds=FIXED_ROUNDS, warmup=gate.warmup)


def describe(m: SpeedupMeasurement, seconds: float) -> str:
    interval = f"[{m.interval.low:6.2f}, {m.interval.high:6.2f}]" if m.interval is not None else f"{'-':^16}"
    width = f"{m.interval.relative_width:6.1%}" if m.interval is not None else f"{'-':>6}"
    return (f"{m.speedup:6.2f}x  {interval}  {width}  {m.rounds:4d}  {m.stopped_because:<10}  "
            f"{m.baseline_median_ms:6.2f}/{m.candidate_median_ms:5.2f} ms  {seconds:5.1f}s")


HEADER = f"{'speedup':>7}  {'95% interval':^16}  {'width':>6}  {'pairs':>4}  {'stopped':<10}  {'eager/INT8 med':>16}  {'time':>6}"


def spread(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "stdev": stdev, "cv": stdev / mean if mean else float("nan"),
            "median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=6, help="K: measurements per method in phase 1 (default 6)")
    parser.add_argument("--runs-for-false-failures", type=int, default=12,
                        help="N: gated measurements per method at the threshold 10%% below the median (default 12)")
    args = parser.parse_args(argv)
    if args.repeats < 2 or args.runs_for_false_failures < 1:
        parser.error("need --repeats >= 2 and --runs-for-false-failures >= 1")

    gate_defaults = parse_speedup(pytest.mark.ovq_speedup(min=1.0).mark, "bench")  # SpeedupGate defaults
    print("stack:   " + ", ".join(f"{k} {v}" for k, v in stack_versions().items() if v is not None))
    torch.set_grad_enabled(False)  # the gate times the eager baseline under torch.no_grad
    print(f"threads: torch {torch.get_num_threads()}; grad enabled for the eager baseline: {torch.is_grad_enabled()}")
    print(f"gate defaults: rounds(min pairs)={gate_defaults.rounds} warmup={gate_defaults.warmup} "
          f"max_rounds={gate_defaults.max_rounds} target_width={gate_defaults.target_width:.0%} "
          f"budget={gate_defaults.budget:g}s confidence={gate_defaults.confidence}; fixed: rounds={FIXED_ROUNDS}")

    print("building resnet18 INT8 (torch.compile lowering) once ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    model, int8, example = build()
    print(f"built in {time.perf_counter() - start:.1f}s: {int8!r}; "
          f"{int8.report.int8_layers}/{int8.report.quantized_layers} quantized layers int8", flush=True)
    baseline = lambda: model(*example)  # noqa: E731  (as gate_runner: baseline_model(*example_inputs))
    candidate = lambda: int8(*example)  # noqa: E731

    # -- phase 1 ---------------------------------------------------------------------------------
    k = args.repeats
    print()
    print(f"== phase 1: {k} repeats per method, no threshold, interleaved (adaptive, fixed, adaptive, ...) ==")
    results: dict[str, list[SpeedupMeasurement]] = {"adaptive": [], "fixed": []}
    lines: dict[str, list[str]] = {"adaptive": [], "fixed": []}
    for _ in range(k):
        for method in ("adaptive", "fixed"):
            t0 = time.perf_counter()
            m = adaptive(baseline, candidate, gate_defaults, None) if method == "adaptive" else fixed(baseline, candidate, gate_defaults)
            results[method].append(m)
            lines[method].append(describe(m, time.perf_counter() - t0))
            print(f"  {method:<8} run {len(results[method]):2d}: {lines[method][-1]}", file=sys.stderr, flush=True)
    print(f"{'run':>3}  | adaptive (SpeedupGate defaults): {HEADER}  | fixed rounds={FIXED_ROUNDS}: {HEADER}")
    for i in range(k):
        print(f"{i + 1:>3}  | {' ' * 33}{lines['adaptive'][i]}  | {' ' * 17}{lines['fixed'][i]}")
    stats = {method: spread([m.speedup for m in ms]) for method, ms in results.items()}
    print()
    print(f"{'':<26}  {'adaptive':>10}  {'fixed(30)':>10}")
    for key, label, fmt in (("mean", "mean speedup", "{:.3f}x"), ("stdev", "stdev", "{:.3f}"),
                            ("cv", "CV (stdev/mean)", "{:.2%}"), ("median", "median speedup", "{:.3f}x"),
                            ("min", "min", "{:.3f}x"), ("max", "max", "{:.3f}x")):
        print(f"{label:<26}  {fmt.format(stats['adaptive'][key]):>10}  {fmt.format(stats['fixed'][key]):>10}")
    pairs = {method: statistics.median([m.rounds for m in ms]) for method, ms in results.items()}
    print(f"{'median pairs per run':<26}  {pairs['adaptive']:>10g}  {pairs['fixed']:>10g}")
    stops = ", ".join(f"{reason} {sum(m.stopped_because == reason for m in results['adaptive'])}"
                      for reason in sorted({m.stopped_because for m in results["adaptive"]}))
    print(f"adaptive stop reasons: {stops}")

    # -- phase 2 ---------------------------------------------------------------------------------
    n = args.runs_for_false_failures
    threshold = round(THRESHOLD_FRACTION * stats["adaptive"]["median"], 3)
    gate = parse_speedup(pytest.mark.ovq_speedup(min=threshold).mark, "bench")
    print()
    print(f"== phase 2: threshold T = {THRESHOLD_FRACTION} x adaptive median {stats['adaptive']['median']:.3f}x "
          f"= {threshold:.3f}x (fixed median x {THRESHOLD_FRACTION} would be "
          f"{THRESHOLD_FRACTION * stats['fixed']['median']:.3f}x); {n} gated runs per method, interleaved ==")
    print(f"gate: @pytest.mark.ovq_speedup(min={threshold}) -> {gate}")
    verdicts: dict[str, list[str]] = {"adaptive": [], "fixed": []}
    lines = {"adaptive": [], "fixed": []}
    for _ in range(n):
        for method in ("adaptive", "fixed"):
            t0 = time.perf_counter()
            m = adaptive(baseline, candidate, gate, gate.min) if method == "adaptive" else fixed(baseline, candidate, gate)
            seconds = time.perf_counter() - t0
            row = decide_speedup(gate, m, None, "bench")
            verdict = "FAIL" if row.status == FAIL else "pass"
            verdicts[method].append(verdict)
            lines[method].append(f"{describe(m, seconds)}  {verdict}")
            print(f"  {method:<8} gated run {len(verdicts[method]):2d}: {lines[method][-1]}", file=sys.stderr, flush=True)
    print(f"{'run':>3}  | adaptive, threshold=T: {HEADER}  verdict  | fixed rounds={FIXED_ROUNDS}: {HEADER}  verdict")
    for i in range(n):
        print(f"{i + 1:>3}  | {' ' * 23}{lines['adaptive'][i]}     | {' ' * 17}{lines['fixed'][i]}")
    print()
    for method in ("adaptive", "fixed"):
        failures = verdicts[method].count("FAIL")
        print(f"false failures at T={threshold:.3f}x ({method}): {failures} of {n} ({failures / n:.0%})")
    post_hoc = {method: sum(decide_speedup(gate, m, None, "bench").status == FAIL for m in results[method])
                for method in results}
    print(f"phase-1 measurements judged at T afterwards (no early stop): adaptive {post_hoc['adaptive']} of {k}, "
          f"fixed {post_hoc['fixed']} of {k} would fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
