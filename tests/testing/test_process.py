"""The test children's process groups: ending a child ends what it started."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from prefect_agent_runs.testing._process import ProcessTree, end_group, run, spawn, spawned

# a child that starts a grandchild (which would sleep for a minute), prints its pid, and
# then either exits at once or waits for it
PARENT = """
import subprocess, sys
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
if sys.argv[1] == "wait":
    grandchild.wait()
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int) -> bool:
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return _gone(pid)
    return True


def test_end_group_kills_the_grandchild_too() -> None:
    child = spawn([sys.executable, "-c", PARENT, "wait"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    tree = ProcessTree(child.pid)
    assert grandchild in tree.snapshot()
    end_group(child, grace=5)
    assert child.returncode is not None
    assert _wait_gone(grandchild)
    assert tree.alive() == {}


def test_run_leaves_nothing_of_the_group_behind() -> None:
    """The command exits at once, its grandchild would run on: ``run`` ends it."""
    started = time.monotonic()
    done = run([sys.executable, "-c", PARENT, "exit"], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30  # not held up by the grandchild's copy of stdout
    assert done.returncode == 0, done.stderr
    grandchild = int(done.stdout)
    assert list(done.left_behind) == [grandchild], done.left_behind
    assert _wait_gone(grandchild)


def test_run_of_a_tidy_command_leaves_nothing_behind() -> None:
    done = run([sys.executable, "-c", "print('hi')"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.left_behind) == (0, "hi\n", {})


def test_spawned_ends_the_group_when_the_block_raises() -> None:
    with (
        pytest.raises(RuntimeError),
        spawned([sys.executable, "-c", PARENT, "wait"], stdout=subprocess.PIPE, text=True) as child,
    ):
        grandchild = int(child.stdout.readline())
        raise RuntimeError("the test failed here")
    assert _wait_gone(grandchild)
