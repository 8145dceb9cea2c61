"""One run, one trainer: processes asked for the same run train it once."""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import pytest

import lmc.training.run_lock as run_lock
import lmc.training.runs as runs
from lmc.training.run_lock import LOCK_NAME
from lmc.training.runs import Run, RunSpec, ensure_checkpoint, train_run

from ..conftest import TINY_MLP

CONFIG = TINY_MLP.replace(duration="50it")
DEADLINE = 300  # seconds: only bounds a hung test, never asserts a duration

# A process that trains CONFIG, noting in `marks` each time it starts training and
# holding the run's lock until `gate` exists, so that the test can start a second one.
CHILD = r"""
import json, os, sys, time
from pathlib import Path
import lmc.training.run_lock as run_lock
import lmc.training.runs as runs
from lmc.training.config import TrainConfig

root, data_dir, marks, gate = sys.argv[1:5]
config = TrainConfig.from_dict(json.loads(sys.argv[5]))
run_lock.POLL_SECONDS = 0.05
real_run = runs.Trainer.run

def counted_run(self, *args, **kwargs):
    with open(marks, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not Path(gate).exists():
        time.sleep(0.02)
    return real_run(self, *args, **kwargs)

runs.Trainer.run = counted_run
run = runs.train_run(config, root, data_dir=data_dir, progress=False)
print(json.dumps({"dir": str(run.dir), "result": run.result()}))
"""


def _start(tmp_path, data_dir, stderr):
    args = [str(tmp_path / "runs"), str(data_dir), str(tmp_path / "marks"), str(tmp_path / "gate"),
            json.dumps(CONFIG.to_dict())]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)


def _lines(stream) -> queue.Queue:
    """The lines of `stream` as they come, then "" at its end (read by a thread)."""
    lines: queue.Queue = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_second_process_waits_and_reuses_the_run(tmp_path, mnist1d, data_dir):
    marks = tmp_path / "marks"
    with open(tmp_path / "first.err", "w") as first_err:
        first = _start(tmp_path, data_dir, first_err)
        try:
            _wait_for(lambda: marks.exists() or first.poll() is not None, "the first trainer")
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            second = _start(tmp_path, data_dir, subprocess.PIPE)
            lines = _lines(second.stderr)
            log = []
            while not any("waiting for it to finish" in line for line in log):
                line = lines.get(timeout=DEADLINE)
                assert line, "the second process ended without waiting:\n" + "".join(log)
                log.append(line)
            (tmp_path / "gate").touch()  # the first one may train now
            out_first, _ = first.communicate(timeout=DEADLINE)
            out_second = second.stdout.read()
            second.wait(timeout=DEADLINE)
        finally:
            (tmp_path / "gate").touch()
            first.kill()
    while (line := lines.get(timeout=DEADLINE)) != "":
        log.append(line)
    log = "".join(log)
    assert first.returncode == 0, (tmp_path / "first.err").read_text()
    assert second.returncode == 0, log
    a, b = json.loads(out_first), json.loads(out_second)
    assert a == b  # the same run directory and result
    assert marks.read_text().split() == [str(first.pid)]  # trained once, by the first
    assert f"being trained by pid {first.pid} on {socket.gethostname()}" in log
    assert "reusing" in log
    run = Run.open(a["dir"])
    assert run.finished and not (run.dir / LOCK_NAME).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(run: Run, holder: dict) -> None:
    run.dir.mkdir(parents=True)
    (run.dir / LOCK_NAME).write_text(json.dumps(holder))


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, mnist1d, monkeypatch, capsys):
    run = Run(tmp_path, RunSpec(CONFIG))
    dead = _dead_pid()
    _write_lock(run, {"pid": dead, "host": socket.gethostname(), "token": "old"})
    seen = []
    real_run = runs.Trainer.run

    def recording_run(self, *args, **kwargs):
        seen.append(json.loads((run.dir / LOCK_NAME).read_text()))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(runs.Trainer, "run", recording_run)
    trained = train_run(CONFIG, tmp_path, dataset=mnist1d, progress=False)
    assert trained.finished and len(seen) == 1
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert seen[0]["token"] != "old"
    assert f"took over the lock of run {run.dir.name} from pid {dead}" in capsys.readouterr().err
    assert sorted(p.name for p in run.dir.iterdir()) == [
        "checkpoints", "data.json", "result.json", "spec.json"]  # lock and marker gone


def test_which_locks_are_stale(tmp_path):
    path = tmp_path / LOCK_NAME
    here = socket.gethostname()
    path.write_text("{}")
    assert not run_lock._is_stale(path, {"pid": _dead_pid(), "host": "elsewhere", "token": "x"})
    assert run_lock._is_stale(path, {"pid": _dead_pid(), "host": here, "token": "x"})
    assert not run_lock._is_stale(path, {"pid": os.getppid(), "host": here, "token": "x"})
    # This process's pid in a lock it does not hold: left by a process before a restart.
    assert run_lock._is_stale(path, {"pid": os.getpid(), "host": here, "token": "x"})
    assert not run_lock._is_stale(path, {})  # being written just now
    os.utime(path, (time.time() - 3600,) * 2)
    assert run_lock._is_stale(path, {})  # its writer died before writing it


def test_takeover_left_half_done_by_a_dead_process_is_finished(tmp_path, mnist1d):
    run = Run(tmp_path, RunSpec(CONFIG))
    _write_lock(run, {"pid": _dead_pid(), "host": socket.gethostname(), "token": "old"})
    marker = run.dir / f"{LOCK_NAME}.old.takeover"
    marker.touch()
    os.utime(marker, (time.time() - 3600,) * 2)
    assert train_run(CONFIG, tmp_path, dataset=mnist1d, progress=False).finished
    assert not marker.exists() and not (run.dir / LOCK_NAME).exists()


def test_lock_is_released_when_training_fails(tmp_path, mnist1d, monkeypatch):
    def fail(self, *args, **kwargs):
        assert (self_run.dir / LOCK_NAME).exists()
        raise KeyboardInterrupt

    self_run = Run(tmp_path, RunSpec(CONFIG))
    monkeypatch.setattr(runs.Trainer, "run", fail)
    with pytest.raises(KeyboardInterrupt):
        train_run(CONFIG, tmp_path, dataset=mnist1d, progress=False)
    assert not (self_run.dir / LOCK_NAME).exists() and not run_lock._held


def test_ensure_checkpoint_holds_the_lock_while_it_trains(tmp_path, mnist1d):
    run = Run(tmp_path, RunSpec(CONFIG))  # never started: trained through train_runs
    path = ensure_checkpoint(run, 20, dataset=mnist1d, progress=False)
    assert path == run.checkpoint_path(20) and path.is_file()
    assert run.finished and not (run.dir / LOCK_NAME).exists() and not run_lock._held
