"""Faults, through real pytest sessions in subprocesses: SIGKILL while references are written,
Ctrl-C during calibration, concurrent reference updates, a full disk, a tampered cache entry.

Every session runs a tiny CNN with the export lowering. Sessions that do not test the cache share
one warm artifact cache (``faults_cache``), so after the first one they load the quantized program
and the IR instead of building them.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, deque
from pathlib import Path

import pytest
import yaml

from small_models import FIDELITY_EVAL_FIXTURE, tiny_cnn_project

from pytest_ovquant import atomic
from pytest_ovquant.cache import ArtifactCache
from pytest_ovquant.references import MetricValues, ReferenceFileError, ReferenceStore, TestReference

SESSION_TIMEOUT_S = 300

PROJECT_CONFTEST = tiny_cnn_project(4, FIDELITY_EVAL_FIXTURE)

INI = "[pytest]\novq_lowering = export\n"


def gated_module(tests: int) -> str:
    """A module of cheap gated tests: cosine of INT8 to FP32 on 4 samples."""
    body = ["import pytest\n"]
    for index in range(tests):
        body.append(f'\n@pytest.mark.ovq_accuracy(metric="cosine", min_value=0.5)\ndef test_t{index}():\n    pass\n')
    return "".join(body)


def failing_reference(keys: list[str]) -> str:
    """A committed reference that every listed test fails (INT8 cosine 1.5 cannot be reached)."""
    tests = {key: {"metrics": {"cosine": {"fp32": 1.0, "int8": 1.5, "drop": -0.5}}} for key in keys}
    return "# old reference, written by hand\n" + yaml.safe_dump({"schema_version": 1, "tests": tests})


def make_project(pytester: pytest.Pytester, modules: dict[str, int], conftest_extra: str = "") -> None:
    pytester.makeini(INI)
    pytester.makeconftest(PROJECT_CONFTEST + textwrap.dedent(conftest_extra))
    pytester.makepyfile(**{name: gated_module(tests) for name, tests in modules.items()})


def session_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS", "PYTEST_CURRENT"))}
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra)
    return env


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def reference_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "reference_metrics"


def leftovers(directory: Path) -> list[str]:
    """Files next to the reference files that are neither a reference file nor its lock file."""
    names = sorted(p.name for p in directory.iterdir())
    return [n for n in names if not n.endswith(".yaml") and not (n.endswith(".yaml.lock") and n[: -len(".lock")] in names)]


def parsed_keys(path: Path) -> dict:
    """The file's entries after the store's own strict validation (raises if it does not parse)."""
    store = ReferenceStore(path.parent, {})
    node = f"{path.stem}.py::x"
    store.get(node)  # validates the whole file
    return yaml.safe_load(path.read_text())["tests"]


@pytest.fixture(scope="module")
def faults_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact cache for the sessions of this module that do not test the cache itself."""
    return tmp_path_factory.mktemp("faults-cache")


class Events:
    """Lines a session writes to a pipe (see the project conftests below), read with a deadline."""

    def __init__(self, fd: int, output: Path):
        self.fd = fd
        self.output = output
        self.buffer = b""
        self.lines: deque[list[str]] = deque()

    def next(self, timeout: float = SESSION_TIMEOUT_S) -> list[str]:
        deadline = time.monotonic() + timeout
        while not self.lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no event from the session in {timeout} s; its output:\n{self.session_output()}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise AssertionError(f"the session exited before the expected event; its output:\n{self.session_output()}")
            self.buffer += chunk
            *complete, self.buffer = self.buffer.split(b"\n")
            self.lines.extend(line.decode().split() for line in complete)
        return self.lines.popleft()

    def expect(self, word: str, timeout: float = SESSION_TIMEOUT_S) -> list[str]:
        """The next event named ``word``; the events skipped on the way are returned by ``skipped``."""
        self.skipped: list[list[str]] = []
        while True:
            event = self.next(timeout)
            if event[0] == word:
                return event
            self.skipped.append(event)

    def session_output(self) -> str:
        return self.output.read_text(errors="replace")[-6000:] if self.output.exists() else "(none)"


# ---------------------------------------------------------------------------------------------
# 1. SIGKILL while --ovq-update-refs writes the reference files

# Right before the plugin's pytest_sessionfinish (which writes the references), the session forks
# a copy of itself for each round the test asks for: the copy is this very session (all gate
# results staged) and writes the references with the plugin's real code; the test SIGKILLs it at a
# random moment of that write. The session itself writes last, undisturbed: the complete new files.
# (One fork per kill instead of one session per kill: a session costs ~10 s here, a fork ~ms.)
KILL_HOOKS = """
import os
import signal

_EVENTS = int(os.environ["FAULTS_EVENTS_FD"])
_GO = int(os.environ["FAULTS_GO_FD"])
_ROLE = {"child": False}


def _say(*words):
    os.write(_EVENTS, (" ".join(map(str, words)) + "\\n").encode())


class _BeforeTheWrite:
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        while os.read(_GO, 1) == b"k":  # the test has put the old files back: one more round
            pid = os.fork()
            if pid == 0:
                _ROLE["child"] = True
                _say("start", os.getpid())
                return  # on to the plugin's pytest_sessionfinish: the real write
            _, status = os.waitpid(pid, 0)
            _say("reaped", pid, status)
        _say("start", os.getpid())


class _AfterTheWrite:
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        _say("end", os.getpid())
        if _ROLE["child"]:
            while True:  # wait for the SIGKILL; never run the rest of the session twice
                signal.pause()


def pytest_configure(config):
    config.pluginmanager.register(_BeforeTheWrite(), "faults_before_the_write")
    config.pluginmanager.register(_AfterTheWrite(), "faults_after_the_write")
"""

KILL_MODULES = {f"test_m{index}": 4 for index in range(6)}
TEMP_FILE = re.compile(r"\.test_m\d\.yaml\.[0-9a-f]{8}\.tmp")  # atomic.py's named temp file
KILL_ROUNDS = 24


def test_sigkill_during_update_refs_leaves_every_reference_file_old_or_new(pytester, faults_cache):
    make_project(pytester, KILL_MODULES, KILL_HOOKS)
    refs = reference_dir(pytester)
    refs.mkdir()
    old = {}
    for module, tests in KILL_MODULES.items():
        path = refs / f"{module}.yaml"
        path.write_text(failing_reference([f"test_t{i}" for i in range(tests)]))
        old[path] = path.read_bytes()
        assert set(parsed_keys(path)) == {f"test_t{i}" for i in range(tests)}

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    events_r, events_w = os.pipe()
    go_r, go_w = os.pipe()
    output = pytester.path / "session-output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            pytest_argv("--ovq-update-refs", f"--ovq-cache-dir={faults_cache}", "-q", "-p", "no:xdist"),
            cwd=pytester.path,
            env=session_env(FAULTS_EVENTS_FD=str(events_w), FAULTS_GO_FD=str(go_r)),
            pass_fds=(events_w, go_r),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    os.close(events_w)
    os.close(go_r)
    events = Events(events_r, output)
    rounds: list[dict] = []
    try:
        os.write(go_w, b"k")
        window = None
        for index in range(KILL_ROUNDS):
            _, pid = events.expect("start")
            started = time.perf_counter()
            if window is None:  # round 0: how long the write takes from the signal; kill after it
                events.expect("end")
                window = time.perf_counter() - started
                delay = window
            else:  # the kill moment: uniform over the write window (and a little after it)
                delay = rng.uniform(0.0, 1.25 * window)
                time.sleep(delay)
            os.kill(int(pid), signal.SIGKILL)
            _, reaped, status = events.expect("reaped")
            finished = index == 0 or any(event[0] == "end" for event in events.skipped)
            assert int(reaped) == int(pid)
            assert os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGKILL, status
            rounds.append(
                {
                    "delay_ms": round(delay * 1000, 2),
                    "finished": finished,
                    "files": {path: path.read_bytes() if path.exists() else None for path in old},
                    "leftovers": leftovers(refs),
                }
            )
            for path, content in old.items():  # the next round starts from the old files again
                if path.read_bytes() != content:
                    path.write_bytes(content)
            os.write(go_w, b"k" if index + 1 < KILL_ROUNDS else b"f")
        events.expect("end", timeout=SESSION_TIMEOUT_S)
        returncode = proc.wait(timeout=SESSION_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(go_w)
        os.close(events_r)

    text = output.read_text(errors="replace")
    assert returncode == 1, text[-4000:]  # the old references failed every gated test
    assert "24 failed" in text, text[-4000:]
    # the undisturbed write: the complete new files, every key rewritten with the measured values
    new = {path: path.read_bytes() for path in old}
    for path in old:
        entries = parsed_keys(path)
        assert set(entries) == {f"test_t{i}" for i in range(4)}
        assert all(e["metrics"]["cosine"]["int8"] < 1.01 and e["environment"] for e in entries.values())
        assert new[path] != old[path]

    states = Counter()
    per_file = Counter()
    problems = []
    left_temp_files: set[str] = set()
    for number, observed in enumerate(rounds):
        kinds = []
        for path, content in observed["files"].items():
            kind = "old" if content == old[path] else "new" if content == new[path] else "CORRUPT"
            kinds.append(kind)
            per_file[kind] += 1
            if kind == "CORRUPT":
                problems.append(f"round {number}: {path.name} is neither the old nor the new file: {content!r:.200}")
        # a kill between naming the synced temp file and renaming it leaves that temp file (atomic.py);
        # the next write of that reference file removes it under the lock. Nothing else may be left.
        temp_files = [n for n in observed["leftovers"] if TEMP_FILE.fullmatch(n)]
        stray = [n for n in observed["leftovers"] if n not in temp_files]
        left_temp_files.update(temp_files)
        if stray:
            problems.append(f"round {number}: left next to the references: {stray}")
        state = "all old" if set(kinds) == {"old"} else "all new" if set(kinds) == {"new"} else "mid-write"
        states[state] += 1
    report = (
        f"SIGKILL during --ovq-update-refs (seed {seed}): {len(rounds)} kills of a session writing "
        f"{len(old)} reference files, write window {window * 1000:.1f} ms, delays 0-{1.25 * window * 1000:.1f} ms; "
        f"files intact {per_file['old'] + per_file['new']}/{len(rounds) * len(old)} "
        f"(old {per_file['old']}, new {per_file['new']}, other {per_file['CORRUPT']}); "
        f"kills before the first file was replaced {states['all old']}, between two files {states['mid-write']}, "
        f"after the last one {states['all new']}; kills after the session reported the write finished "
        f"{sum(r['finished'] for r in rounds)}; temp files left by a kill between link and rename "
        f"{len(left_temp_files)} (removed by the next write)"
    )
    print(report)
    assert not problems, report + "\n" + "\n".join(problems)
    assert leftovers(refs) == []  # the undisturbed write removed any temp file a kill had left
    assert len(rounds) == KILL_ROUNDS >= 20
    # the moments were aimed at the write: some kills landed while files were being replaced
    assert states["mid-write"] + states["all new"] - 1 >= 1, report


# ---------------------------------------------------------------------------------------------
# 2. Ctrl-C during calibration

# FAULTS_PHASE picks where the session announces itself (FAULTS_MARKER) and then waits for the
# test's SIGINT: while reading the calibration data, in the calibration forward passes (inside the
# cache's build, under its key lock), or while the quantized program is being saved into the
# cache's temp directory (a half-written entry).
INTERRUPT_HOOKS = """
import os
import time

_PHASE = os.environ.get("FAULTS_PHASE", "")


def _started_then_wait():
    with open(os.environ["FAULTS_MARKER"], "w") as marker:
        marker.write(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.02)  # the test's SIGINT arrives here
    raise RuntimeError("no Ctrl-C came")


@pytest.fixture(scope="session")
def ovq_calibration_dataset():
    g = torch.Generator().manual_seed(2)
    items = [(torch.randn(1, 3, 16, 16, generator=g),) for _ in range(4)]

    def slow_reader():
        for index, item in enumerate(items):
            if index == 1 and _PHASE == "dataset":
                _started_then_wait()
            yield item

    return slow_reader()


def _slow_calibration(module, args):
    # the prepared model: a GraphModule with observers, called once per calibration item
    if isinstance(module, torch.fx.GraphModule) and any(
        name.startswith("activation_post_process") for name, _ in module.named_children()
    ):
        _started_then_wait()


if _PHASE == "calibration":
    torch.nn.modules.module.register_module_forward_pre_hook(_slow_calibration)

if _PHASE == "saving":
    _real_save = torch.export.save

    def _slow_save(*args, **kwargs):
        _real_save(*args, **kwargs)
        _started_then_wait()

    torch.export.save = _slow_save
"""

INT8_MATCHES_FP32 = """
import os

import torch


def test_int8_matches_fp32(ovq_compiled_model, ovq_model):
    g = torch.Generator().manual_seed(7)
    outputs = []
    for _ in range(8):
        x = torch.randn(1, 3, 16, 16, generator=g)
        with torch.no_grad():
            expected = ovq_model(x)
        got = torch.as_tensor(ovq_compiled_model(x))
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0)
        assert cosine > 0.9, float(cosine)
        outputs.append(got.flatten().tolist())
    if os.environ.get("FAULTS_OUTPUTS"):
        with open(os.environ["FAULTS_OUTPUTS"], "w") as f:
            f.write(repr(outputs))
"""


def cache_entries(root: Path) -> list[Path]:
    """Published entries (``<key[:2]>/<key>``) of an artifact cache."""
    return sorted(p for p in root.glob("??/*") if p.is_dir() and re.fullmatch(r"[0-9a-f]{64}", p.name))


def entry_kind(entry: Path) -> str:
    return json.loads((entry / "meta.json").read_text())["kind"]


def built_entries(root: Path) -> list[Path]:
    """Published entries of what the flow builds (program, lowering); every entry must be intact.

    The ``exported`` program and the ``graph`` record (which graph the model exports to) are
    published before calibration starts.
    """
    entries = cache_entries(root)
    for entry in entries:
        assert_entry_intact(entry)
    return [e for e in entries if entry_kind(e) not in ("exported", "graph")]


def assert_entry_intact(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["key"] == entry.name
    for name, digest in meta["files"].items():
        assert hashlib.sha256((entry / name).read_bytes()).hexdigest() == digest, f"{entry / name}"


def wait_for_file(path: Path, proc: subprocess.Popen, output: Path, timeout: float = SESSION_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the session exited ({proc.returncode}) before {path.name}:\n{output.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s:\n{output.read_text()[-4000:]}")
        time.sleep(0.02)


def test_ctrl_c_during_calibration_exits_cleanly_and_leaves_no_cache_entry(pytester, tmp_path):
    pytester.makeini(INI)
    pytester.makeconftest(PROJECT_CONFTEST + textwrap.dedent(INTERRUPT_HOOKS))
    pytester.makepyfile(test_int8=INT8_MATCHES_FP32)
    cache_root = tmp_path / "cache"
    argv = pytest_argv(f"--ovq-cache-dir={cache_root}", "-p", "no:xdist")
    # Three sessions on one cache: the "calibration" one builds the program under the key's lock;
    # the "saving" one starts only once that one is calibrating (it holds the lock), so it waits
    # for the lock and takes the build over only once the first was interrupted. (Started all
    # together, a loaded machine sometimes let "saving" take the lock first and publish the IR.)
    sessions = {}
    half_written: list[Path] = []
    try:
        for phase in ("dataset", "calibration", "saving"):
            output = pytester.path / f"output-{phase}.txt"
            with output.open("wb") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=pytester.path,
                    env=session_env(FAULTS_PHASE=phase, FAULTS_MARKER=str(pytester.path / f"started-{phase}")),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            sessions[phase] = (proc, output)
            if phase == "calibration":
                wait_for_file(pytester.path / "started-calibration", proc, output)
        for phase, (proc, output) in sessions.items():
            wait_for_file(pytester.path / f"started-{phase}", proc, output)
            if phase == "saving":
                half_written = sorted((cache_root / "tmp").glob("*/program.pt2"))
            os.kill(proc.pid, signal.SIGINT)
            returncode = proc.wait(timeout=120)
            text = output.read_text(errors="replace")
            assert returncode == pytest.ExitCode.INTERRUPTED, f"{phase}:\n{text[-4000:]}"
            assert "KeyboardInterrupt" in text, text[-4000:]
            assert "Traceback (most recent call last)" not in text, text[-4000:]
            assert "INTERNALERROR" not in text and "Exception ignored" not in text, text[-4000:]
            # no frame, no message from the plugin's teardown (a warning's location may name a plugin
            # module: torch 2.9 warns that torch.ao.quantization is deprecated when calibration starts)
            assert not re.search(r"pytest_ovquant/\S+\.py:\d+: (?!\w*Warning)", text), text[-4000:]
            assert "pytest-ovquant:" not in text, text[-4000:]
            assert built_entries(cache_root) == [], phase
    finally:
        for proc, _ in sessions.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # the last Ctrl-C came with the program written into a temp dir, the entry not yet published
    program_keys = {e.key for e in ArtifactCache(cache_root).build_log() if e.kind == "program"}
    assert len(program_keys) == 1 and len(half_written) == 1, (program_keys, half_written)
    assert half_written[0].parent.name.startswith(f"{next(iter(program_keys))}.")
    assert built_entries(cache_root) == []
    assert list((cache_root / "tmp").iterdir()) == []  # nothing half-written is left for that key

    final = pytester.runpytest_subprocess(f"--ovq-cache-dir={cache_root}", "-p", "no:xdist", timeout=SESSION_TIMEOUT_S)
    final.assert_outcomes(passed=1)
    entries = cache_entries(cache_root)
    assert sorted(entry_kind(e) for e in entries) == ["exported", "graph", "lowering", "program"]
    for entry in entries:
        assert_entry_intact(entry)
    assert {e.name for e in entries if entry_kind(e) == "program"} == program_keys
    assert list((cache_root / "tmp").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 3. Concurrent reference updates


def other_entries(prefix: str) -> dict:
    """Entries of tests not in this run, which an update must keep as they are."""
    return {
        f"test_{prefix}_kept[{i}]": {"metrics": {"top1": {"fp32": 0.5 + i / 100, "int8": 0.49, "drop": 0.01}}, "xfail_reason": f"kept {i}"}
        for i in range(3)
    }


def test_xdist_workers_updating_references_lose_no_update(pytester, faults_cache):
    modules = {f"test_x{i}": 4 for i in range(4)}
    make_project(pytester, modules)
    refs = reference_dir(pytester)
    refs.mkdir()
    kept = {}
    for module in ("test_x2", "test_x3"):  # two modules already have references of other tests
        kept[module] = other_entries(module)
        (refs / f"{module}.yaml").write_text(yaml.safe_dump({"schema_version": 1, "tests": kept[module]}))

    result = pytester.runpytest_subprocess(
        "-n", "2", "-v", "--ovq-update-refs", f"--ovq-cache-dir={faults_cache}", timeout=SESSION_TIMEOUT_S
    )
    result.assert_outcomes(failed=16)  # no reference yet: they fail this run and are recorded
    workers = set(re.findall(r"\[(gw\d+)\]", result.stdout.str()))
    assert workers == {"gw0", "gw1"}, "both workers ran gated tests"

    updates = 0
    for module, tests in modules.items():
        entries = parsed_keys(refs / f"{module}.yaml")
        expected = {f"test_t{i}" for i in range(tests)}
        assert expected <= set(entries), f"{module}: lost {sorted(expected - set(entries))}"
        updates += len(expected)
        for key, entry in kept.get(module, {}).items():
            assert entries[key] == entry  # untouched
        assert set(entries) == expected | set(kept.get(module, {}))
    assert leftovers(refs) == []
    print(f"xdist: 2 workers, {updates} updates in {len(modules)} files kept, {sum(map(len, kept.values()))} other entries kept")


# All writers reach pytest_sessionfinish, then start writing at the same moment (a file barrier).
# Each write holds the file for 0.3 s between the store's read and its rename: without the
# store's lock, writers would overwrite each other's keys. Each write's interval is logged.
BARRIER_HOOKS = """
import os
import time
from pathlib import Path

from pytest_ovquant import references

_BARRIER = Path(os.environ["FAULTS_BARRIER"])
_real_write = references.atomic_write_text


def _logged_write(path, text):
    start = time.time()
    time.sleep(0.3)
    _real_write(path, text)
    with open(_BARRIER / "writes.log", "a") as log:
        log.write(f"{os.getpid()} {start} {time.time()}\\n")


references.atomic_write_text = _logged_write


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    (_BARRIER / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 240
    while len(list(_BARRIER.glob("ready-*"))) < int(os.environ["FAULTS_WRITERS"]):
        assert time.monotonic() < deadline, "the other writers never came"
        time.sleep(0.005)
"""


def test_separate_processes_updating_one_reference_file_keep_all_keys(pytester, faults_cache, tmp_path):
    make_project(pytester, {"test_shared": 9}, BARRIER_HOOKS)
    refs = reference_dir(pytester)
    refs.mkdir()
    kept = other_entries("shared")
    path = refs / "test_shared.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "tests": kept}))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    writers = 3
    procs = []
    for writer in range(writers):
        node_ids = [f"test_shared.py::test_t{i}" for i in range(writer, 9, writers)]
        output = pytester.path / f"writer-{writer}.txt"
        with output.open("wb") as out:
            procs.append(
                (
                    subprocess.Popen(
                        pytest_argv("--ovq-update-refs", f"--ovq-cache-dir={faults_cache}", "-p", "no:xdist", *node_ids),
                        cwd=pytester.path,
                        env=session_env(FAULTS_BARRIER=str(barrier), FAULTS_WRITERS=str(writers)),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                    output,
                )
            )
    for proc, output in procs:
        try:
            returncode = proc.wait(timeout=SESSION_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = output.read_text(errors="replace")
        assert returncode == 1 and "3 failed" in text, text[-4000:]  # missing references: recorded, failing

    entries = parsed_keys(path)
    expected = {f"test_t{i}" for i in range(9)}
    assert set(entries) == expected | set(kept), f"lost: {sorted(expected - set(entries))}"
    for key, entry in kept.items():
        assert entries[key] == entry
    writes = sorted(tuple(map(float, line.split()[1:])) for line in (barrier / "writes.log").read_text().splitlines())
    assert len(writes) == writers
    for (_, end), (start, _) in zip(writes, writes[1:]):
        assert start >= end, f"two writes of {path.name} overlapped: {writes}"  # the lock serialised them
    assert leftovers(refs) == []
    print(f"separate processes: {writers} writers of one file, {len(expected)} updates kept, {len(kept)} other entries kept")


# ---------------------------------------------------------------------------------------------
# 4. Disk full while a reference file is written


def reference(key: str, value: float) -> TestReference:
    return TestReference(key=key, metrics={"cosine": MetricValues(fp32=1.0, int8=value, drop=1.0 - value)})


def test_disk_full_while_writing_keeps_the_old_file_and_says_what_to_do(tmp_path, monkeypatch):
    store = ReferenceStore(tmp_path, {})
    store.stage("tests/test_zoo.py::test_a", reference("test_a", 0.9))
    [path] = store.write_pending()
    before = path.read_bytes()

    partial: list[int] = []

    def disk_fills_up(fd: int, data: bytes) -> None:
        partial.append(os.write(fd, data[: len(data) // 2]))  # half of it reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", disk_fills_up)
    for index in range(20):
        store.stage(f"tests/test_zoo.py::test_b[{index}]", reference(f"test_b[{index}]", 0.8))
    with pytest.raises(ReferenceFileError) as failure:
        store.write_pending()
    message = str(failure.value)
    assert partial and partial[0] > 0
    assert failure.value.path == str(path)
    assert str(path) in message
    assert "ENOSPC: No space left on device" in message
    assert "left as it was" in message and "Free disk space" in message and "--ovq-update-refs" in message
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    assert store.pending == {path: sorted(f"test_b[{i}]" for i in range(20))}  # kept for a retry

    monkeypatch.undo()  # space again: the staged updates go through
    assert store.write_pending() == [path]
    assert len(parsed_keys(path)) == 21


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_during_a_session_fails_the_run_with_a_clear_error(pytester):
    make_project(pytester, {"test_df": 8})
    refs = reference_dir(pytester)
    refs.mkdir()
    path = refs / "test_df.yaml"
    path.write_text(failing_reference(["test_t0"]))
    before = path.read_bytes()
    # the old file fits; eight recorded entries (~900 bytes each) do not. At least 4 KiB: torch 2.9
    # writes a 2.3 KB generated module into a temp dir when torch._dynamo is imported.
    limit = max(len(before) + 100, 4096)

    # The kernel refuses the write part way (RLIMIT_FSIZE: EFBIG, as a quota would). Nothing else
    # the session writes is that large: no cache (--ovq-no-cache), the output goes to a pipe.
    result = subprocess.run(
        pytest_argv("--ovq-regen-all", "--ovq-no-cache", "-p", "no:xdist"),
        cwd=pytester.path,
        env=session_env(),
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT_S,
        preexec_fn=_limit_file_size(limit),
    )
    out = result.stdout + result.stderr
    assert "8 passed" in out, out[-4000:]  # every gate passed ...
    assert result.returncode == 1, out[-4000:]  # ... and the run fails because the file was not written
    assert "ovquant references not written" in out
    assert f"{path}: could not write 8 updated reference(s) (EFBIG: File too large)" in out
    assert "Free disk space" in out and "--ovq-update-refs" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[-4000:]
    assert path.read_bytes() == before
    assert leftovers(refs) == []


# ---------------------------------------------------------------------------------------------
# 5. A cache entry tampered with on disk


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, min(middle + 16, len(data))):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_cache_entries_warn_naming_them_and_are_rebuilt(pytester, tmp_path, monkeypatch):
    pytester.makeini(INI)
    pytester.makeconftest(PROJECT_CONFTEST)
    pytester.makepyfile(test_int8=INT8_MATCHES_FP32)
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("FAULTS_OUTPUTS", str(tmp_path / "outputs-1"))
    first = pytester.runpytest_subprocess(f"--ovq-cache-dir={cache_root}", "-p", "no:xdist", timeout=SESSION_TIMEOUT_S)
    first.assert_outcomes(passed=1)
    entries = {entry_kind(e): e for e in cache_entries(cache_root)}
    assert sorted(entries) == ["exported", "graph", "lowering", "program"]
    flip_bytes(entries["program"] / "program.pt2")
    flip_bytes(entries["lowering"] / "model.bin")  # the IR's weights: served as they are, the INT8 model would be wrong

    monkeypatch.setenv("FAULTS_OUTPUTS", str(tmp_path / "outputs-2"))
    second = pytester.runpytest_subprocess(f"--ovq-cache-dir={cache_root}", "-p", "no:xdist", timeout=SESSION_TIMEOUT_S)
    second.assert_outcomes(passed=1)
    out = second.stdout.str()
    for entry, name in ((entries["program"], "program.pt2"), (entries["lowering"], "model.bin")):
        assert (
            f"pytest-ovquant cache: entry {entry} has a modified {name} (sha256 differs from meta.json); "
            "discarding and rebuilding it" in out
        ), out[-4000:]
        assert_entry_intact(entry)  # rebuilt under the same key
    assert "rebuilt (bad cache entry)" in out
    builds = Counter(e.kind for e in ArtifactCache(cache_root).build_log())
    assert builds == {"exported": 1, "graph": 1, "program": 2, "lowering": 2}
    # the rebuilt INT8 model computes what the first session's did
    before, after = (ast.literal_eval((tmp_path / f"outputs-{run}").read_text()) for run in (1, 2))
    assert len(before) == len(after) == 8
    for a, b in zip(before, after):
        assert a == pytest.approx(b, abs=1e-5)
