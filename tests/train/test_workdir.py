"""One run per work dir: the lease refuses a second run naming its holder, is taken over when
stale or when its holder died on this host (logged), beats while held, notices a take-over, is
released; on a local disk (O_EXCL) and through tensorstore's generation preconditions (the
gs:// path, exercised with file://)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

from phi4_jax.train import loop, workdir
from tests.train.conftest import tiny_config

ONE = jax.devices()[:1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys, time\nfrom phi4_jax.train import workdir\n"
        "lease = workdir.acquire(sys.argv[1], timeout_s=600)\n"
        "print(lease.run_id, flush=True)\ntime.sleep(600)\n")


@pytest.fixture
def other_run(tmp_path):
    """Another process holding tmp_path's lease: (Popen, its run id)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    run_id = proc.stdout.readline().strip()
    assert run_id, "the holder process did not start"
    yield proc, run_id
    proc.kill()
    proc.wait()


def write_lease(directory, **fields):
    holder = {"run_id": "old", "host": "elsewhere", "pid": 1, "process": None,
              "started": time.time() - 2000, "heartbeat": time.time(), **fields}
    (directory / "lease.json").write_text(json.dumps(holder))


def test_the_lease_names_its_holder_and_is_released(tmp_path):
    with workdir.acquire(str(tmp_path), timeout_s=600) as lease:
        held = json.loads((tmp_path / "lease.json").read_text())
        assert held["run_id"] == lease.run_id and held["pid"] == os.getpid()
        assert held["host"] == socket.gethostname()
        assert time.time() - held["heartbeat"] < 60
    assert not (tmp_path / "lease.json").exists()


def test_a_second_run_is_refused_naming_the_holder_and_what_to_do(tmp_path, other_run):
    proc, run_id = other_run
    with pytest.raises(workdir.LeaseHeld) as refused:
        workdir.acquire(str(tmp_path), timeout_s=600)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path} is in use by run {run_id} (host "
                              f"{socket.gethostname()}, pid {proc.pid}; last heartbeat ")
    assert "s ago); one run per work dir. Wait for it to finish or stop it" in message
    assert "goes stale in " in message and "train.lease_timeout_s=600s" in message


def test_the_loop_refuses_a_held_workdir_then_takes_over_from_a_dead_holder(
        tmp_path, other_run, caplog):
    proc, run_id = other_run
    config = tiny_config(steps=2, checkpoint_every=2)
    with pytest.raises(workdir.LeaseHeld, match=f"in use by run {run_id} .*pid {proc.pid};"):
        loop.run(config, str(tmp_path), devices=ONE)
    assert sorted(os.listdir(tmp_path)) == ["lease.json"]  # nothing written, nothing compiled
    proc.send_signal(signal.SIGKILL)  # it dies holding the lease: kill -9, a crash
    proc.wait()
    with caplog.at_level(logging.WARNING, logger="phi4_jax.train.workdir"):
        result = loop.run(config, str(tmp_path), devices=ONE)
    assert result.step == 2  # at once, not after train.lease_timeout_s (600 s)
    assert (f"took over the lease of run {run_id} (host {socket.gethostname()}, pid "
            f"{proc.pid}; last heartbeat") in caplog.text
    assert f"its process {proc.pid} on this host is gone" in caplog.text
    assert not (tmp_path / "lease.json").exists()


def test_a_stale_lease_is_taken_over_with_a_line_naming_the_holder(tmp_path, caplog):
    write_lease(tmp_path, heartbeat=time.time() - 1000)
    with caplog.at_level(logging.WARNING, logger="phi4_jax.train.workdir"):
        lease = workdir.acquire(str(tmp_path), timeout_s=600)
    assert ("took over the lease of run old (host elsewhere, pid 1; last heartbeat 1000s "
            "ago): its heartbeat is 1000s old (train.lease_timeout_s=600)") in caplog.text
    assert json.loads((tmp_path / "lease.json").read_text())["run_id"] == lease.run_id
    lease.release()


def test_a_fresh_lease_of_another_host_is_respected(tmp_path):
    write_lease(tmp_path, heartbeat=time.time() - 30)  # its pid cannot be checked from here
    with pytest.raises(workdir.LeaseHeld, match=r"run old \(host elsewhere, pid 1; last "
                                                r"heartbeat 30s ago\)"):
        workdir.acquire(str(tmp_path), timeout_s=600)


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    with workdir.acquire(str(tmp_path), timeout_s=2.0) as lease:  # a beat every 0.5 s
        first = json.loads((tmp_path / "lease.json").read_text())["heartbeat"]
        time.sleep(2.5)  # past the timeout: only the beats keep it fresh
        beat = json.loads((tmp_path / "lease.json").read_text())["heartbeat"]
        assert beat > first
        with pytest.raises(workdir.LeaseHeld):  # never stale while its holder lives
            workdir.acquire(str(tmp_path), timeout_s=2.0)
        lease.check()


def test_a_holder_whose_lease_was_taken_over_stops(tmp_path):
    lease = workdir.acquire(str(tmp_path), timeout_s=0.4)
    write_lease(tmp_path, run_id="usurper")  # what a reclaim by another run leaves
    deadline = time.time() + 5
    while lease.lost is None and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(workdir.LeaseLost, match="taken over by run usurper"):
        lease.check()
    lease.release()
    assert json.loads((tmp_path / "lease.json").read_text())["run_id"] == "usurper"  # kept


def test_a_url_work_dir_uses_generation_preconditions(tmp_path, caplog):
    url = f"file://{tmp_path}"  # the tensorstore path that gs:// takes
    lease = workdir.acquire(url, timeout_s=600)
    assert isinstance(lease.store, workdir._KvStore)
    with pytest.raises(workdir.LeaseHeld, match=f"in use by run {lease.run_id} "):
        workdir.acquire(url, timeout_s=600)
    store = workdir._KvStore(url)
    data, generation = store.read()
    assert store.create(b"x") is None  # create-if-absent: the object exists
    lease.refresh()  # a new heartbeat: a new generation
    assert store.take_over(b"x", generation) is None  # a stale generation loses
    lease.release()
    assert store.read() is None
    write_lease(tmp_path, heartbeat=time.time() - 1000)
    with caplog.at_level(logging.WARNING, logger="phi4_jax.train.workdir"):
        workdir.acquire(url, timeout_s=600).release()
    assert "took over the lease of run old (host elsewhere" in caplog.text
