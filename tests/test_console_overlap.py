"""The console's snapshot/live overlap: a live event the snapshot already delivered is dropped, once per row."""

from mediastream.console.overlap import SnapshotOverlap


def test_the_overlap_matches_each_recent_row_once_and_only_for_a_while():
    now = [0.0]
    rows = [
        {"id": 1, "event": "dtmf", "stream_sid": "MZ1", "data": {"digit": "1"}, "at": 100_000},
        {"id": 2, "event": "dtmf", "stream_sid": "MZ1", "data": {"digit": "1"}, "at": 100_000},
        {"id": 3, "event": "dtmf", "stream_sid": "MZ1", "data": {"digit": "9"}, "at": 50_000},  # long before
    ]
    overlap = SnapshotOverlap(rows, snapshot_ms=101_000, window=10, clock=lambda: now[0])
    live = {"id": None, "event": "dtmf", "stream_sid": "MZ1", "data": {"digit": "1"}}
    assert [overlap.repeats(live) for _ in range(3)] == [True, True, False]
    assert not overlap.repeats({**live, "data": {"digit": "9"}}), "too old to be broadcast after the snapshot"
    assert not overlap.repeats({**live, "stream_sid": "MZ2"})
    later = SnapshotOverlap(rows, snapshot_ms=101_000, window=10, clock=lambda: now[0])
    now[0] = 11.0
    assert not later.repeats(live), "after the window every event is new"
