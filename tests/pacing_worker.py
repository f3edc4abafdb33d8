"""A separate process placing calls, for the cross-process pacing test.

``python -m tests.pacing_worker COUNT``: sets Django up, prints "ready",
waits for a line on stdin, places COUNT calls and prints each CallSid.
"""

import sys

import django


def main(count: int) -> None:
    django.setup()
    from voicecall.control import place_call

    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(count):
        print(place_call("+14155551212", "+15005550006").call_sid, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
