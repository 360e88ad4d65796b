"""dipkit.engine on units of its own: kept as they finish, resumed (damaged files and changed inputs done again),
failures named while the others go on, batches of one shape, the same outcomes here and in worker processes."""

import json
import os
import signal
from pathlib import Path

import torch

from dipkit import engine
from dipkit.engine import Kept, Unit, batches, code_identity, group_runs, pool_runner, run_units, unit_file
from dipkit.errors import Failed, RunError

import pytest


def square(tasks):
    """A method: each task (a number) squared; a negative number is bad input for its whole batch."""
    if any(t < 0 for t in tasks):
        raise RunError("a negative number")
    return [dict(value=t * t, batch=len(tasks)) for t in tasks]


def units(*numbers, shape=None):
    return [Unit(f"u{n}", n, digest=str(n), shape=shape) for n in numbers]


def keep(unit, outcome):
    return dict(outcome, name=unit.name)


def test_each_unit_is_kept_as_it_finishes_and_read_back_on_a_resume(tmp_path):
    seen = []
    kept = run_units(tmp_path, units(1, 2, 3), square, keep, update=lambda records: seen.append(list(records)))
    assert {name: r["value"] for name, r in kept.records.items()} == dict(u1=1, u2=4, u3=9)
    assert seen == [["u1"], ["u1", "u2"], ["u1", "u2", "u3"]]  # the tables rewritten after each unit
    saved = torch.load(unit_file(tmp_path, "u2"), weights_only=True)
    assert saved == dict(digest="2", code=code_identity(), record=kept.records["u2"])
    calls, said = [], []
    again = run_units(tmp_path, units(1, 2, 3, 4), lambda tasks: calls.extend(tasks) or square(tasks), keep,
                      resume=True, log=said.append)
    assert calls == [4] and list(again.records) == ["u1", "u2", "u3", "u4"]
    assert said.count("u1: kept from the earlier run") == 1 and "resume: 3 unit(s) kept, 1 to compute (1 new)" in said


def test_a_damaged_file_or_a_changed_input_is_done_again_and_said(tmp_path):
    run_units(tmp_path, units(1, 2, 3), square, keep)
    unit_file(tmp_path, "u1").write_bytes(unit_file(tmp_path, "u1").read_bytes()[:20])  # cut short
    torch.save(dict(digest="3", record=dict(other=1)), unit_file(tmp_path, "u3"))  # not what the script keeps
    changed = [Unit("u1", 1, "1"), Unit("u2", 5, "5"), Unit("u3", 3, "3")]  # u2's input is another now
    calls, said = [], []
    again = run_units(tmp_path, changed, lambda tasks: calls.extend(tasks) or square(tasks), keep, resume=True,
                      expects=("value",), log=said.append)
    assert calls == [1, 5, 3] and again.records["u2"]["value"] == 25
    assert any("u1.pt is damaged" in line for line in said) and any("u3.pt is damaged" in line for line in said)
    assert any("u2: its input or settings changed" in line for line in said)
    assert "resume: 0 unit(s) kept, 3 to compute (2 damaged, 1 changed input or settings)" in said


def test_units_of_other_code_are_computed_again_unless_kept_by_choice_and_then_named(tmp_path, monkeypatch):
    run_units(tmp_path, units(1, 2), square, keep, script="selfdeblur")
    assert code_identity("selfdeblur") != code_identity("vdip") != code_identity()  # each script's own code
    other = dict(code_identity("selfdeblur"), digest="another")
    torch.save(dict(torch.load(unit_file(tmp_path, "u2"), weights_only=True), code=other), unit_file(tmp_path, "u2"))
    calls, said = [], []
    compute = lambda tasks: calls.extend(tasks) or square(tasks)  # noqa: E731
    run_units(tmp_path, units(1, 2), compute, keep, resume=True, script="selfdeblur", log=said.append)
    assert calls == [2] and any(line.startswith("u2: made by other code") for line in said)
    assert "resume: 1 unit(s) kept, 1 to compute (1 other code)" in said
    torch.save(dict(torch.load(unit_file(tmp_path, "u2"), weights_only=True), code=other), unit_file(tmp_path, "u2"))
    calls.clear()
    kept = run_units(tmp_path, units(1, 2), compute, keep, resume=True, script="selfdeblur", keep_other_code=True,
                     log=said.append)
    assert calls == [] and list(kept.records) == ["u1", "u2"]
    named = json.loads((tmp_path / "units.json").read_text())
    assert named["u2"] == dict(code=other, other_code=True) and named["u1"]["other_code"] is False
    monkeypatch.setattr(engine, "code_identity", lambda script="": dict(other))  # a commit changed the code
    calls.clear()
    run_units(tmp_path, units(1, 2), compute, keep, resume=True, script="selfdeblur", log=said.append)
    assert calls == [1]  # exactly the unit another code made


def test_a_failing_unit_is_named_and_the_others_are_kept(tmp_path):
    kept = run_units(tmp_path, units(1, -2, 3), square, keep, log=lambda line: None)
    assert list(kept.records) == ["u1", "u3"] and kept.failed == {"u-2": "a negative number"}
    assert not unit_file(tmp_path, "u-2").exists()
    with pytest.raises(RunError, match=r"1 unit\(s\) failed .*u-2: a negative number"):
        kept.check(tmp_path)
    Kept().check(tmp_path)  # nothing failed: nothing said


def test_a_method_may_fail_one_unit_of_a_batch_alone(tmp_path):
    def second_fails(tasks):
        return [Failed("diverged") if t == 2 else dict(value=t) for t in tasks]

    kept = run_units(tmp_path, units(1, 2, 3, shape="s"), second_fails, keep, batch=3, log=lambda line: None)
    assert list(kept.records) == ["u1", "u3"] and kept.failed == {"u2": "diverged"}


def test_units_of_one_shape_share_batches_and_units_without_a_shape_run_alone(tmp_path):
    mixed = units(1, 2, 3, shape="a") + units(4, 5, shape="b") + units(6, 7)
    assert [[u.task for u in b] for b in batches(mixed, 2)] == [[1, 2], [3], [4, 5], [6], [7]]
    assert [[u.task for u in b] for b in batches(mixed, 1)] == [[n] for n in range(1, 8)]
    kept = run_units(tmp_path, mixed, square, keep, batch=2)
    assert [r["batch"] for r in kept.records.values()] == [2, 2, 1, 2, 2, 1, 1]
    assert group_runs(["a1", "b1", "a2"], lambda s: s[0], 5) == [["a1", "a2"], ["b1"]]


def test_a_unit_given_twice_is_refused_before_anything_is_computed(tmp_path):
    with pytest.raises(RunError, match="u1 would be made twice"):
        run_units(tmp_path, units(1, 1), lambda tasks: pytest.fail("computed"), keep)


def test_worker_processes_give_the_outcomes_computed_here_alone_and_in_batches(tmp_path):
    here = run_units(tmp_path / "here", units(1, 2, 3, shape="s") + units(-4), square, keep, batch=2,
                     log=lambda line: None)
    there = run_units(tmp_path / "pool", units(1, 2, 3, shape="s") + units(-4), square, keep, batch=2,
                      runner=pool_runner(2, threads=1), log=lambda line: None)
    assert there.records == here.records and [r["batch"] for r in there.records.values()] == [2, 2, 1]
    assert there.failed == here.failed == {"u-4": "a negative number"}  # a failure in a worker comes back named


def dies_on_seven(tasks):
    """A method whose worker dies (SIGKILL, as the kernel's out-of-memory killer sends) on 7, every time; on 5 the
    first time only (a marker file beside says it was tried); 9 is a bug (a plain Python error)."""
    marker = Path(os.environ["ENGINE_TEST_MARKER"])
    for t in tasks:
        if t == 5 and not marker.exists():
            marker.write_text("tried")
            os.kill(os.getpid(), signal.SIGKILL)
        if t == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        if t == 9:
            raise KeyError("a bug")
    return square(tasks)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills a worker with SIGKILL")
def test_a_killed_worker_costs_only_its_own_batch_and_a_resume_computes_it_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ENGINE_TEST_MARKER", str(tmp_path / "marker"))  # the workers inherit it
    said = []
    kept = run_units(tmp_path, units(1, 5, 7, 9, 3), dies_on_seven, keep, runner=pool_runner(2, threads=1),
                     log=said.append)
    assert list(kept.records) == ["u1", "u5", "u3"]  # u5's worker died once: run again, in a fresh worker
    assert kept.failed["u7"] == "the worker died (killed by SIGKILL: out of memory?) (2 tries)"
    assert kept.failed["u9"] == "KeyError: 'a bug'"  # a bug is not run again; its traceback is kept
    assert "raise KeyError" in (tmp_path / "failures" / "u9.txt").read_text()
    assert not (tmp_path / "failures" / "u7.txt").exists() and (tmp_path / "marker").exists()
    assert "u5: the worker died (killed by SIGKILL: out of memory?); running its batch again" in capsys.readouterr().out
    calls = []
    again = run_units(tmp_path, units(1, 5, 7, 9, 3), lambda tasks: calls.extend(tasks) or square(tasks), keep,
                      resume=True, log=said.append)
    assert calls == [7, 9] and list(again.records) == ["u1", "u5", "u7", "u9", "u3"] and not again.failed
    assert not (tmp_path / "failures" / "u9.txt").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_the_workers_of_a_killed_driver_end_too(tmp_path):
    """A driver killed outright (SIGKILL: no Ctrl-C handling) leaves no worker computing on: each ends within
    seconds of being given another parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from dipkit.engine import Unit, pool_runner\n"
        "def compute(tasks):\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(120)\n"
        "    return tasks\n"
        "if __name__ == '__main__':\n"
        "    for _ in pool_runner(1, threads=1)([[Unit('a', 1)]], compute):\n"
        "        pass\n")
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(driver.stdout.readline())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    def running(pid):  # a process that ended but is not yet reaped (a zombie) has ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not running(worker):
            break
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its driver by 30 s")


def test_a_key_tells_apart_what_differs_in_one_bit_and_no_more():
    from dipkit.sources import digest_of

    x = torch.rand(2, 3, 4)
    flipped = x.clone()
    flipped.view(torch.int32)[1, 2, 3] ^= 1  # the last bit of one value
    assert digest_of(x) == digest_of(x.clone()) != digest_of(flipped)
    assert digest_of(x) != digest_of(x.double()) and digest_of(x) != digest_of(x.reshape(3, 2, 4))  # dtype, shape
    assert digest_of(torch.tensor(160)) != digest_of(torch.tensor(161))  # a 0-dim tensor (BatchNorm's counter)
    assert digest_of(dict(a=1, b=x)) == digest_of(dict(b=x.clone(), a=1)) != digest_of(dict(a=2, b=x))
    assert digest_of([1, 2]) != digest_of([12]) and digest_of("1") != digest_of(1)
