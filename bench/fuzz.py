"""Fuzz the Twilio frame parser and the stream session with many more cases than the test suite runs.

    .venv/bin/python bench/fuzz.py                       # 100,000 cases of each
    .venv/bin/python bench/fuzz.py --cases 20000 --only session --seed 7

The properties are the test suite's (``tests/fuzzing.py``): ``check_frame``
(``parse_message`` on any text, bytes, Twilio-like JSON or deep nesting returns
a message or raises a ``RemoteProtocolError``, and a parsed ``start`` is
storable in PostgreSQL) and ``check_session`` (a ``StreamSession`` driven like
the consumer drives it raises nothing, returns documented actions, closes with
``CLOSES`` codes, opens nothing once a close is decided, tears down once and
frees its admission slot). Both are pure: no database, socket or event loop.

Prints, per target: cases run, seconds, cases per second, how the cases ended
(message types / error kinds, or how the session closed), and the first
failure hypothesis found (shrunk to a minimal case) with its traceback. The
exit status is 1 if any target failed. ``--strict`` also forbids new playback
work once a session's close is decided (see tests/test_fuzz_session.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    logging.disable(logging.CRITICAL)  # the session logs every refusal it fuzzes


def run_target(name: str, strategy, check, cases: int, seed: int) -> bool:
    """Run ``check`` on ``cases`` examples of ``strategy``; print the figures; True if nothing failed."""
    from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings

    outcomes: Counter[str] = Counter()

    @hypothesis_seed(seed)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(strategy)
    def fuzz(case) -> None:
        outcomes[check(case)] += 1

    began = time.perf_counter()
    failure = None
    try:
        fuzz()
    except BaseException as exc:  # noqa: BLE001 (any failure is the finding to report)
        if isinstance(exc, KeyboardInterrupt):
            raise
        failure = exc
    seconds = time.perf_counter() - began
    run = sum(outcomes.values())
    print(f"\n== {name}: {run:,} cases in {seconds:.1f} s ({run / seconds:,.0f}/s), seed {seed}")
    for outcome, count in outcomes.most_common(12):
        print(f"   {count:>8,}  {outcome}")
    if len(outcomes) > 12:
        print(f"   {sum(c for _, c in outcomes.most_common()[12:]):>8,}  (other outcomes)")
    if failure is None:
        print("   no failure")
        return True
    print("   FAILURE (minimal case below):")
    print("".join(traceback.format_exception(failure)))
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target (default 100,000)")
    parser.add_argument("--only", choices=["protocol", "session"], help="run one target")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0: the same run every time)")
    parser.add_argument("--strict", action="store_true", help="also forbid playback work after a decided close")
    args = parser.parse_args()
    _setup()

    from functools import partial

    from tests import fuzzing

    targets = {
        "protocol": (fuzzing.frames, fuzzing.check_frame),
        "session": (fuzzing.session_steps, partial(fuzzing.check_session, strict=args.strict)),
    }
    ok = True
    for name, (strategy, check) in targets.items():
        if args.only in (None, name):
            ok = run_target(name, strategy, check, args.cases, args.seed) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
