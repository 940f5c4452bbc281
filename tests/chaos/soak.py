#!/usr/bin/env python3
"""Chaos soak (issue 8 item 6, docs/reliability.md): one `psfleet run` over a large simulated
fleet where a quarter of the hosts misbehave, checked host by host.

The fleet is `psfleet sim --profile chaos` (sim/profiles/chaos.toml; 5,000 hosts by default):
75 % healthy, 10 % flaky links (3 % of service responses cut off mid-body, 50 ms jitter), 5 %
slow hosts (150 ms latency, 100 ms jitter, scripts 3 s longer) and 10 % quota-limited hosts
(MaxShellsPerUser 2). `psfleet run` runs one job per host (an inventory lists a host once),
so to make the quota bite this harness fills it first: before the run it opens two WinRS cmd
shells as the run's own user on every quota-limited host (WS-Man Create over HTTP with
Basic; the class offers Basic with AllowUnencrypted for this client only, the inventory
rows keep Negotiate). psfleet's Create there gets the quota fault "maximum number of 2
concurrent shells" and must requeue, not fail. Each host's two shells are deleted 0-5 s
(seeded) after the simulator has counted a quota fault on that host (stats.json, refreshed
every second), so every quota-limited host psfleet reaches while they are held meets at
least one fault, then finishes.

Checks, after the run:

  1. the run completes: psfleet exits 0 or 2 (never 3, 4, 5, a signal or the harness's
     timeout) and the journal ends `completed`;
  2. every inventory host is accounted for exactly once: one `done` line in the run journal
     and one JSON record on standard output, and no host outside the inventory;
  3. zero shells are open on the simulator at the end (final stats.json `shells_open`,
     after this harness deleted its own);
  4. no panics: none in psfleet's standard error ("panicked at"), nor in the simulator's;
  5. script executions per host (the simulator's per-host `script_executions`, which only
     psfleet causes: this harness opens cmd shells and runs nothing in them):
       - a host that succeeded ran the script at least once;
       - no host ran it more often than its record's `attempts` (one attempt runs it at
         most once);
       - a host ran it more than once only when a retry is legitimate: psfleet retries a
         transient failure (a reset) with a new attempt, and a reset after the script had
         run (on a Receive, the Signal or the Delete) makes the retry run it again, which
         is how Invoke-Command's retries behave too. Only flaky hosts have resets, so a
         second execution on any other class is a violation;
       - a quota fault is met before the shell exists, so it never causes a second run.

Prints one summary line with the counts; exits 0 only when every check held.
Standard library only (like tests/crash/harness.py); run by scripts/chaos-soak.
"""

import argparse
import base64
import concurrent.futures
import csv
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET

SCRIPT = "$x = Get-Date; 'done'"
# The simulator refreshes stats.json every second (docs/simulator.md); wait a bit more.
STATS_REFRESH = 1.3
QUOTA_CLASS = "quota_limited"
# Shells this harness holds on each quota-limited host: the class's MaxShellsPerUser.
HELD_SHELLS = 2
# Seconds between a host's first quota fault and the release of its held shells: [0, this].
RELEASE_DELAY = 5.0

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psfleet", required=True, help="the psfleet binary")
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--profile", default="chaos",
                        help="simulator profile: a built-in name or a TOML file")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--forks", type=int, default=None,
                        help="psfleet --forks (default: psfleet's own default)")
    parser.add_argument("--first-address", default="127.70.0.1")
    parser.add_argument("--work-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds the run may take before the soak fails")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    work = args.work_dir or tempfile.mkdtemp(prefix="psfleet-chaos-")
    os.makedirs(work, exist_ok=True)
    print(f"chaos-soak: seed {seed}, {args.hosts} hosts, profile {args.profile}, work {work}",
          flush=True)
    soak = Soak(args, seed, work)
    try:
        ok = soak.run()
    finally:
        soak.stop()
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


class Soak:
    def __init__(self, args, seed, work):
        self.args = args
        self.seed = seed
        self.work = work
        self.rng = random.Random(seed)
        self.sim = None
        self.holder = None
        self.problems = []

    def problem(self, text):
        self.problems.append(text)
        print(f"chaos-soak: PROBLEM: {text}", flush=True)

    def run(self):
        args = self.args
        self.sim = Sim(args, os.path.join(self.work, "sim"), self.seed)
        hosts = self.sim.hosts
        classes = {}
        for h in hosts.values():
            classes[h["group"]] = classes.get(h["group"], 0) + 1
        print("chaos-soak: fleet " + ", ".join(f"{c} {n}" for c, n in sorted(classes.items())),
              flush=True)

        quota_hosts = [h for h in hosts.values() if h["group"] == QUOTA_CLASS]
        self.holder = ShellHolder(self.sim, quota_hosts, random.Random(self.seed ^ 0x5EED))
        held = self.holder.open_all()
        print(f"chaos-soak: holding {held} shells on {len(quota_hosts)} quota-limited hosts "
              f"({HELD_SHELLS} each: their whole MaxShellsPerUser)", flush=True)
        if held != HELD_SHELLS * len(quota_hosts):
            self.problem(f"only {held} of {HELD_SHELLS * len(quota_hosts)} shells could be "
                         f"opened before the run")

        state = os.path.join(self.work, "state")
        os.makedirs(state, exist_ok=True)
        cmd = [args.psfleet, "--state-dir", state, "run", "-i", self.sim.inventory,
               "--user", self.sim.user, "-c", SCRIPT, "-o", "json", "--no-progress",
               "--progress-interval", "30s"]
        if args.forks:
            cmd += ["-f", str(args.forks)]
        env = clean_env()
        env["PSFLEET_PASSWORD"] = self.sim.password
        stdout_path = os.path.join(self.work, "run.jsonl")
        stderr_path = os.path.join(self.work, "run.stderr")
        shown = [c if c != self.sim.password else "***" for c in cmd]
        print("chaos-soak: " + " ".join(shown), flush=True)
        load_before = os.getloadavg()
        started = time.monotonic()
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err)
            watcher = Watcher(proc.pid, self.sim, self.holder)
            watcher.start()
            try:
                code = proc.wait(args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = "timeout"
            watcher.stop()
        wall = time.monotonic() - started
        load_after = os.getloadavg()
        released_late = self.holder.release_all()

        # ---- 1. completes; 4. panics (psfleet) ------------------------------------------
        if code not in (0, 2):
            self.problem(f"psfleet exited {code} (only 0 or 2 pass)")
        stderr_text = read_text(stderr_path)
        panics = stderr_text.count("panicked at")
        if panics:
            self.problem(f"{panics} panics in psfleet's standard error")

        # ---- 2. accounted for exactly once ----------------------------------------------
        records, json_counts = {}, {}
        json_bad, json_foreign = 0, set()
        with open(stdout_path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    json_bad += 1
                    continue
                host = record.get("host") if isinstance(record, dict) else None
                json_counts[host] = json_counts.get(host, 0) + 1
                if host not in hosts:
                    json_foreign.add(host)
                records[host] = record
        journal = read_journal(state)
        done_counts = journal["done"]
        journal_once = sum(1 for h in hosts if done_counts.get(h, 0) == 1)
        journal_missing = [h for h in hosts if done_counts.get(h, 0) == 0]
        journal_dupes = [h for h, n in done_counts.items() if n > 1]
        journal_foreign = [h for h in done_counts if h not in hosts]
        json_missing = [h for h in hosts if h not in records]
        json_dupes = [h for h, n in json_counts.items() if n > 1]
        json_once = sum(1 for h in hosts if json_counts.get(h, 0) == 1)
        if journal["runs"] != 1:
            self.problem(f"{journal['runs']} run journals, expected 1")
        if journal["end"] != "completed":
            self.problem(f"the journal ends {journal['end']!r}, not completed")
        for what, items in (("hosts without a done line", journal_missing),
                            ("hosts with several done lines", journal_dupes),
                            ("done lines for hosts outside the inventory", journal_foreign),
                            ("hosts without a JSON record", json_missing),
                            ("hosts with several JSON records", sorted(json_dupes)),
                            ("JSON records for hosts outside the inventory",
                             sorted(json_foreign))):
            if items:
                self.problem(f"{len(items)} {what}: {sorted(items)[:5]}")
        if json_bad:
            self.problem(f"{json_bad} lines of standard output are not JSON")
        mismatched = [h for h, r in records.items()
                      if h in journal["final"] and (journal["final"][h].get("status"),
                                                    journal["final"][h].get("bucket"))
                      != (r.get("status"), r.get("bucket"))]
        if mismatched:
            self.problem(f"{len(mismatched)} hosts whose JSON record and journal disagree: "
                         f"{sorted(mismatched)[:5]}")

        # ---- 3. shells; 5. executions; 4. panics (simulator) ----------------------------
        time.sleep(STATS_REFRESH)
        stats, sim_stderr = self.sim.stop()
        totals = stats.get("service_totals", {})
        shells_open = totals.get("shells_open")
        if shells_open != 0:
            open_on = [h for h in stats.get("hosts", [])
                       if (((h.get("service") or {}).get("totals") or {}).get("shells_open"))]
            self.problem(f"{shells_open} shells open on the simulator at the end, on "
                         f"{len(open_on)} hosts: " + ", ".join(
                             f"{h['name']} ({h.get('class')}: "
                             f"{h['service']['totals']['shells_open']} open, "
                             f"{h['service']['totals'].get('shells_created')} created, "
                             f"{(h.get('network') or {}).get('resets', 0)} resets)"
                             for h in open_on[:10]))
        sim_panics = sim_stderr.count("panicked at")
        if sim_panics:
            self.problem(f"{sim_panics} panics in the simulator's standard error")
            panics += sim_panics
        per_host = {h["name"]: h for h in stats.get("hosts", [])}

        def service(name):
            return ((per_host.get(name) or {}).get("service") or {}).get("totals") or {}

        outcome_by_class = {}
        buckets = {}
        runs_hist = {}
        twice_by_class = {}
        violations = []
        quota_hosts_faulted = 0
        quota_faults = 0
        for name, h in hosts.items():
            record = records.get(name) or journal["final"].get(name) or {}
            status = record.get("status", "missing")
            bucket = record.get("bucket") or ""
            attempts = record.get("attempts") or 0
            group = h["group"]
            key = "succeeded" if status == "succeeded" else f"{status} {bucket}".strip()
            outcome_by_class.setdefault(group, {}).setdefault(key, 0)
            outcome_by_class[group][key] += 1
            if status != "succeeded":
                buckets[bucket or status] = buckets.get(bucket or status, 0) + 1
            svc = service(name)
            executions = svc.get("script_executions", 0)
            faults = svc.get("quota_faults", 0)
            quota_faults += faults
            if group == QUOTA_CLASS and faults:
                quota_hosts_faulted += 1
            runs_hist[executions] = runs_hist.get(executions, 0) + 1
            if status == "succeeded" and executions < 1:
                violations.append(f"{name} ({group}) succeeded without running the script")
            if executions > max(attempts, 1):
                violations.append(f"{name} ({group}) ran the script {executions} times in "
                                  f"{attempts} attempts")
            if executions > 1:
                twice_by_class[group] = twice_by_class.get(group, 0) + 1
                if group != "flaky":
                    violations.append(f"{name} ({group}, no resets) ran the script "
                                      f"{executions} times ({attempts} attempts)")
        if violations:
            self.problem(f"{len(violations)} execution-count violations: "
                         + "; ".join(violations[:5]))

        # ---- summary --------------------------------------------------------------------
        print("chaos-soak: outcomes by class:", flush=True)
        for group in sorted(outcome_by_class):
            parts = ", ".join(f"{k} {n}" for k, n in sorted(outcome_by_class[group].items()))
            print(f"  {group:14} {classes.get(group, 0):5} hosts: {parts}", flush=True)
        stats_net = stats.get("totals", {})
        succeeded = sum(1 for r in records.values() if r.get("status") == "succeeded")
        failed = sum(1 for r in records.values() if r.get("status") == "failed")
        verdict = "PASS" if not self.problems else "FAIL"
        print(
            f"chaos-soak summary: {verdict}; {len(hosts)} hosts ("
            + ", ".join(f"{c} {n}" for c, n in sorted(classes.items()))
            + f"); psfleet exit {code} in {wall:.0f} s (load average {load_before[0]:.2f} "
            f"before, {watcher.max_load:.2f} peak, {load_after[0]:.2f} after; psfleet peak RSS "
            f"{watcher.peak_rss_kib / 1024:.0f} MiB); accounted exactly once: {journal_once} "
            f"in the journal, {json_once} in the JSON output (missing "
            f"{len(journal_missing)}/{len(json_missing)}, duplicated "
            f"{len(journal_dupes)}/{len(json_dupes)}); succeeded {succeeded}, failed {failed} ("
            + (", ".join(f"{b} {n}" for b, n in sorted(buckets.items())) or "none")
            + f"); quota faults {quota_faults} on {quota_hosts_faulted} of "
            f"{len(quota_hosts)} quota-limited hosts ({self.holder.released_on_fault} released "
            f"after a fault, {released_late} after the run); resets {stats_net.get('resets', 0)}; "
            f"script executions per host: "
            + ", ".join(f"{n}x {c}" for n, c in sorted(runs_hist.items()))
            + " (more than once: "
            + (", ".join(f"{g} {n}" for g, n in sorted(twice_by_class.items())) or "none")
            + f"; violations {len(violations)}); shells open at the end {shells_open}; "
            f"panics {panics}", flush=True)
        return not self.problems

    def stop(self):
        if self.holder:
            self.holder.release_all()
        if self.sim:
            self.sim.stop()


class Watcher(threading.Thread):
    """While psfleet runs: releases held shells after quota faults (reads stats.json every
    second), samples the load average and psfleet's peak resident set."""

    def __init__(self, pid, sim, holder):
        super().__init__(daemon=True)
        self.pid = pid
        self.sim = sim
        self.holder = holder
        self.done = threading.Event()
        self.max_load = 0.0
        self.peak_rss_kib = 0

    def run(self):
        while not self.done.wait(1.0):
            self.max_load = max(self.max_load, os.getloadavg()[0])
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
            except OSError:
                pass
            faulted = set()
            for h in self.sim.read_stats().get("hosts", []):
                svc = (h.get("service") or {}).get("totals") or {}
                if svc.get("quota_faults", 0) > 0:
                    faulted.add(h["name"])
            self.holder.faults_seen(faulted)

    def stop(self):
        self.done.set()
        self.join()


class ShellHolder:
    """Holds WinRS cmd shells on the quota-limited hosts as the run's own user (a minimal
    WS-Man client: Create and Delete, Basic over HTTP), and releases them."""

    def __init__(self, sim, hosts, rng):
        self.sim = sim
        self.hosts = {h["name"]: h for h in hosts}
        self.rng = rng
        self.shells = {}  # host name -> [shell ids]
        self.lock = threading.Lock()
        self.pending = {}  # host name -> release time
        self.released_on_fault = 0
        self.timers = []

    def open_all(self):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(self.open_host, self.hosts.values()))
        return sum(results)

    def open_host(self, h):
        ids = []
        for _ in range(HELD_SHELLS):
            try:
                ids.append(self.create(h))
            except Exception as e:  # noqa: BLE001 - reported, the soak goes on
                print(f"chaos-soak: could not open a shell on {h['name']}: {e}", flush=True)
        with self.lock:
            self.shells[h["name"]] = ids
        return len(ids)

    def faults_seen(self, faulted):
        now = time.monotonic()
        with self.lock:
            for name in faulted:
                if name in self.shells and name not in self.pending:
                    self.pending[name] = now + self.rng.uniform(0.0, RELEASE_DELAY)
            due = [n for n, t in self.pending.items() if t <= now and n in self.shells]
        for name in due:
            if self.release(name):
                self.released_on_fault += 1
        # The next check comes within a second: delays round up to the next tick.

    def release(self, name):
        with self.lock:
            ids = self.shells.pop(name, None)
        if ids is None:
            return False
        for shell in ids:
            try:
                self.delete(self.hosts[name], shell)
            except Exception as e:  # noqa: BLE001
                print(f"chaos-soak: could not delete shell {shell} on {name}: {e}", flush=True)
        return True

    def release_all(self):
        with self.lock:
            names = [n for n, ids in self.shells.items() if ids]
            for n, ids in list(self.shells.items()):
                if not ids:
                    self.shells.pop(n)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return sum(1 for ok in pool.map(self.release, names) if ok)

    # ----- WS-Man ---------------------------------------------------------------------

    def create(self, h):
        shell = ET.Element(q("rsp", "Shell"))
        ET.SubElement(shell, q("rsp", "InputStreams")).text = "stdin"
        ET.SubElement(shell, q("rsp", "OutputStreams")).text = "stdout stderr"
        reply = self.post(h, envelope(h, ACTION_CREATE, None, shell))
        found = reply.find(".//rsp:ShellId", NS)
        if found is None or not found.text:
            raise RuntimeError("no ShellId in the Create response")
        return found.text.strip()

    def delete(self, h, shell_id):
        self.post(h, envelope(h, ACTION_DELETE, shell_id, None))

    def post(self, h, body):
        token = base64.b64encode(f"{self.sim.user}:{self.sim.password}".encode()).decode()
        conn = http.client.HTTPConnection(h["address"], int(h["port"]), timeout=30)
        try:
            conn.request("POST", "/wsman", body=body, headers={
                "Content-Type": "application/soap+xml;charset=UTF-8",
                "Authorization": f"Basic {token}",
            })
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return ET.fromstring(data)


def q(prefix, name):
    return f"{{{NS[prefix]}}}{name}"


def envelope(h, action, shell_id, body_child):
    """A WS-Man request as pypsrp/pywinrm send it (the recorded traffic in
    /work/shared/conformance/pypsrp-recorded/test_client_execute_cmd.yml)."""
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    env = ET.Element(q("s", "Envelope"))
    header = ET.SubElement(env, q("s", "Header"))
    must = {q("s", "mustUnderstand"): "true"}
    ET.SubElement(header, q("wsa", "Action"), must).text = action
    ET.SubElement(header, q("wsman", "MaxEnvelopeSize"), must).text = "153600"
    ET.SubElement(header, q("wsa", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, q("wsman", "OperationTimeout")).text = "PT20S"
    reply_to = ET.SubElement(header, q("wsa", "ReplyTo"))
    ET.SubElement(reply_to, q("wsa", "Address"), must).text = ANONYMOUS
    ET.SubElement(header, q("wsman", "ResourceURI"), must).text = CMD_URI
    ET.SubElement(header, q("wsa", "To")).text = f"http://{h['address']}:{h['port']}/wsman"
    if shell_id:
        selectors = ET.SubElement(header, q("wsman", "SelectorSet"))
        ET.SubElement(selectors, q("wsman", "Selector"), {"Name": "ShellId"}).text = shell_id
    body = ET.SubElement(env, q("s", "Body"))
    if body_child is not None:
        body.append(body_child)
    return ET.tostring(env, encoding="utf-8")


class Sim:
    """A `psfleet sim` fleet; its stats.json counts shells, quota faults and script runs."""

    def __init__(self, args, out, seed):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        self.out = out
        self.inventory = os.path.join(out, "inventory.csv")
        self.stderr_path = os.path.join(out, "..", "sim.stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.stopped = None
        self.proc = subprocess.Popen(
            [args.psfleet, "sim", "--hosts", str(args.hosts), "--profile", args.profile,
             "--seed", str(seed), "--first-address", args.first_address, "--out", out],
            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.stderr)
        deadline = time.monotonic() + 120
        accounts = os.path.join(out, "accounts.txt")
        while not (os.path.exists(self.inventory) and os.path.exists(accounts)
                   and os.path.exists(os.path.join(out, "stats.json"))):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"chaos-soak: psfleet sim did not start: "
                         f"{read_text(self.stderr_path)}")
            time.sleep(0.1)
        time.sleep(0.2)
        with open(accounts) as f:
            for line in f:
                name, password, *_ = line.split()
                if name == "fleetadmin":
                    self.user, self.password = name, password
        with open(self.inventory, newline="") as f:
            self.hosts = {row["name"]: row for row in csv.DictReader(f)}

    def read_stats(self):
        try:
            with open(os.path.join(self.out, "stats.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stop(self):
        """Stops the fleet; returns its final stats.json and standard error."""
        if self.stopped is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()
            stats = self.read_stats()
            if not stats.get("final_snapshot"):
                print("chaos-soak: the simulator wrote no final stats.json", flush=True)
            self.stopped = (stats, read_text(self.stderr_path))
        return self.stopped


def read_journal(state):
    """Per host: how many `done` lines, and the last one's record; the end reason; runs."""
    done, final, ended, runs = {}, {}, None, 0
    runs_dir = os.path.join(state, "runs")
    for run in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        path = os.path.join(runs_dir, run, "journal.jsonl")
        if not os.path.exists(path):
            continue
        runs += 1
        with open(path, "rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if entry.get("type") == "done":
                    record = entry.get("record") or {}
                    host = record.get("host")
                    done[host] = done.get(host, 0) + 1
                    final[host] = record
                elif entry.get("type") == "end":
                    ended = entry.get("reason")
    return dict(done=done, final=final, end=ended, runs=runs)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def clean_env():
    """PATH only, and a home of its own, so no psfleet.toml or PSFLEET_* of the user's
    changes what runs (the password is added where a run needs it)."""
    home = os.path.join(tempfile.gettempdir(), "psfleet-chaos-home")
    os.makedirs(home, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
        "XDG_STATE_HOME": os.path.join(home, "state"),
    }


if __name__ == "__main__":
    main()
