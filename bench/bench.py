#!/usr/bin/env python3
"""The side-by-side benchmark (BENCHMARKS.md): one simulated fleet, one one-line
PowerShell script, and each client in turn at the same concurrency.

    scripts/bench [--hosts N] [--latency-ms L] [--concurrency C] [--https]
                  [--peers psfleet,pypsrp,pywinrm,ansible] [--sweep-blackhole]
                  [--plot 16,64,256]

Starts ONE `psfleet sim` (its own process) and runs on it, one after another, NTLM with
message encryption over HTTP (or TLS with fresh handshakes, --https):
  psfleet          `psfleet run` (when that command works in this build)
  psfleet-engine   bench/src/main.rs: the engine's HostClient::run_script, C in flight
  pypsrp           Client.execute_ps from a ThreadPoolExecutor of C workers
  pywinrm          Session.run_ps from a ThreadPoolExecutor of C workers
  ansible          ansible all -m raw -f C, winrm connection (pywinrm underneath)

For each it measures, from outside the client:
  wall       from spawning the client to its exit
  CPU        user+sys of the client's whole process tree: wait4() on the client, and on
             every descendant orphaned to this driver (it is a child subreaper), so no
             process escapes the count
  peak RSS   VmRSS (statm resident) summed over the live tree, sampled every 50 ms
  RT/host    HTTP requests the simulator received during the run / hosts (stats.json)
  bound      N x RT/host x L / C: the time the requests' latency alone takes at C
and checks correctness: every host must answer with its own computer name.

No third-party Python in this file: it is run by the system python3; the peers run in
bench/.venv (bench/requirements.txt), created on first use.
"""

import argparse
import csv
import ctypes
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENV = os.path.join(BENCH, ".venv")
REQUIREMENTS = os.path.join(BENCH, "requirements.txt")
RESULTS = os.path.join(BENCH, "results")
ALL_PEERS = ["psfleet", "psfleet-runner", "psfleet-engine", "psfleet-engine-probe", "pypsrp",
             "pywinrm", "ansible"]
PYTHON_PEERS = {"pypsrp", "pywinrm", "ansible"}
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


def main():
    args = parse_args()
    if args.svg:
        with open(args.svg) as f:
            doc = json.load(f)
        path = os.path.join(args.results_dir, "hosts-per-second.svg")
        with open(path, "w") as f:
            f.write(render_svg(doc))
        print(f"bench: plot written to {path}")
        return
    if args.render:
        for path in args.render:
            with open(path) as f:
                doc = json.load(f)
            levels = doc.get("concurrency_levels") or [None]
            for c in levels:
                print(render_markdown(doc, only_concurrency=c))
                print()
        return
    peers = expand_peers(args.peers)
    if args.sweep_blackhole:
        peers = [p for p in peers if p in ("psfleet", "psfleet-runner", "psfleet-engine")] \
            or ["psfleet-engine"]
        if args.probe_slots:
            peers.append("psfleet-engine-probe")
    if PYTHON_PEERS & set(peers):
        ensure_venv()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    become_subreaper()

    profile = args.profile or (
        os.path.join(BENCH, "profiles", "sweep.toml") if args.sweep_blackhole
        else os.path.join(BENCH, "profiles", "https.toml") if args.https
        else "bench")
    fleet = Fleet(args, profile)
    fleet.start()
    try:
        if args.plot:
            run_plot(args, fleet, peers)
        elif args.sweep_blackhole:
            run_sweep(args, fleet, peers)
        else:
            run_table(args, fleet, peers, args.concurrency)
    finally:
        fleet.stop()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, help="fleet size (default 200; 10000 with --sweep-blackhole)")
    p.add_argument("--latency-ms", type=int, default=20, help="latency of every response (default 20)")
    p.add_argument("--concurrency", type=int, help="hosts in flight per client (default 64; 1000 with --sweep-blackhole)")
    p.add_argument("--https", action="store_true", help="HTTPS listeners, a fresh TLS handshake per host")
    p.add_argument("--peers", default="psfleet,pypsrp,pywinrm,ansible",
                   help="comma-separated: psfleet (psfleet run, and psfleet-engine), psfleet-engine, pypsrp, pywinrm, ansible, or all")
    p.add_argument("--sweep-blackhole", action="store_true",
                   help="30%% of the hosts blackholed (connect never completes); psfleet only, "
                        "sweep job (Identify, authenticate, read winrm/config)")
    p.add_argument("--connect-timeout-ms", type=int, default=None,
                   help="client connect timeout (default 30000; 5000 with --sweep-blackhole)")
    p.add_argument("--probe-slots", type=int, default=None,
                   help="sweep: also run psfleet-engine with a TCP probe stage of this many slots "
                        "outside the C work slots (default 5000 with --sweep-blackhole; 0: no)")
    p.add_argument("--queue-depth", type=int, default=0,
                   help="psfleet-runner: the scheduler's queue depth (default: the engine's)")
    p.add_argument("--plot", help="comma-separated concurrencies: run every peer at each and write the SVG")
    p.add_argument("--ansible-hosts", type=int,
                   help="run Ansible on the first M hosts only (its figures are per host; say so)")
    p.add_argument("--python-hosts", type=int,
                   help="run pypsrp and pywinrm on the first M hosts only")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the psfleet rows this many times and report the median (default 1)")
    p.add_argument("--script", default="$env:COMPUTERNAME", help="the one-line script (default $env:COMPUTERNAME)")
    p.add_argument("--profile", help="simulator profile (default: bench, bench/profiles/https.toml or sweep.toml)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--first-address", default="127.64.0.1",
                   help="first simulated host address (127.0.0.0/8; moved on if in use)")
    p.add_argument("--threads", type=int, default=2, help="psfleet-engine tokio worker threads (0: current-thread)")
    p.add_argument("--peer-timeout-s", type=int, default=3600, help="a client still running after this is killed")
    p.add_argument("--psfleet", default=os.path.join(ROOT, "target", "release", "psfleet"))
    p.add_argument("--bench-bin", default=os.path.join(ROOT, "target", "release", "psfleet-bench"))
    p.add_argument("--work", default=os.path.join(ROOT, "target", "bench-work"),
                   help="scratch directory (fleet files, client logs)")
    p.add_argument("--results-dir", default=RESULTS)
    p.add_argument("--svg", metavar="RESULTS_JSON",
                   help="redraw bench/results/hosts-per-second.svg from a saved plot run and exit")
    p.add_argument("--render", nargs="+", metavar="RESULTS_JSON",
                   help="print the tables of saved results as Markdown (for BENCHMARKS.md) and exit")
    p.add_argument("--name", help="results file name (default: derived from the options)")
    args = p.parse_args()
    if args.hosts is None:
        args.hosts = 10000 if args.sweep_blackhole else 200
    if args.concurrency is None:
        args.concurrency = 1000 if args.sweep_blackhole else 64
    if args.probe_slots is None:
        args.probe_slots = 5000 if args.sweep_blackhole else 0
    if args.connect_timeout_ms is None:
        args.connect_timeout_ms = 5000 if args.sweep_blackhole else 30000
    return args


def expand_peers(text):
    peers = []
    for name in (p.strip() for p in text.split(",") if p.strip()):
        if name == "all":
            peers += [p for p in ALL_PEERS if p != "psfleet-engine-probe"]
        elif name == "psfleet":
            peers += ["psfleet", "psfleet-runner", "psfleet-engine"]
        elif name in ALL_PEERS:
            peers.append(name)
        else:
            sys.exit(f"bench: unknown peer {name!r} (known: {', '.join(ALL_PEERS)})")
    return list(dict.fromkeys(peers))


# ----- set-up -----

def ensure_venv():
    """bench/.venv with the pinned peers, rebuilt when requirements.txt changes."""
    with open(REQUIREMENTS, "rb") as f:
        want = __import__("hashlib").sha256(f.read()).hexdigest()
    stamp = os.path.join(VENV, ".requirements.sha256")
    have = open(stamp).read().strip() if os.path.exists(stamp) else None
    if os.path.exists(os.path.join(VENV, "bin", "python")) and have == want:
        return
    print(f"bench: creating {VENV} from {REQUIREMENTS}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "--quiet",
                    "--disable-pip-version-check", "-r", REQUIREMENTS], check=True)
    with open(stamp, "w") as f:
        f.write(want + "\n")


def become_subreaper():
    """Orphaned descendants of a client are re-parented to this process, which waits for
    them and adds their CPU time to the client's (ansible's workers, for example)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("bench: could not become a child subreaper; orphaned processes' CPU is sampled only",
              file=sys.stderr)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in load]}


# ----- the simulated fleet -----

class Fleet:
    """One `psfleet sim` process for the whole benchmark."""

    def __init__(self, args, profile):
        self.args = args
        self.profile = profile
        self.dir = os.path.join(args.work, "fleet")
        self.proc = None
        self.rows = []

    def start(self):
        a = self.args
        first = a.first_address
        for attempt in range(8):
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            log = open(os.path.join(a.work, "sim.log"), "w")
            cmd = [a.psfleet, "sim", "--hosts", str(a.hosts), "--profile", self.profile,
                   "--latency-ms", str(a.latency_ms), "--seed", str(a.seed),
                   "--out", self.dir, "--first-address", first]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if os.path.exists(self.stats_path()) and os.path.exists(self.inventory()):
                    break
                time.sleep(0.1)
            if self.proc.poll() is None and os.path.exists(self.stats_path()):
                break
            text = open(os.path.join(a.work, "sim.log")).read()
            self.stop()
            if "in use" in text or "Address" in text:
                # Another checkout's fleet holds the block: move 4 /16s on.
                octets = [int(x) for x in first.split(".")]
                octets[1] = 64 + (octets[1] - 64 + 4) % 160
                first = ".".join(map(str, octets))
                continue
            sys.exit(f"bench: psfleet sim failed:\n{text}")
        else:
            sys.exit("bench: no free loopback block for the fleet")
        with open(self.inventory(), newline="") as f:
            self.rows = list(csv.DictReader(f))
        print(f"bench: fleet of {len(self.rows)} hosts ({os.path.basename(self.profile)}, "
              f"L={a.latency_ms} ms) from {first}, pid {self.proc.pid}", flush=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def inventory(self):
        return os.path.join(self.dir, "inventory.csv")

    def accounts(self):
        return os.path.join(self.dir, "accounts.txt")

    def ca(self):
        return os.path.join(self.dir, "ca.pem")

    def stats_path(self):
        return os.path.join(self.dir, "stats.json")

    def stats(self, newer_than=None):
        """The totals of a stats.json written after `newer_than` (time.time())."""
        deadline = time.monotonic() + 10
        while True:
            try:
                mtime = os.stat(self.stats_path()).st_mtime
                if newer_than is None or mtime > newer_than or time.monotonic() > deadline:
                    with open(self.stats_path()) as f:
                        return json.load(f)["totals"]
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def cpu_seconds(self):
        return proc_cpu(self.proc.pid) or 0.0

    def password(self, user="fleetadmin"):
        with open(self.accounts()) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == user:
                    return fields[1]
        sys.exit("bench: no fleetadmin in accounts.txt")


# ----- measuring a client -----

def proc_stat(pid):
    """(ppid, utime+stime ticks, starttime) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def proc_cpu(pid):
    stat = proc_stat(pid)
    return stat[1] / TICKS if stat else None


def children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """Every 50 ms: the client's live process tree (its descendants, plus any that were
    once descendants and got re-parented here), the sum of their resident sizes, and each
    one's CPU ticks so far."""

    def __init__(self, root, interval=0.05):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.known = {}  # pid -> starttime, so a reused pid is not mistaken for ours
        self.last_cpu = {}  # (pid, starttime) -> ticks at the last sample
        self.peak_rss = 0
        self.peak_processes = 0
        self.samples = 0
        self.stop_event = threading.Event()

    def tree(self):
        seen = {}
        stack = [self.root] + list(self.known)
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            stat = proc_stat(pid)
            if stat is None or (pid in self.known and self.known[pid] != stat[2]):
                continue
            seen[pid] = stat
            stack += children(pid)
        return seen

    def sample(self):
        tree = self.tree()
        rss = 0
        for pid, (_ppid, ticks, start) in tree.items():
            self.known[pid] = start
            self.last_cpu[(pid, start)] = ticks
            rss += rss_bytes(pid)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_processes = max(self.peak_processes, len(tree))
        self.samples += 1
        for pid in [p for p in self.known if p not in tree]:
            del self.known[pid]

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)


def run_measured(cmd, log_prefix, env=None, cwd=None, timeout=3600):
    """Runs a client and measures it; returns (rc, stdout text, measures)."""
    out_path, err_path = log_prefix + ".out", log_prefix + ".err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        killed = False
        rusage = None
        status = 0
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop_event.set()
        sampler.join()
        cpu = rusage.ru_utime + rusage.ru_stime
        user, system = rusage.ru_utime, rusage.ru_stime
        # Descendants the client did not wait for were re-parented to this subreaper.
        orphans = [pid for pid in sampler.known if pid != proc.pid]
        deadline = time.monotonic() + 10
        for pid in orphans:
            while True:
                try:
                    got, _st, ru = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:
                    # Not ours to wait (still under another descendant): sampled CPU only.
                    start = sampler.known.get(pid)
                    cpu += sampler.last_cpu.get((pid, start), 0) / TICKS
                    break
                if got == pid:
                    cpu += ru.ru_utime + ru.ru_stime
                    user += ru.ru_utime
                    system += ru.ru_stime
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
    with open(out_path) as f:
        stdout = f.read()
    measures = {"wall_s": wall, "cpu_s": cpu, "cpu_user_s": user, "cpu_sys_s": system,
                "peak_rss_mb": sampler.peak_rss / 2**20,
                "peak_processes": sampler.peak_processes, "rss_samples": sampler.samples,
                "maxrss_single_mb": rusage.ru_maxrss / 1024, "killed": killed}
    return proc.returncode, stdout, measures


# ----- the peers -----

def peer_command(peer, args, fleet, concurrency, work, limit):
    """The command line (and env) of one client, or (None, reason) when it cannot run."""
    common = ["--inventory", fleet.inventory(), "--accounts", fleet.accounts(),
              "--concurrency", str(concurrency), "--script", args.script,
              "--connect-timeout-ms", str(args.connect_timeout_ms)]
    if limit is not None:
        common += ["--limit", str(limit)]
    if args.https:
        common += ["--ca", fleet.ca()]
    env = dict(os.environ)
    if peer in ("psfleet-engine", "psfleet-engine-probe", "psfleet-runner"):
        if not os.path.exists(args.bench_bin):
            return None, f"{args.bench_bin} not built (cargo build --release -p psfleet-bench)"
        job = ["--job", "sweep"] if args.sweep_blackhole else []
        if peer == "psfleet-engine-probe":
            job += ["--probe-slots", str(args.probe_slots)]
        if peer == "psfleet-runner":
            state = os.path.join(work, "psfleet-runner-state")
            shutil.rmtree(state, ignore_errors=True)
            job += ["--runner-state-dir", state]
            if args.queue_depth:
                job += ["--queue-depth", str(args.queue_depth)]
        return [args.bench_bin, *common, *job, "--threads", str(args.threads),
                "--results", os.path.join(work, f"{peer}.hosts.jsonl")], env
    if peer == "psfleet":
        return psfleet_run_command(args, fleet, concurrency, work, limit, env)
    python = os.path.join(VENV, "bin", "python")
    if peer in ("pypsrp", "pywinrm"):
        return [python, os.path.join(BENCH, "peers", f"{peer}_peer.py"), *common], env
    if peer == "ansible":
        inventory = write_ansible_inventory(args, fleet, work, limit)
        env.update({
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_HOME": os.path.join(work, "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": os.path.join(work, "ansible-tmp"),
            "ANSIBLE_TIMEOUT": str(max(1, args.connect_timeout_ms // 1000)),
        })
        return [os.path.join(VENV, "bin", "ansible"), "all", "-i", inventory, "-m", "raw",
                "-a", args.script, "-f", str(concurrency), "-o"], env
    return None, f"unknown peer {peer}"


def psfleet_run_command(args, fleet, concurrency, work, limit, env):
    """`psfleet run`, when this build has it (it is being built in another branch)."""
    probe = subprocess.run([args.psfleet, "run", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, "`psfleet run` is not in this build"
    password_file = os.path.join(work, "password")
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(fleet.password() + "\n")
    cmd = [args.psfleet, "run", "-c", args.script, "-i", fleet.inventory(),
           "-u", "fleetadmin", "--password-file", password_file,
           "--authentication", "ntlm", "--forks", str(concurrency),
           "--connect-timeout", f"{args.connect_timeout_ms}ms", "--output", "json"]
    if args.https:
        cmd += ["--use-ssl", "--ca-file", fleet.ca()]
    if limit is not None:
        cmd += ["--limit", ",".join(r["name"] for r in fleet.rows[:limit])]
    env["PSFLEET_STATE_DIR"] = os.path.join(work, "psfleet-state")
    return cmd, env


def write_ansible_inventory(args, fleet, work, limit):
    """A YAML (JSON-syntax) inventory with the connection variables; mode 0600 because it
    holds the password (Ansible reads it from no other non-interactive place)."""
    rows = fleet.rows if limit is None else fleet.rows[:limit]
    variables = {
        "ansible_connection": "winrm",
        "ansible_user": "fleetadmin",
        "ansible_password": fleet.password(),
        "ansible_winrm_transport": "ntlm",
        "ansible_winrm_message_encryption": "auto" if args.https else "always",
        "ansible_winrm_server_cert_validation": "ignore",
        "ansible_winrm_read_timeout_sec": 70,
        "ansible_winrm_operation_timeout_sec": 60,
    }
    if args.https:
        variables["ansible_winrm_server_cert_validation"] = "validate"
        variables["ansible_winrm_ca_trust_path"] = fleet.ca()
    hosts = {r["name"]: {"ansible_host": r["address"], "ansible_port": int(r["port"]),
                         "ansible_winrm_scheme": r["scheme"]} for r in rows}
    path = os.path.join(work, "ansible-inventory.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"all": {"vars": variables, "hosts": hosts}}, f)
    return path


ANSIBLE_LINE = re.compile(r"^(\S+) \| ([A-Z]+!?)(?: \| rc=(-?\d+))?(.*)$")


def parse_ansible(stdout, rows):
    """Counts the oneline callback's per-host lines against the expected names."""
    expected = {r["name"]: computer_name(r["name"]) for r in rows}
    outcomes, first_failure, seen = {}, None, set()
    for line in stdout.splitlines():
        m = ANSIBLE_LINE.match(line)
        if not m or m.group(1) not in expected:
            continue
        name, status, rc, rest = m.groups()
        seen.add(name)
        text = rest.split("(stdout)", 1)[1] if "(stdout)" in rest else ""
        text = text.replace("\\r\\n", "\n").strip().split("\n")[0].strip()
        if status in ("CHANGED", "SUCCESS") and rc == "0" and text.upper() == expected[name]:
            outcome = "ok"
        else:
            outcome = status.rstrip("!")
            if first_failure is None:
                first_failure = line[:300]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    missing = len(expected) - len(seen)
    if missing:
        outcomes["missing"] = missing
    ok = outcomes.get("ok", 0)
    return {"hosts": len(rows), "succeeded": ok, "failed": len(rows) - ok, "outcomes": outcomes,
            "first_failure": first_failure}


def parse_psfleet_run(stdout, rows):
    """`psfleet run --output json`: one run record per host."""
    expected = {r["name"]: computer_name(r["name"]) for r in rows}
    outcomes, first_failure = {}, None
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        name = record.get("host") or record.get("name")
        if name not in expected:
            continue
        output = record.get("output") or []
        first = output[0] if output else None
        ok = isinstance(first, str) and first.upper() == expected[name]
        outcome = "ok" if ok else str(record.get("bucket") or record.get("status") or "wrong_output")
        if not ok and first_failure is None:
            first_failure = line[:300]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    ok = outcomes.get("ok", 0)
    return {"hosts": len(rows), "succeeded": ok, "failed": len(rows) - ok, "outcomes": outcomes,
            "first_failure": first_failure}


def computer_name(host):
    return host.split(".")[0][:15].upper()


def run_peer(peer, args, fleet, concurrency, limit=None):
    work = os.path.join(args.work, "clients")
    os.makedirs(work, exist_ok=True)
    cmd, env = peer_command(peer, args, fleet, concurrency, work, limit)
    if cmd is None:
        print(f"bench: {peer}: skipped: {env}", flush=True)
        return {"peer": peer, "skipped": env}
    rows = fleet.rows if limit is None else fleet.rows[:limit]
    hosts = len(rows)
    print(f"bench: {peer}: {hosts} hosts at C={concurrency} ...", flush=True)
    time.sleep(1.0)  # let the fleet settle and write a snapshot with nothing in flight
    before = fleet.stats(newer_than=time.time() - 0.001)
    sim_cpu0 = fleet.cpu_seconds()
    rc, stdout, m = run_measured(cmd, os.path.join(work, f"{peer}-c{concurrency}"), env=env,
                                 cwd=work, timeout=args.peer_timeout_s)
    sim_cpu = fleet.cpu_seconds() - sim_cpu0
    after = fleet.stats(newer_than=time.time() + 0.05)
    if peer == "ansible":
        summary = parse_ansible(stdout, rows)
    elif peer == "psfleet":
        summary = parse_psfleet_run(stdout, rows)
    else:
        summary = {}
        for line in stdout.splitlines():
            try:
                summary = json.loads(line)
            except ValueError:
                pass
        if not summary:
            summary = {"hosts": hosts, "succeeded": 0, "failed": hosts,
                       "outcomes": {"no_summary": hosts}, "first_failure": f"exit {rc}"}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    rt = delta.get("requests", 0) / hosts if hosts else 0.0
    bound = hosts * rt * args.latency_ms / 1000.0 / concurrency
    wall = m["wall_s"]
    result = {
        "peer": peer, "hosts": hosts, "concurrency": concurrency, "rc": rc,
        "succeeded": summary.get("succeeded", 0), "failed": summary.get("failed", hosts),
        "outcomes": summary.get("outcomes", {}), "first_failure": summary.get("first_failure"),
        "wall_s": wall, "hosts_per_s": hosts / wall if wall else 0.0,
        "cpu_s": m["cpu_s"], "cpu_user_s": m["cpu_user_s"], "cpu_sys_s": m["cpu_sys_s"],
        "cpu_ms_per_host": m["cpu_s"] * 1000.0 / hosts if hosts else 0.0,
        "peak_rss_mb": m["peak_rss_mb"], "peak_processes": m["peak_processes"],
        "rss_samples": m["rss_samples"], "killed": m["killed"],
        "round_trips_per_host": rt,
        "connections_per_host": delta.get("connections", 0) / hosts if hosts else 0.0,
        "authentications_per_host": delta.get("authentications", 0) / hosts if hosts else 0.0,
        "sim_counters": delta, "sim_cpu_s": sim_cpu,
        "bound_s": bound, "wall_over_bound": wall / bound if bound else None,
        "client_summary": summary,
    }
    print(f"bench: {peer}: {result['succeeded']}/{hosts} ok in {wall:.2f} s "
          f"({result['hosts_per_s']:.1f} hosts/s, CPU {m['cpu_s']:.2f} s, "
          f"peak RSS {m['peak_rss_mb']:.1f} MB, {rt:.2f} RT/host)", flush=True)
    if result["failed"]:
        print(f"bench: {peer}: failures {result['outcomes']}; first: {result['first_failure']}",
              flush=True)
    return result


# ----- modes -----

def limits_for(peer, args):
    if peer == "ansible" and args.ansible_hosts:
        return min(args.ansible_hosts, args.hosts)
    if peer in ("pypsrp", "pywinrm") and args.python_hosts:
        return min(args.python_hosts, args.hosts)
    return None


def run_repeated(peer, args, fleet, concurrency, limit):
    """psfleet rows run `--repeat` times (the machine is shared: one run can be unlucky);
    the run with the median wall time is reported, every run is kept."""
    times = args.repeat if peer.startswith("psfleet") else 1
    runs = [run_peer(peer, args, fleet, concurrency, limit) for _ in range(times)]
    if len(runs) == 1 or runs[0].get("skipped"):
        return runs[0]
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["repeats"] = [{k: r[k] for k in ("wall_s", "hosts_per_s", "cpu_s", "peak_rss_mb",
                                             "succeeded")} for r in runs]
    return chosen


def run_table(args, fleet, peers, concurrency):
    results = [run_repeated(p, args, fleet, concurrency, limits_for(p, args)) for p in peers]
    doc = document(args, results, mode="https" if args.https else "http")
    print()
    print(render_table(doc))
    save(args, doc)
    return doc


def run_plot(args, fleet, peers):
    levels = [int(x) for x in args.plot.split(",") if x.strip()]
    results = []
    for c in levels:
        for p in peers:
            results.append(run_repeated(p, args, fleet, c, limits_for(p, args)))
    doc = document(args, results, mode="plot")
    doc["concurrency_levels"] = levels
    print()
    for c in levels:
        print(render_table(doc, only_concurrency=c))
        print()
    save(args, doc)
    svg = render_svg(doc)
    path = os.path.join(args.results_dir, "hosts-per-second.svg")
    with open(path, "w") as f:
        f.write(svg)
    print(f"bench: plot written to {path}")


def run_sweep(args, fleet, peers):
    blackholed = sum(1 for r in fleet.rows if r["group"] == "blackholed")
    c = args.concurrency
    timeout_s = args.connect_timeout_ms / 1000.0
    expected = timeout_s * math.ceil(blackholed / c) * 1.1
    results = [run_peer(p, args, fleet, c) for p in peers]
    for r in results:
        if r.get("skipped"):
            continue
        accounted = sum(r["outcomes"].values())
        healthy = len(fleet.rows) - blackholed
        r["sweep"] = {
            "blackholed": blackholed, "connect_timeout_s": timeout_s,
            "expected_bound_s": expected, "within_bound": r["wall_s"] <= expected,
            "every_host_accounted_for": accounted == len(fleet.rows),
            "healthy_ok": r["succeeded"], "healthy": healthy,
            "blackholed_failed": r["failed"],
        }
    doc = document(args, results, mode="sweep")
    print()
    print(render_table(doc))
    for r in results:
        s = r.get("sweep")
        if s:
            print(f"sweep {r['peer']}: {s['blackholed']} blackholed of {r['hosts']} at C={c}, "
                  f"connect timeout {timeout_s:g} s: wall {r['wall_s']:.2f} s, bound "
                  f"{s['expected_bound_s']:.2f} s ({'holds' if s['within_bound'] else 'MISSED'}); "
                  f"{s['healthy_ok']}/{s['healthy']} healthy ok, outcomes {r['outcomes']}, "
                  f"every host accounted for: {s['every_host_accounted_for']}")
    save(args, doc)


# ----- output -----

def document(args, results, mode):
    return {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode, "machine": machine(),
        "options": {"hosts": args.hosts, "latency_ms": args.latency_ms,
                    "concurrency": args.concurrency, "https": args.https,
                    "script": args.script, "seed": args.seed,
                    "connect_timeout_ms": args.connect_timeout_ms,
                    "ansible_hosts": args.ansible_hosts, "python_hosts": args.python_hosts,
                    "threads": args.threads, "probe_slots": args.probe_slots,
                    "repeat": args.repeat, "queue_depth": args.queue_depth,
                    "git": git_head()},
        "results": results,
    }


def git_head():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def save(args, doc):
    name = args.name or (
        f"{doc['mode']}-n{args.hosts}-l{args.latency_ms}-c{args.concurrency}"
        if doc["mode"] != "plot" else f"plot-n{args.hosts}-l{args.latency_ms}")
    path = os.path.join(args.results_dir, name + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"bench: results written to {path}")


def reference(rows):
    for name in ("psfleet", "psfleet-runner", "psfleet-engine"):
        for r in rows:
            if r["peer"] == name and not r.get("skipped") and r["hosts_per_s"]:
                return r
    return None


def render_table(doc, only_concurrency=None):
    rows = [r for r in doc["results"]
            if only_concurrency is None or r.get("concurrency") == only_concurrency]
    ref = reference(rows)
    o = doc["options"]
    c = only_concurrency or o["concurrency"]
    title = (f"{doc['mode'].upper()}: N={o['hosts']} L={o['latency_ms']} ms C={c}, "
             f"script {o['script']!r}, NTLM, "
             + ("TLS (fresh handshake per host)" if o["https"] else "message encryption over HTTP"))
    head = ["client", "hosts", "ok", "wall s", "hosts/s", "CPU s", "CPU ms/host",
            "peak RSS MB", "RT/host", "bound s", "wall/bound", "psfleet x", "sim CPU s"]
    table = [head]
    for r in rows:
        if r.get("skipped"):
            table.append([r["peer"], "skipped: " + r["skipped"]] + [""] * (len(head) - 2))
            continue
        if r.get("repeat_of_previous_row"):
            r = dict(r, peer=r["peer"] + " (rerun)")
        speedup = (ref["hosts_per_s"] / r["hosts_per_s"]) if ref and r["hosts_per_s"] else None
        table.append([
            r["peer"], str(r["hosts"]), str(r["succeeded"]), f"{r['wall_s']:.2f}",
            f"{r['hosts_per_s']:.1f}", f"{r['cpu_s']:.2f}", f"{r['cpu_ms_per_host']:.2f}",
            f"{r['peak_rss_mb']:.1f}", f"{r['round_trips_per_host']:.2f}",
            f"{r['bound_s']:.2f}",
            f"{r['wall_over_bound']:.2f}" if r["wall_over_bound"] else "-",
            f"{speedup:.1f}" if speedup else "-", f"{r.get('sim_cpu_s', 0.0):.2f}"])
    measured = [row for row in table if not row[1].startswith("skipped")]
    widths = [max(len(row[i]) for row in measured) for i in range(len(head))]
    lines = [title]
    for row in table:
        if row[1].startswith("skipped"):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)))
    return "\n".join(lines)


def render_markdown(doc, only_concurrency=None):
    """The same table as Markdown, for BENCHMARKS.md."""
    text = render_table(doc, only_concurrency).splitlines()
    out = []
    for i, line in enumerate(text[1:]):
        cells = re.split(r"\s{2,}", line.strip())
        out.append("| " + " | ".join(cells) + " |")
        if i == 0:
            out.append("|" + "---|" * len(cells))
    return text[0] + "\n\n" + "\n".join(out)


COLOURS = {"psfleet": "#d62728", "psfleet-runner": "#a50f15", "psfleet-engine": "#e6550d", "psfleet-engine-probe": "#fd8d3c", "pypsrp": "#1f77b4",
           "pywinrm": "#2ca02c", "ansible": "#9467bd"}


def render_svg(doc):
    """Hosts per second against concurrency, log-log, one line per client: hand-written
    SVG (no plotting library)."""
    levels = doc.get("concurrency_levels") or sorted({r["concurrency"] for r in doc["results"]})
    series = {}
    for r in doc["results"]:
        if r.get("skipped") or not r.get("hosts_per_s"):
            continue
        series.setdefault(r["peer"], []).append((r["concurrency"], r["hosts_per_s"]))
    w, h, left, right, top, bottom = 720, 440, 70, 150, 40, 60
    pw, ph = w - left - right, h - top - bottom
    values = [v for pts in series.values() for _, v in pts] or [1.0]
    rt0 = next((r["round_trips_per_host"] for r in doc["results"]
                if r["peer"].startswith("psfleet") and not r.get("skipped")), None)
    if rt0 and doc["options"]["latency_ms"]:
        values += [c / (rt0 * doc["options"]["latency_ms"] / 1000.0) for c in levels]
    ymin = 10 ** math.floor(math.log10(min(values)))
    ymax = 10 ** math.ceil(math.log10(max(values)))
    if ymax <= ymin:
        ymax = ymin * 10
    xmin, xmax = math.log2(min(levels)), math.log2(max(levels))
    if xmax <= xmin:
        xmax = xmin + 1

    def x(c):
        return left + (math.log2(c) - xmin) / (xmax - xmin) * pw

    def y(v):
        return top + ph - (math.log10(v) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin)) * ph

    o = doc["options"]
    scheme = "HTTPS" if o["https"] else "HTTP + NTLM message encryption"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="22" font-size="14" font-weight="bold">Hosts per second against '
             f'concurrency (N={o["hosts"]}, L={o["latency_ms"]} ms, {scheme})</text>']
    decade = ymin
    while decade <= ymax * 1.0001:
        for k in range(1, 10):
            v = decade * k
            if v > ymax * 1.0001:
                break
            yy = y(v)
            stroke = "#cccccc" if k == 1 else "#eeeeee"
            parts.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="{stroke}"/>')
            if k == 1:
                parts.append(f'<text x="{left - 8}" y="{yy + 4:.1f}" text-anchor="end">{v:g}</text>')
        decade *= 10
    for c in levels:
        xx = x(c)
        parts.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{xx:.1f}" y="{top + ph + 18}" text-anchor="middle">{c}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333333"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 18}" text-anchor="middle">concurrency C (log scale)</text>')
    parts.append(f'<text transform="translate(18 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'hosts per second (log scale)</text>')
    # The latency bound as a rate: C / (RT/host x L), with psfleet's round trips.
    ref_rt = next((r["round_trips_per_host"] for r in doc["results"]
                   if r["peer"].startswith("psfleet") and not r.get("skipped")), None)
    legend_rows = 0
    if ref_rt and o["latency_ms"]:
        ideal = [(c, c / (ref_rt * o["latency_ms"] / 1000.0)) for c in levels]
        ideal = [(c, v) for c, v in ideal if ymin <= v <= ymax]
        if ideal:
            path = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in ideal)
            parts.append(f'<polyline points="{path}" fill="none" stroke="#777777" '
                         f'stroke-width="1.5" stroke-dasharray="6 4"/>')
            ly = top + 16
            parts.append(f'<line x1="{left + pw + 14}" y1="{ly - 4}" x2="{left + pw + 34}" '
                         f'y2="{ly - 4}" stroke="#777777" stroke-dasharray="6 4"/>')
            parts.append(f'<text x="{left + pw + 40}" y="{ly}">latency bound</text>')
            parts.append(f'<text x="{left + pw + 40}" y="{ly + 14}" font-size="10">'
                         f'C / ({ref_rt:g} RT x {o["latency_ms"]} ms)</text>')
            legend_rows = 2
    for i, (peer, pts) in enumerate(sorted(series.items(), key=lambda kv: ALL_PEERS.index(kv[0]))):
        i += legend_rows
        pts.sort()
        colour = COLOURS.get(peer, "#333333")
        path = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for c, v in pts:
            parts.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">'
                         f'<title>{peer} C={c}: {v:.1f} hosts/s</title></circle>')
        ly = top + 16 + i * 20
        parts.append(f'<line x1="{left + pw + 14}" y1="{ly - 4}" x2="{left + pw + 34}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 40}" y="{ly}">{peer}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
