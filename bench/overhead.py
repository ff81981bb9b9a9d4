"""The plugin's overhead: (a) its speedup vs a bare script's, (b) cold vs warm wall time of the suite.

Run from the project root:

    .venv/bin/python bench/overhead.py                          # (a) 3 bare + 3 plugin runs, then (b)
    .venv/bin/python bench/overhead.py --repeats 2 --pairs 200 --skip-suite
    .venv/bin/python bench/overhead.py --skip-speedup           # only (b)
    .venv/bin/python bench/overhead.py --skip-speedup --suite-repeats 3   # (b), three pairs per mode
    PYTHONPATH=. .venv-legacy/bin/python bench/overhead.py      # the legacy stack

(a) Same model, same run: does the plugin measure the speedup a bare script measures?
resnet18 (torchvision, random weights ``torch.manual_seed(0)``, eval), built as the root
``conftest.py`` zoo builds it (example input: one 1x3x224x224 random image, seed 1; calibration: 8
images, seed 2; default config; default ``torch.compile`` lowering). In this process the INT8 model
is built once; then, alternating (bare, plugin, bare, plugin, ...; ``--repeats`` of each):

- bare: plain loops under ``torch.no_grad()`` after 3 warm-up pairs, each call timed with
  ``time.perf_counter``, two flavours back to back in each bare slot: ``loops`` (``--pairs`` eager
  calls, then ``--pairs`` INT8 calls; ratio of the medians: how a benchmark script usually times
  two models) and ``alternating`` (eager, INT8, eager, INT8 ...; median of the per-pair ratios:
  every call follows a call of the other model, which slows both on this 2-core machine);
- plugin: a real pytest session in a subprocess (same interpreter) on a generated temporary project
  whose conftest builds the same resnet18 / inputs / calibration and whose only test carries
  ``@pytest.mark.ovq_speedup(min=1.0)``; run with ``--ovq-results results.json``, the speedup is
  ``gates[0].rows[gate == "speedup"].int8``. The subprocess builds its own INT8 model.

Printed: every measurement, the medians of bare and plugin and their ratio plugin/bare (the target
is within 5%).

(b) Cold vs warm: ``pytest tests/models -p no:logging -q -m "not ovq_speedup"`` (the model suite
without its speed gates) run twice in a row in a subprocess from the project root, wall time of
each; first with ``-n 0``, then the same pair with ``-n 2`` (two xdist workers); ``--suite-repeats``
runs that N times and prints the medians. If the plugin has an on-disk artifact cache
(``--ovq-cache-dir`` / ``--ovq-clear-cache`` in ``pytest --help``), the cold run uses a fresh
temporary cache directory with ``--ovq-clear-cache`` and the warm run the same directory without it
(so the project's own cache is left alone; ``--project-cache`` uses the default location instead);
if not, it says so and both runs rebuild everything.

Nothing is asserted; the figures are for a human (the machine may be shared: provisional).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
# Speed gates deselected: timing cannot be cached, so it would only blur cold vs warm (issue 5).
SUITE_COMMAND = ["tests/models", "-p", "no:logging", "-q", "-m", "not ovq_speedup"]
XDIST_MODES = {"-n 0": ["-n", "0"], "-n 2": ["-n", "2"]}
WARMUP_PAIRS = 3

# The generated project: the zoo's resnet18 (root conftest.py) and a speed-gated test.
CONFTEST = '''
import pytest
import torch


def _random_images(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 224, 224, generator=generator) for _ in range(count)]


@pytest.fixture(scope="session")
def ovq_model():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="session")
def ovq_example_inputs():
    return (_random_images(1, seed=1)[0],)


@pytest.fixture(scope="session")
def ovq_calibration_dataset():
    return [(x,) for x in _random_images(8, seed=2)]
'''

TEST_MODULE = '''
import pytest


@pytest.mark.ovq_speedup(min=1.0)
def test_resnet18_speedup():
    """No body: the speed gate runs after it."""
'''


# -- (a) -------------------------------------------------------------------------------------------


def _random_images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 224, 224, generator=generator) for _ in range(count)]


def build_int8() -> tuple[torch.nn.Module, Any, tuple[torch.Tensor, ...]]:
    import torchvision

    from pytest_ovquant.config import make_config
    from pytest_ovquant.flow import export_model, lower, quantize

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    example = (_random_images(1, seed=1)[0],)
    calibration = [(x,) for x in _random_images(8, seed=2)]
    config = make_config(("bench", {}))
    quantized = quantize(export_model(model, example, name="resnet18"), config, calibration, name="resnet18")
    return model, lower(quantized, example, config, quantized=True, name="resnet18"), example


def bare_speedup(model: torch.nn.Module, int8: Any, example: tuple[torch.Tensor, ...], pairs: int,
                 how: str) -> dict[str, float]:
    """What a script without the plugin measures, under ``torch.no_grad()``.

    ``loops``: ``pairs`` eager calls, then ``pairs`` INT8 calls; ratio of the two medians (how a
    benchmark script usually times two models). ``alternating``: eager, INT8, eager, INT8 ...;
    median of the per-pair ratios (every INT8 call follows an eager call, and the other way round).
    """
    with torch.no_grad():
        for _ in range(WARMUP_PAIRS):
            model(*example)
            int8(*example)
        eager_s, int8_s = [], []
        if how == "loops":
            for fn, sink in ((model, eager_s), (int8, int8_s)):
                for _ in range(pairs):
                    start = time.perf_counter()
                    fn(*example)
                    sink.append(time.perf_counter() - start)
            speedup = statistics.median(eager_s) / statistics.median(int8_s)
        else:
            for _ in range(pairs):
                start = time.perf_counter()
                model(*example)
                eager_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                int8(*example)
                int8_s.append(time.perf_counter() - start)
            speedup = statistics.median(e / i for e, i in zip(eager_s, int8_s))
    return {
        "speedup": speedup,
        "eager_ms": statistics.median(eager_s) * 1e3,
        "int8_ms": statistics.median(int8_s) * 1e3,
    }


def plugin_registered() -> bool:
    """Is pytest-ovquant's pytest11 entry point installed (else the subprocess needs -p)?"""
    return any(ep.value.startswith("pytest_ovquant") for ep in metadata.entry_points(group="pytest11"))


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def plugin_speedup(workdir: Path) -> dict[str, Any]:
    """One pytest session on the generated project; the speed row from --ovq-results."""
    results = workdir / "results.json"
    results.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ovq-results", str(results)]
    if not plugin_registered():
        command[3:3] = ["-p", "pytest_ovquant.plugin"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=workdir, env=subprocess_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not results.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"the pytest session wrote no {results.name} (exit {proc.returncode}):\n{tail}")
    payload = json.loads(results.read_text())
    row = next(r for r in payload["gates"][0]["rows"] if r["gate"] == "speedup")
    return {
        "speedup": row["int8"],
        "eager_ms": row["fp32"],  # the gate stores the baseline's median ms there
        "interval": row.get("interval"),
        "notes": row.get("notes") or [],
        "status": row["status"],
        "exit": proc.returncode,
        "wall": wall,
    }


def part_a(args: argparse.Namespace) -> None:
    print("== (a) speedup measured by a bare script vs by the plugin (resnet18, batch 1, torch.compile INT8) ==")
    print("building resnet18 INT8 once in this process ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    model, int8, example = build_int8()
    print(f"built in {time.perf_counter() - start:.1f}s: {int8!r}; plugin via "
          f"{'pytest11 entry point' if plugin_registered() else '-p pytest_ovquant.plugin'}; "
          f"bare: {args.pairs} pairs after {WARMUP_PAIRS} warm-up pairs", flush=True)
    bare: dict[str, list[float]] = {"loops": [], "alternating": []}
    plugin: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ovq-overhead-") as tmp:
        workdir = Path(tmp)
        (workdir / "pytest.ini").write_text("[pytest]\n")
        (workdir / "conftest.py").write_text(textwrap.dedent(CONFTEST).lstrip())
        (workdir / "test_speed.py").write_text(textwrap.dedent(TEST_MODULE).lstrip())
        for index in range(1, args.repeats + 1):
            for how, sink in bare.items():
                b = bare_speedup(model, int8, example, args.pairs, how)
                sink.append(b["speedup"])
                print(f"  bare   #{index} ({how:<11}): speedup {b['speedup']:6.2f}x  "
                      f"eager {b['eager_ms']:6.2f} ms  INT8 {b['int8_ms']:5.2f} ms", flush=True)
            print(f"  running pytest session #{index} ...", file=sys.stderr, flush=True)
            p = plugin_speedup(workdir)
            plugin.append(p["speedup"])
            interval = f"[{p['interval'][0]:.2f}, {p['interval'][1]:.2f}]" if p["interval"] else "-"
            print(f"  plugin #{index}                : speedup {p['speedup']:6.2f}x  "
                  f"eager {p['eager_ms']:6.2f} ms  interval {interval}  status {p['status']!r}  "
                  f"exit {p['exit']}  session {p['wall']:.1f}s  ({'; '.join(p['notes'])})", flush=True)
    med_p = statistics.median(plugin)
    print()
    for how, values in bare.items():
        print(f"median bare ({how:<11}) : {statistics.median(values):.3f}x")
    print(f"median plugin              : {med_p:.3f}x")
    for how, values in bare.items():
        ratio = med_p / statistics.median(values)
        verdict = "within" if abs(ratio - 1) <= 0.05 else "NOT within"
        print(f"plugin / bare ({how:<11}) : {ratio:.3f} ({ratio - 1:+.1%}; {verdict} 5%)")


# -- (b) -------------------------------------------------------------------------------------------


def cache_options() -> tuple[bool, bool]:
    """(--ovq-cache-dir exists, --ovq-clear-cache exists), from ``pytest --help``."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True)
    return "--ovq-cache-dir" in proc.stdout, "--ovq-clear-cache" in proc.stdout


def run_suite(extra: list[str]) -> tuple[float, int, str]:
    command = [sys.executable, "-m", "pytest", *SUITE_COMMAND, *extra]
    if not plugin_registered():
        command[3:3] = ["-p", "pytest_ovquant.plugin"]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line
                                                                          or "error" in line)), lines[-1] if lines else "")
    return wall, proc.returncode, summary.strip("= ")


def part_b(args: argparse.Namespace) -> None:
    print()
    print(f"== (b) cold vs warm wall time: pytest {' '.join(SUITE_COMMAND)} (subprocess, cwd {ROOT}) ==")
    has_dir, has_clear = cache_options()
    tmp = None
    if has_dir and has_clear:
        if args.project_cache:
            cold_extra, warm_extra = ["--ovq-clear-cache"], []
            where = "the project's default cache location"
        else:
            tmp = tempfile.TemporaryDirectory(prefix="ovq-cache-")
            cold_extra = ["--ovq-cache-dir", tmp.name, "--ovq-clear-cache"]
            warm_extra = ["--ovq-cache-dir", tmp.name]
            where = f"a fresh temporary cache directory {tmp.name}"
        print(f"artifact cache options found (--ovq-cache-dir, --ovq-clear-cache): cold = {' '.join(cold_extra)}, "
              f"warm = {' '.join(warm_extra) or '(no option)'}; cache in {where}")
    else:
        missing = [o for o, ok in (("--ovq-cache-dir", has_dir), ("--ovq-clear-cache", has_clear)) if not ok]
        print(f"no on-disk artifact cache options in `pytest --help` (missing: {', '.join(missing)}): "
              "both runs build every artifact; 'warm' differs only by OS file caches / bytecode")
        cold_extra, warm_extra = [], []
    try:
        pairs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in XDIST_MODES}
        for repeat in range(args.suite_repeats):
            for mode, mode_args in XDIST_MODES.items():  # each mode: a cold run (cleared cache), then a warm one
                walls = {}
                for label, extra in (("cold", cold_extra), ("warm", warm_extra)):
                    print(f"  running the {label} suite ({mode}, pair {repeat + 1}) ...", file=sys.stderr, flush=True)
                    wall, code, summary = run_suite(mode_args + extra)
                    walls[label] = wall
                    print(f"{label:<5} {mode}: {wall:7.1f}s wall  exit {code}  [{summary}]", flush=True)
                pairs[mode].append((walls["cold"], walls["warm"]))
        medians = {}
        for mode, runs in pairs.items():
            ratios = [cold / warm for cold, warm in runs]
            cold, warm = statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)
            medians[mode] = (cold, warm)
            spread = f"; per pair {', '.join(f'{r:.1f}x' for r in ratios)}" if len(runs) > 1 else ""
            print(f"{mode}: cold / warm {statistics.median(ratios):.1f}x (medians: {cold:.1f}s vs {warm:.1f}s, "
                  f"{cold - warm:+.1f}s saved by the warm run{spread})")
        for index, label in enumerate(("cold", "warm")):
            n0, n2 = medians["-n 0"][index], medians["-n 2"][index]
            print(f"{label}: -n 0 / -n 2 {n0 / n2:.2f}x ({n0:.1f}s vs {n2:.1f}s)")
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="(a): bare and plugin measurements, each (default 3)")
    parser.add_argument("--pairs", type=int, default=100, help="(a): timed pairs per bare measurement (default 100)")
    parser.add_argument("--suite-repeats", type=int, default=1,
                        help="(b): cold/warm pairs per xdist mode (default 1); medians are printed")
    parser.add_argument("--skip-speedup", action="store_true", help="skip (a)")
    parser.add_argument("--skip-suite", action="store_true", help="skip (b)")
    parser.add_argument("--project-cache", action="store_true",
                        help="(b): use (and clear) the project's default cache instead of a temporary one")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.pairs < 1 or args.suite_repeats < 1:
        parser.error("need --repeats, --pairs and --suite-repeats >= 1")
    from pytest_ovquant.compat import stack_versions

    print("stack:   " + ", ".join(f"{k} {v}" for k, v in stack_versions().items() if v is not None))
    print(f"threads: torch {torch.get_num_threads()} (os.cpu_count {os.cpu_count()})")
    if not args.skip_speedup:
        part_a(args)
    if not args.skip_suite:
        part_b(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
