"""Shared by the Python peer drivers: the inventory, the account, the thread pool, and
the one JSON summary line every driver prints (the same keys as psfleet-bench's).

Each driver runs as its own process so bench.py can measure its CPU and memory; the
password is read from the simulator's accounts file, never passed in argv.
"""

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--accounts", required=True)
    parser.add_argument("--user", default="fleetadmin")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--script", default="$env:COMPUTERNAME")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--ca", help="CA PEM for HTTPS hosts (default: no certificate check)")
    parser.add_argument("--connect-timeout-ms", type=int, default=30000)
    parser.add_argument("--request-timeout-ms", type=int, default=60000)
    return parser.parse_args()


def read_rows(args):
    with open(args.inventory, newline="") as f:
        rows = list(csv.DictReader(f))
    if args.limit is not None:
        rows = rows[: args.limit]
    return rows


def read_password(args):
    with open(args.accounts) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[0].lower() == args.user.lower():
                return fields[1]
    sys.exit(f"{args.accounts}: no account {args.user!r}")


def computer_name(host):
    """The NetBIOS name a simulated host reports: first label, upper case, 15 characters."""
    return host.split(".")[0][:15].upper()


def run_pool(args, rows, one):
    """Runs `one(row) -> output text` over the rows with a pool of `concurrency` threads
    and prints the summary line; exits 2 when any host failed."""
    outcomes = {}
    times = []
    first_failure = None
    started = time.monotonic()

    def timed(row):
        t0 = time.monotonic()
        try:
            out = one(row)
            ok = out is not None and out.strip().upper() == computer_name(row["name"])
            result = ("ok", None) if ok else ("wrong_output", repr(out)[:200])
        except Exception as e:  # every failure is counted, whatever its kind
            result = (type(e).__name__, str(e)[:300])
        return row["name"], result, (time.monotonic() - t0) * 1000.0

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for future in as_completed([pool.submit(timed, row) for row in rows]):
            name, (outcome, error), ms = future.result()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            times.append(ms)
            if outcome != "ok" and first_failure is None:
                first_failure = f"{name}: {outcome} {error}"
    wall = time.monotonic() - started
    times.sort()

    def pick(q):
        return times[min(len(times) - 1, round((len(times) - 1) * q))] if times else 0.0

    succeeded = outcomes.get("ok", 0)
    summary = {
        "hosts": len(rows),
        "concurrency": args.concurrency,
        "succeeded": succeeded,
        "failed": len(rows) - succeeded,
        "outcomes": outcomes,
        "wall_s": wall,
        "per_host_ms_p50": pick(0.5),
        "per_host_ms_p99": pick(0.99),
        "per_host_ms_max": times[-1] if times else 0.0,
        "first_failure": first_failure,
    }
    print(json.dumps(summary), flush=True)
    sys.exit(0 if succeeded == len(rows) else 2)
