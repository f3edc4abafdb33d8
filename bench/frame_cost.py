"""CPU per inbound media frame: our consumer on daphne against the reference Node handler.

    .venv/bin/python bench/frame_cost.py                    # 100 streams, 3 rounds of each, ~4 min
    .venv/bin/python bench/frame_cost.py --streams 100 --rounds 3 --seconds 20

Two warm servers run side by side for the whole run:

* **ours**: daphne serving ``mediastream.asgi:application`` (the real consumer, no
  bench wrapper) with PostgreSQL, the Redis channel layer, the local VAD on, the
  discarding transcription backend; each call comes through the signed voice
  webhook and the signed upgrade (``bench/loadgen.py``);
* **ref**: the reference media stream handler (TypeScript, ``--seed``, by default
  ``/work/shared/seeds/000_*.txt``), transpiled with esbuild and run on Node with
  ``ws`` from the npm registry (both installed into ``--cache`` at bench time, never
  into the repository), a transcription provider that accepts audio and does
  nothing, and every stream accepted (``bench/frame_cost_ref.mjs``).

Rounds alternate ours, ref, ours, ref, ...: each opens ``--streams`` streams that
send what Twilio sends (``connected``, ``start``, then a ``media`` message of 160
bytes of mu-law silence every 20 ms on an absolute clock, then ``stop``), settles,
and measures one window: the server process's CPU time (all threads, from /proc),
from the window's start until the server has handled what was sent in it (the
generator pauses at the window's end; on a busy machine a server falls behind),
divided by the media frames the generator sent in the window. The generator's own
CPU is not counted. The other server idles meanwhile.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    key_json_pairs,
    ROOT,
    Daphne,
    bench_database,
    bench_overrides,
    cpu_seconds,
    fmt,
    free_port,
    log,
    raise_nofile,
    redis_cleanup,
    run_id,
    table,
    wait_for_port,
)
from bench.stream_load import Worker, pyspy_window

TARGET_RATIO = 1.5
DEFAULT_SEED = "/work/shared/seeds/000_*.txt"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mediastream-bench" / "node-ref"
NPM_PACKAGES = ["ws@8", "esbuild@0.28"]


def prepare_reference(seed: Path, cache: Path, npm: str) -> Path:
    """Install ws and esbuild into ``cache`` (once) and transpile the seed's handler there; returns the .mjs."""
    cache.mkdir(parents=True, exist_ok=True)
    esbuild = cache / "node_modules" / ".bin" / "esbuild"
    if not (cache / "node_modules" / "ws").is_dir() or not esbuild.exists():
        log(f"installing {' '.join(NPM_PACKAGES)} into {cache}")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), *NPM_PACKAGES], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)  # fmt: skip
    lines = seed.read_text("utf-8").splitlines()
    # The stored text ends with a few lines that are not code: keep up to the last closing brace.
    last = max(i for i, line in enumerate(lines) if line.rstrip() == "}")
    source = cache / "handler.ts"
    source.write_text("\n".join(lines[: last + 1]) + "\n")
    out = cache / "handler.mjs"
    subprocess.run([str(esbuild), str(source), "--format=esm", "--platform=node", "--target=node20", f"--outfile={out}",
                    "--log-level=warning"], check=True, timeout=120)  # fmt: skip
    return out


class NodeRef:
    """The reference handler's server (bench/frame_cost_ref.mjs) on a free loopback port."""

    def __init__(self, node: str, handler: Path, log_path: Path) -> None:
        self.port = free_port()
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([node, str(ROOT / "bench" / "frame_cost_ref.mjs"), str(handler), str(self.port)],
                                     cwd=handler.parent, stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/voice/stream"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def drain(pid: int, quiet: float = 0.05, step: float = 0.5, limit: float = 30.0) -> float:
    """Wait until the server has nothing left to do (running or waiting for a CPU under ``quiet`` of a core).

    On a busy machine a server falls behind and handles the window's last frames after
    it; stopping the clock at the window's end would leave their cost out.
    """
    start = time.monotonic()
    busy0 = _busy_seconds(pid)
    while time.monotonic() - start < limit:
        time.sleep(step)
        busy1 = _busy_seconds(pid)
        if busy1 - busy0 < quiet * step:
            break
        busy0 = busy1
    return time.monotonic() - start


def _busy_seconds(pid: int) -> float:
    """CPU time plus time runnable but waiting for a CPU, over all the process's threads (schedstat)."""
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                run, wait, _ = f.read().split()
            total += (int(run) + int(wait)) / 1e9
        except (OSError, ValueError):
            pass
    return total


def measure(side: str, server_url: str, pid: int, extra: tuple[str, ...], args, env: dict) -> dict:
    """Open the streams, settle, measure one window of server CPU per frame sent, stop them."""
    workers = [Worker(server_url, i, args.workers, "silence", env, extra) for i in range(args.workers)]
    try:
        shares = [args.streams // args.workers + (1 if i < args.streams % args.workers else 0) for i in range(args.workers)]
        first = 0
        for w, share in zip(workers, shares):
            w.send({"cmd": "open", "n": share, "first_index": first})
            first += share
        opened = [w._read(600) for w in workers]
        failed = sum(o["failed"] for o in opened)
        if failed:
            log(f"  {side}: {failed} streams failed to open: {[e for o in opened for e in o['errors']][:3]}")
        time.sleep(args.settle)
        for w in workers:
            w.ask({"cmd": "reset"}, 30)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        gen = [w.ask({"cmd": "pause"}, 30) for w in workers]
        t1 = time.monotonic()
        drained = drain(pid)  # the frames sent in the window, all handled
        cpu1 = cpu_seconds(pid)
        load = os.getloadavg()[0]
        for w in workers:
            w.send({"cmd": "stop"})
        for w in workers:
            w._read(120)
    finally:
        for w in workers:
            w.kill()
    sent = sum(g["sent"] for g in gen)
    cpu = cpu1 - cpu0
    return {
        "side": side,
        "streams": sum(g["live"] for g in gen),
        "failed": failed,
        "closed": sum(g["closed"] for g in gen),
        "frames": sent,
        "wall_s": t1 - t0,
        "drain_s": drained,
        "cpu_s": cpu,
        "cpu_pct": 100 * cpu / (t1 - t0),
        "us_per_frame": 1e6 * cpu / sent if sent else None,
        "gen_cpu_pct": 100 * sum(g["cpu_s"] for g in gen) / (t1 - t0),
        "gen_late_p99": max((g["late_p99"] or 0) for g in gen),
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams per window (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="windows of each side, alternated (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    parser.add_argument("--settle", type=float, default=3.0, help="pause after the streams are open (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--seed", default=DEFAULT_SEED, help=f"the reference handler's TypeScript (default {DEFAULT_SEED})")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"where ws and esbuild are installed (default {DEFAULT_CACHE})")
    parser.add_argument("--node", default=shutil.which("node") or "node")
    parser.add_argument("--npm", default=shutil.which("npm") or "npm")
    parser.add_argument("--vad", choices=["on", "off"], default="on", help="our local VAD (default on, as shipped)")
    parser.add_argument("--profile-seconds", type=float, default=0.0,
                        help="after the rounds, py-spy our daphne for this long at --streams (needs --py-spy)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--rounds-only", choices=["both", "ours", "ref"], default="both",
                        help="measure one side only (for profiling runs; the ratio needs both)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="a MEDIASTREAM setting of our daphne (a what-if; repeatable), e.g. STREAM_HEALTH_SECONDS=0")
    args = parser.parse_args()
    seeds = sorted(glob.glob(args.seed))
    if not seeds:
        parser.error(f"no reference handler at {args.seed}")
    raise_nofile()
    # Run in the background, SIGINT is ignored: let SIGTERM clean up as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    handler = prepare_reference(Path(seeds[0]), args.cache, args.npm)
    node_version = subprocess.run([args.node, "--version"], capture_output=True, text=True).stdout.strip()
    prefix = f"benchframe{run_id()}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-frame-cost-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "bench.settings"}
    rows: list[dict] = []
    profile = ""
    try:
        with bench_database(prefix) as database_url:
            overrides = bench_overrides(
                VAD={"ENABLED": args.vad == "on"},
                TTS={"BACKEND": "mediastream.tts.dummy.SilenceBackend", "OPTIONS": {}},
                **key_json_pairs(args.override),
            )
            ours = Daphne(database_url=database_url, prefix=prefix, overrides=overrides,
                          log_path=workdir / "daphne.log", app="mediastream.asgi:application")  # fmt: skip
            ref = NodeRef(args.node, handler, workdir / "node.log")
            sides = {
                "ours": (ours.http, ours.pid, ("--plain",)),
                # The generator's --server is unused with --direct.
                "ref": (f"http://127.0.0.1:{ref.port}", ref.pid, ("--plain", "--direct", ref.ws_url)),
            }
            if args.rounds_only != "both":
                sides = {args.rounds_only: sides[args.rounds_only]}
            try:
                log(f"warming up both servers (daphne {ours.pid}, node {ref.pid} {node_version})")
                for side, (url, pid, extra) in sides.items():
                    warm = argparse.Namespace(**{**vars(args), "streams": 4, "seconds": 2.0, "settle": 1.0})
                    measure(side, url, pid, extra, warm, env)
                for r in range(1, args.rounds + 1):
                    for side, (url, pid, extra) in sides.items():
                        row = measure(side, url, pid, extra, args, env)
                        row["round"] = r
                        rows.append(row)
                        log(f"  round {r} {side}: {fmt(row['us_per_frame'], '.1f')} us/frame, CPU {row['cpu_pct']:.0f}%, "
                            f"{row['frames']} frames, {row['streams']} live, closed {row['closed']}, load {row['load']:.2f}")  # fmt: skip
                        time.sleep(2.0)  # the streams' teardown, outside any window
                if args.profile_seconds > 0:
                    profile = profile_ours(ours, args, env, workdir)
            finally:
                ref.stop()
                ours.stop()
                counts = ours.log_counts()
                log(f"daphne log: {counts['warnings']} warnings, {counts['errors']} errors")
    finally:
        redis_cleanup(prefix)
    report(rows, args, node_version)
    if profile:
        print(f"\n== py-spy of our daphne at {args.streams} streams ==\n{profile}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


def profile_ours(ours: Daphne, args, env: dict, workdir: Path) -> str:
    """py-spy over our daphne while the streams run (after the measured rounds)."""
    workers = [Worker(ours.http, 0, 1, "silence", env, ("--plain",))]
    try:
        workers[0].ask({"cmd": "open", "n": args.streams}, 600)
        time.sleep(args.settle)
        text = pyspy_window(args.py_spy, ours.pid, args.profile_seconds, workdir / "profile.txt")
        workers[0].ask({"cmd": "stop"}, 120)
        return text
    finally:
        for w in workers:
            w.kill()


def report(rows: list[dict], args, node_version: str) -> None:
    print()
    print(f"frame_cost: {args.streams} real-time streams of silence per window, {args.seconds:g}s windows, "
          f"{args.rounds} rounds alternated; ours = daphne + PostgreSQL + Redis layer, VAD {args.vad}; "
          f"ref = the reference handler on Node {node_version} + ws; {os.cpu_count()} CPUs")  # fmt: skip
    headers = ["round", "side", "streams", "frames", "server CPU s", "CPU %", "drain s", "us/frame", "gen CPU %", "gen late p99", "closed", "load 1m"]
    body = [
        [str(r["round"]), r["side"], str(r["streams"]), str(r["frames"]), f"{r['cpu_s']:.2f}", f"{r['cpu_pct']:.0f}", f"{r['drain_s']:.1f}",
         fmt(r["us_per_frame"], ".1f"), f"{r['gen_cpu_pct']:.0f}", f"{r['gen_late_p99']:.1f}ms", str(r["closed"]), f"{r['load']:.2f}"]
        for r in rows
    ]  # fmt: skip
    print(table(headers, body))
    per_side = {}
    for side in ("ours", "ref"):
        mine = [r for r in rows if r["side"] == side]
        frames = sum(r["frames"] for r in mine)
        per_side[side] = 1e6 * sum(r["cpu_s"] for r in mine) / frames if frames else None
    ours, ref = per_side["ours"], per_side["ref"]
    ratio = ours / ref if ours and ref else None
    print()
    print(f"CPU per inbound frame: ours {fmt(ours, '.1f')} us, reference {fmt(ref, '.1f')} us, "
          f"ratio {fmt(ratio, '.2f')}x (target <= {TARGET_RATIO:g}x: {'met' if ratio and ratio <= TARGET_RATIO else 'NOT met'})")  # fmt: skip
    bad = [r for r in rows if r["closed"] or r["failed"]]
    if bad:
        print(f"warning: {len(bad)} windows had streams fail or close early: figures are suspect")


if __name__ == "__main__":
    main()
