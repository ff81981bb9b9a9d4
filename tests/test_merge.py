"""`python -m pytest_ovquant merge`: results of several CI jobs become one summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_ovquant.gate_runner import GateOutcome, outcome_from_dict
from pytest_ovquant.gates import GateRow
from pytest_ovquant.merge import main
from pytest_ovquant.results import RESULTS_SCHEMA_VERSION


def outcome(node_id: str, verdict: str, int8: float) -> GateOutcome:
    row = GateRow("accuracy", "top1", int8, fp32=0.9, drop=0.9 - int8, reference=0.89, difference=int8 - 0.89,
                  allowed="drop <= 0.01", status="pass" if verdict == "passed" else "FAIL", interval=[0.0, 0.02])
    return GateOutcome(node_id, "m", [row], "reference_metrics/t.yaml", "abc", verdict=verdict)


def write(path, outcomes, lowering_model="m"):
    path.write_text(
        json.dumps(
            {
                "schema_version": RESULTS_SCHEMA_VERSION,
                "stack": {"torch": "x"},
                "machine": {"id": "abc"},
                "gates": [o.to_dict() for o in outcomes],
                "lowerings": [
                    {"model": lowering_model, "lowering": "export", "backend": None, "quantized": True, "n_irs": 1,
                     "fake_quantize": 3, "int8_layers": 3, "quantized_layers": 3, "precisions": {}, "problems": []}
                ],
            }
        )
    )
    return path


def test_outcomes_round_trip_through_plain_data():
    original = outcome("t.py::test_a", "failed", 0.85)
    assert outcome_from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_shards_merge_into_one_table_and_a_failure_sets_the_exit_code(tmp_path, capsys):
    a = write(tmp_path / "a.json", [outcome("t.py::test_a", "passed", 0.895)])
    b = write(tmp_path / "b.json", [outcome("t.py::test_b", "failed", 0.80)], lowering_model="n")
    md = tmp_path / "summary.md"
    out_json = tmp_path / "merged.json"
    code = main([str(a), str(b), "--markdown", str(md), "--output", str(out_json)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "t.py::test_a" in printed and "t.py::test_b" in printed
    assert "1 gated test(s) failed: t.py::test_b" in printed
    merged = json.loads(out_json.read_text())
    assert [g["node_id"] for g in merged["gates"]] == ["t.py::test_a", "t.py::test_b"]
    assert len(merged["lowerings"]) == 2 and len(merged["jobs"]) == 2
    assert "| `t.py::test_b` | top1 |" in md.read_text()
    assert main([str(a)]) == 0


def test_the_same_test_in_two_files_keeps_the_later_and_warns(tmp_path, capsys):
    a = write(tmp_path / "a.json", [outcome("t.py::test_a", "failed", 0.5)])
    b = write(tmp_path / "b.json", [outcome("t.py::test_a", "passed", 0.9)])
    assert main([str(a), str(b)]) == 0
    assert "keeping" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such results file"), ("{not json", "not valid JSON"), ('{"schema_version": 99}', "schema_version=99")],
)
def test_bad_results_files_are_named(tmp_path, capsys, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "pytest_ovquant"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: python -m pytest_ovquant {merge}" in result.stderr
