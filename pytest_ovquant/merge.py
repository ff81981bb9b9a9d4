"""Merge the JSON results of several CI jobs (shards, matrix legs) into one summary.

``python -m pytest_ovquant merge RESULTS.json... [--markdown OUT.md] [--output MERGED.json]``
prints the gate table of all jobs together and exits 1 when any gate failed, so a final CI job can
gate on the whole run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from . import report
from .atomic import atomic_write_text
from .gate_runner import GateOutcome, outcome_from_dict
from .results import RESULTS_SCHEMA_VERSION


class MergeError(ValueError):
    """A results file cannot be merged (names the file and why)."""


def load_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: no such results file (was the job run with --ovq-results {path}?)") from None
    except json.JSONDecodeError as error:
        raise MergeError(f"{path}: not valid JSON ({error}); was the job killed while writing it?") from None
    if not isinstance(data, dict) or data.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise MergeError(
            f"{path}: not a pytest-ovquant results file of schema {RESULTS_SCHEMA_VERSION} "
            f"(found schema_version={data.get('schema_version') if isinstance(data, dict) else None!r})"
        )
    return data


def merge(paths: Sequence[Path]) -> tuple[dict[str, Any], list[str]]:
    """(merged results, warnings). A test found in two files keeps the later file's result."""
    gates: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    lowerings: dict[tuple, dict[str, Any]] = {}
    jobs = []
    warnings: list[str] = []
    for path in paths:
        data = load_results(path)
        jobs.append({"file": str(path), "stack": data.get("stack"), "machine": data.get("machine")})
        for gate in data.get("gates", []):
            node_id = gate["node_id"]
            if node_id in gates:
                warnings.append(f"{node_id} is in {sources[node_id]} and {path}; keeping {path}")
            gates[node_id] = gate
            sources[node_id] = path
        for row in data.get("lowerings", []):
            lowerings.setdefault((row["model"], row.get("variant"), row["lowering"], row["backend"], row["quantized"]), row)
    merged = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "jobs": jobs,
        "gates": [gates[k] for k in sorted(gates)],
        "lowerings": sorted(lowerings.values(), key=lambda r: (r["model"], r["lowering"], not r["quantized"])),
    }
    return merged, warnings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ovquant merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results files written with --ovq-results")
    parser.add_argument("--markdown", type=Path, help="also write the summary as Markdown (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--output", type=Path, help="write the merged results JSON here")
    args = parser.parse_args(argv)
    try:
        merged, warnings = merge(args.results)
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    outcomes: list[GateOutcome] = [outcome_from_dict(g) for g in merged["gates"]]
    header = f"{len(args.results)} job(s): " + ", ".join(str(p) for p in args.results)
    print(header)
    for line in report.summary_table(outcomes) if outcomes else ["no gated tests in these results"]:
        print(line)
    if merged["lowerings"]:
        print()
        for line in report.lowering_table(merged["lowerings"]):
            print(line)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:  # a step summary is appended to
            handle.write(report.markdown_summary(outcomes, header))
    if args.output:
        atomic_write_text(args.output, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    failed = [o.node_id for o in outcomes if o.verdict == "failed"]
    if failed:
        print(f"\n{len(failed)} gated test(s) failed: " + ", ".join(failed))
        return 1
    return 0
