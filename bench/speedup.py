"""Latency of a torchvision CNN: eager FP32 vs OpenVINO FP32 vs OpenVINO INT8 (PT2E + OpenVINOQuantizer).

Run from the project root:

    .venv/bin/python bench/speedup.py                       # resnet18, batch 1, 30 rounds
    .venv/bin/python bench/speedup.py --model mobilenet_v3_small --rounds 50 --fp32-precision f32
    PYTHONPATH=. /path/to/other/venv/bin/python bench/speedup.py --json /tmp/speedup.json

What it measures. The model (random weights, ``torch.manual_seed(0)``, eval mode) is exported
once with ``pytest_ovquant.flow.export_model``, quantized once with ``quantize`` (OpenVINOQuantizer,
16 random calibration inputs), and then lowered to OpenVINO with ``lower`` through both lowerings
(``"torch.compile"`` and ``"export"``), FP32 and INT8. Five variants are timed:

    eager FP32 (torch, no_grad), OV FP32 / OV INT8 per lowering.

Every variant is called ``--warmup`` times first (not timed; the first calls compile), then
``--rounds`` rounds are timed with ``time.perf_counter``; in each round every variant is called
once, in an order that rotates from round to round, so that the drift of a shared, noisy machine
hits all variants alike. The table shows the median latency per variant with its interquartile
range (IQR); speedups are baseline/candidate (> 1: candidate is faster), given as the median of
the per-round ratios (with its IQR) and, next to it, as the ratio of the medians.

Each lowered module's report (``LoweredModel.report``) is printed as well: number of OpenVINO
IRs, FakeQuantize count, quantized layers that really run in int8 and the inference precision
hint, so one can see that the INT8 variants run int8 and which precision the FP32 baseline uses
(OpenVINO's default is bf16 on CPUs with AMX/AVX512-BF16; ``--fp32-precision f32`` forces f32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torchvision

from pytest_ovquant.compat import stack_versions
from pytest_ovquant.config import make_config
from pytest_ovquant.flow import export_model, lower, quantize

MODELS = ("resnet18", "mobilenet_v3_small")
LOWERINGS = ("torch.compile", "export")
CALIBRATION_SIZE = 16
RESOLUTION = 224


@dataclass
class Variant:
    label: str
    fn: Callable[[], Any]
    report: Any = None  # LoweringReport for the OpenVINO variants
    times: list[float] = field(default_factory=list)  # seconds, one per round


# -- statistics ------------------------------------------------------------------------------------


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q1, q3


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}"


# -- setup -----------------------------------------------------------------------------------------


def build_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def ov_default_precision() -> str:
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


def report_line(report: Any) -> str:
    """A one-line summary of a LoweringReport."""
    kind = "INT8" if report.quantized else "FP32"
    layers = ", ".join(
        f"{n} {kind_} {prec}" for kind_, by_prec in report.precision_counts().items() for prec, n in by_prec.items()
    )
    text = (
        f"{kind} backend={report.backend or '-'} IRs={report.n_irs} FakeQuantize={report.fake_quantize} "
        f"hint={report.inference_precision or '?'} layers=[{layers or 'none'}]"
    )
    if report.quantized:
        text += f" int8_layers={report.int8_layers}/{report.quantized_layers} quantized"
    if not report.ok:
        text += f" PROBLEMS={len(report.problems())}"
    return text


def agreement(reference: torch.Tensor, output: Any) -> str:
    """Cosine similarity and max abs difference of an output against the eager one."""
    out = output[0] if isinstance(output, (tuple, list)) else output
    a, b = reference.flatten().double(), out.detach().flatten().double()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    return f"cos={cosine:.5f} max|diff|={(a - b).abs().max().item():.3g}"


def prepare(args: argparse.Namespace) -> tuple[list[Variant], dict[str, Any]]:
    model = build_model(args.model)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, RESOLUTION, RESOLUTION)
    x = torch.randn(shape, generator=generator)
    calibration = [(torch.randn(shape, generator=generator),) for _ in range(CALIBRATION_SIZE)]

    overrides: dict[str, Any] = {}
    if args.fp32_precision:
        overrides["fp32_inference_precision"] = args.fp32_precision

    info: dict[str, Any] = {"setup_seconds": {}}
    start = time.perf_counter()
    exported = export_model(model, (x,), name=args.model)
    info["setup_seconds"]["export"] = time.perf_counter() - start

    # The quantized graph does not depend on the lowering: quantize once.
    start = time.perf_counter()
    quantized = quantize(exported, make_config(("bench", {**overrides})), calibration, name=args.model)
    info["setup_seconds"]["quantize"] = time.perf_counter() - start

    variants = [Variant("eager FP32", lambda: model(x))]
    for lowering in LOWERINGS:
        cfg = make_config(("bench", {"lowering": lowering, **overrides}))
        for kind, graph, is_int8 in (("FP32", exported, False), ("INT8", quantized, True)):
            print(f"  lowering {kind} via {lowering} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            lowered = lower(graph, (x,), cfg, quantized=is_int8, name=args.model)
            info["setup_seconds"][f"lower {kind} {lowering}"] = time.perf_counter() - start
            variants.append(Variant(f"OV {kind} [{lowering}]", lambda m=lowered: m(x), lowered.report))

    with torch.no_grad():
        reference = model(x)
        info["agreement"] = {v.label: agreement(reference, v.fn()) for v in variants[1:]}
    return variants, info


# -- measurement -----------------------------------------------------------------------------------


def measure(variants: list[Variant], rounds: int, warmup: int) -> None:
    """Interleaved round-robin timing; the call order rotates every round."""
    n = len(variants)
    with torch.no_grad():
        for r in range(warmup):
            for i in range(n):
                variants[(r + i) % n].fn()
        for r in range(rounds):
            for i in range(n):
                variant = variants[(r + i) % n]
                start = time.perf_counter()
                variant.fn()
                variant.times.append(time.perf_counter() - start)


def ratio_stats(baseline: Variant, candidate: Variant) -> dict[str, float]:
    """Speedup baseline/candidate: median of per-round ratios (+IQR) and ratio of medians."""
    per_round = [b / c for b, c in zip(baseline.times, candidate.times)]
    median, q1, q3 = median_iqr(per_round)
    return {
        "median_of_ratios": median,
        "q1": q1,
        "q3": q3,
        "ratio_of_medians": statistics.median(baseline.times) / statistics.median(candidate.times),
    }


# -- output ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="resnet18")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument(
        "--fp32-precision",
        choices=("f32", "bf16"),
        default=None,
        help="INFERENCE_PRECISION_HINT of the OpenVINO FP32 baseline (default: OpenVINO's default)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.batch < 1 or args.warmup < 0:
        parser.error("need --rounds >= 2, --batch >= 1, --warmup >= 0")

    print(f"preparing {args.model} (batch {args.batch}) ...", file=sys.stderr, flush=True)
    variants, info = prepare(args)
    print(f"measuring: {args.warmup} warm-up + {args.rounds} timed rounds ...", file=sys.stderr, flush=True)
    measure(variants, args.rounds, args.warmup)

    versions = stack_versions()
    default_hint = ov_default_precision()
    by_label = {v.label: v for v in variants}
    eager = by_label["eager FP32"]

    print()
    print(f"== {args.model}, batch {args.batch}, {RESOLUTION}x{RESOLUTION}, random weights (seed 0) ==")
    print("stack:   " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    print(
        f"threads: torch {torch.get_num_threads()} (os.cpu_count {os.cpu_count()}); "
        f"OpenVINO CPU default INFERENCE_PRECISION_HINT {default_hint}; "
        f"FP32 baseline hint: {args.fp32_precision or 'default'} -> in effect "
        + ", ".join(f"[{l}] {by_label[f'OV FP32 [{l}]'].report.inference_precision or '?'}" for l in LOWERINGS)
    )
    print(f"timing:  {args.warmup} warm-up + {args.rounds} interleaved rounds, rotating order, perf_counter")

    print()
    width = max(len(v.label) for v in variants)
    print(f"{'variant':<{width}}  {'median ms':>9}  {'IQR ms':>17}  {'min ms':>8}")
    for v in variants:
        median, q1, q3 = median_iqr(v.times)
        print(f"{v.label:<{width}}  {ms(median):>9}  {ms(q1)} - {ms(q3).strip():<8}  {ms(min(v.times))}")

    comparisons = []
    for lowering in LOWERINGS:
        fp32, int8 = by_label[f"OV FP32 [{lowering}]"], by_label[f"OV INT8 [{lowering}]"]
        comparisons += [
            (f"{'INT8 vs eager FP32':<21} [{lowering}]", eager, int8),
            (f"{'INT8 vs OV FP32':<21} [{lowering}]", fp32, int8),
            (f"{'OV FP32 vs eager FP32':<21} [{lowering}]", eager, fp32),
        ]
    ratios = {name: ratio_stats(base, cand) for name, base, cand in comparisons}
    print()
    print("speedup = baseline time / candidate time (> 1: candidate faster)")
    cwidth = max(len(name) for name in ratios)
    print(f"{'comparison':<{cwidth}}  {'median of per-round':>19}  {'IQR':>13}  {'ratio of medians':>16}")
    for name, r in ratios.items():
        print(
            f"{name:<{cwidth}}  {r['median_of_ratios']:>18.2f}x  {r['q1']:>5.2f} - {r['q3']:<5.2f}  "
            f"{r['ratio_of_medians']:>15.2f}x"
        )

    print()
    print("lowering reports (what OpenVINO runs) and output agreement with eager:")
    for v in variants[1:]:
        print(f"  {v.label:<{width}}  {report_line(v.report)}")
        print(f"  {'':<{width}}  {info['agreement'][v.label]}, lowering took {v.report.compile_seconds:.1f}s")
        for problem in v.report.problems():
            print(f"  {'':<{width}}  PROBLEM: {problem}")

    if args.json:
        figures = {
            "model": args.model,
            "batch": args.batch,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "fp32_precision_requested": args.fp32_precision,
            "ov_default_inference_precision": default_hint,
            "torch_threads": torch.get_num_threads(),
            "stack": versions,
            "setup_seconds": info["setup_seconds"],
            "latency_ms": {
                v.label: dict(zip(("median", "q1", "q3"), (t * 1e3 for t in median_iqr(v.times))))
                | {"min": min(v.times) * 1e3, "samples": [t * 1e3 for t in v.times]}
                for v in variants
            },
            "speedups": ratios,
            "reports": {v.label: v.report.to_dict() for v in variants[1:]},
            "agreement": info["agreement"],
        }
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2, default=str)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
