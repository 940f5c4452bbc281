#!/usr/bin/env python3
"""Crash-safety cycles for psfleet's state directory (issue 8 item 3, docs/reliability.md).

Each cycle starts a fresh simulated fleet (`psfleet sim`), starts `psfleet run -o json` on it
with a fresh state directory, and cuts it off at a random moment:

  kill       SIGKILL of psfleet (the page cache survives: tests the write protocol);
  powerloss  the state directory is a loop-mounted ext4 image. The cut: psfleet is
             stopped (SIGSTOP), what it printed is read, EXT4_IOC_SHUTDOWN with
             EXT4_GOING_FLAGS_NOLOGFLUSH drops everything not yet synced (as a power cut
             would), psfleet is let run on into the dead file system for up to 50 ms
             (SIGCONT: it meets EIO) and then SIGKILLed, and the image remounted (journal
             replay).

A result is *acknowledged* when psfleet printed its JSON line on standard output, which it
does only after the journal's fdatasync. Under power loss only lines printed before the cut
count: an fsync racing the shutdown ioctl can return success for data the aborted ext4
journal never wrote (reproduced without psfleet, docs/reliability.md), which a real power
cut cannot do (the process dies with the machine). After each cut the cycle checks:

  1. every acknowledged host has a `done` line in the run journal (else: a lost result);
  2. psfleet starts on the state directory: `psfleet cleanup --dry-run` opens the state
     store (rebuilding the sled cache when it is damaged or behind the journals, which it
     says on standard error) and `psfleet runs` reads every journal (else: a reopen
     failure);
  3. `psfleet run --resume last --rerun-interrupted` finishes the run: every host of the
     inventory ends `done` in the journal and the run ends `completed`;
  4. no finished host ran again: every host with a `done` line after the cut ran the script
     exactly once, before and after the resume (the simulator's per-host
     `script_executions`). Hosts in flight at the cut are run again by
     --rerun-interrupted, so one that had already run its script runs twice: counted as
     "interrupted hosts rerun", not a failure; but each of them runs exactly once more
     (after = before + 1), and a host with no `started` line at the cut had not run the
     script (before = 0) and runs it exactly once (after = 1);
  5. hosts in flight at the cut are reported Interrupted before the resume: `psfleet report
     last --format json` gives each of them a record in bucket `Interrupted` and no other
     host one, and `psfleet runs -o json` counts them as `interrupted` (the journal replay
     psfleet itself does);
  6. shells leaked by the cut are reaped: the simulator's `shells_open` after the resume
     (final stats.json) is 0, whatever the cut left open (counted as "shells leaked").

A cycle passes when all six hold. The summary line is what docs/reliability.md records.
Standard library only; run by scripts/crash-kill and scripts/crash-powerloss.
"""

import argparse
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

# _IOR('X', 125, __u32) and the flag that skips flushing the ext4 journal (linux/ext4.h).
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2

SCRIPT = "$x = Get-Date; 'done'"
REBUILT = "rebuilt it"
# The simulator refreshes stats.json every second (docs/simulator.md); wait a bit more.
STATS_REFRESH = 1.3
MOVED_ASIDE = "was unusable"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["kill", "powerloss"])
    parser.add_argument("--psfleet", required=True, help="the psfleet binary")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--forks", type=int, default=64)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--first-address", default="127.61.0.1")
    parser.add_argument("--work-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--keep-failures", action="store_true",
                        help="keep the state directory of failed cycles")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a run or resume may take before the cycle fails")
    args = parser.parse_args()
    if args.mode == "powerloss" and os.geteuid() != 0:
        sys.exit("crash-powerloss: needs root (losetup, mount, the ext4 shutdown ioctl)")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    print(f"crash-{args.mode}: seed {seed}, {args.cycles} cycles of {args.hosts} hosts "
          f"(forks {args.forks})", flush=True)
    work = args.work_dir or tempfile.mkdtemp(prefix=f"psfleet-crash-{args.mode}-")
    os.makedirs(work, exist_ok=True)
    harness = Harness(args, work, rng)
    try:
        harness.calibrate()
        for cycle in range(args.cycles):
            harness.cycle(cycle)
    except KeyboardInterrupt:
        print("crash: interrupted", flush=True)
    finally:
        harness.cleanup()
        if not args.work_dir and not harness.kept:
            shutil.rmtree(work, ignore_errors=True)
    totals = harness.totals
    print(f"crash-{args.mode} summary: cycles run {totals['run']}, cycles passed "
          f"{totals['passed']}, acknowledged results lost {totals['lost']}, reopen failures "
          f"{totals['reopen_failures']}, cache rebuilds {totals['rebuilds']} "
          f"({totals['moved_aside']} damaged caches moved aside); acknowledged {totals['acked']}, "
          f"interrupted hosts {totals['interrupted']} ({totals['interrupted_rerun']} had run and "
          f"ran again; {totals['interrupted_reported']} reported Interrupted before the resume, "
          f"report mismatches {totals['report_failures']}), finished hosts rerun "
          f"{totals['reruns']}, hosts run without a started line {totals['unstarted_ran']}, "
          f"resume failures {totals['resume_failures']}; shells leaked by the cuts "
          f"{totals['leaked']}, left open after the resumes {totals['left_open']}", flush=True)
    sys.exit(0 if totals["run"] > 0 and totals["passed"] == totals["run"] else 1)


class Harness:
    def __init__(self, args, work, rng):
        self.args = args
        self.work = work
        self.rng = rng
        self.kept = False
        self.window = 1.0
        self.mounted = None
        self.totals = dict(run=0, passed=0, lost=0, reopen_failures=0, rebuilds=0,
                           moved_aside=0, acked=0, interrupted=0, reruns=0,
                           interrupted_rerun=0, resume_failures=0, interrupted_reported=0,
                           report_failures=0, leaked=0, left_open=0, unstarted_ran=0)

    # ----- one cycle -------------------------------------------------------------------

    def calibrate(self):
        """One uncut run: its duration is the window the cuts are drawn from."""
        sim = Sim(self.args, os.path.join(self.work, "calibrate-sim"))
        state = self.fresh_state("calibrate")
        try:
            started = time.monotonic()
            run = self.start_run(sim, state, resume=False)
            code = run.wait(self.args.timeout)
            self.window = max(0.2, time.monotonic() - started)
            if code not in (0, 2):
                sys.exit(f"crash: the calibration run exited {code}:\n{run.stderr_text()}")
            print(f"crash: an uncut run takes {self.window:.2f} s; cuts fall in [0, 1.2 x that]",
                  flush=True)
        finally:
            sim.stop()
            self.release_state(state, keep=False)

    def cycle(self, n):
        self.totals["run"] += 1
        sim = Sim(self.args, os.path.join(self.work, f"sim-{n}"))
        state = self.fresh_state(n)
        problems = []
        state_journals_seen = []
        try:
            cut_at = self.rng.uniform(0.0, 1.2 * self.window)
            run = self.start_run(sim, state, resume=False)
            time.sleep(cut_at)
            if self.args.mode == "powerloss":
                acked = run.freeze()
                power_cut(self.mounted)
                # Let it run on into the dead file system (EIO on every write); nothing it
                # prints now counts, as nothing runs after a real power cut.
                run.resume_after_cut()
                time.sleep(self.rng.uniform(0.0, 0.05))
                run.kill()
            else:
                run.kill()
                acked = run.acknowledged()
            self.totals["acked"] += len(acked)
            if self.args.mode == "powerloss":
                self.remount()

            done, in_flight, ended, runs = read_journals(state)
            lost = acked - done
            if lost:
                problems.append(f"{len(lost)} acknowledged results missing from the journal: "
                                f"{sorted(lost)[:5]}")
                self.totals["lost"] += len(lost)

            reopened = self.psfleet(state, ["cleanup", "--dry-run", "-i", sim.inventory,
                                            "-o", "json"])
            listed = self.psfleet(state, ["runs", "-o", "json"])
            if reopened.returncode != 0 or listed.returncode != 0:
                problems.append(f"psfleet did not start on the state directory (cleanup "
                                f"{reopened.returncode}, runs {listed.returncode}): "
                                f"{(reopened.stderr + listed.stderr).strip()[-400:]}")
                self.totals["reopen_failures"] += 1
            if REBUILT in reopened.stderr:
                self.totals["rebuilds"] += 1
            if MOVED_ASIDE in reopened.stderr:
                self.totals["moved_aside"] += 1

            finished = done
            interrupted = in_flight
            self.totals["interrupted"] += len(interrupted)
            if runs > 0:
                problems += self.check_interrupted_reported(state, done, interrupted, listed)
            started_at_cut = done | interrupted
            state_journals_seen = glob.glob(os.path.join(state, "runs", "*", "journal.jsonl"))
            state_journals_seen = [(p, open(p, "rb").read()) for p in state_journals_seen]
            before, leaked = sim.executions()
            self.totals["leaked"] += leaked or 0
            resume = self.start_run(sim, state, resume=runs > 0)
            code = resume.wait(self.args.timeout)
            if code not in (0, 2):
                problems.append(f"the resume exited {code}: {resume.stderr_text()[-400:]}")
                self.totals["resume_failures"] += 1
            done, in_flight, ended, runs = read_journals(state)
            missing = set(sim.hosts) - done
            if missing:
                problems.append(f"{len(missing)} hosts not done after the resume: "
                                f"{sorted(missing)[:5]}")
            if ended != "completed":
                problems.append(f"the run ended {ended!r}, not completed")
            lost = acked - done
            if lost:
                problems.append(f"{len(lost)} acknowledged results gone after the resume")
                self.totals["lost"] += len(lost)
        finally:
            after, left_open = sim.stop()
        if left_open != 0:
            unrecorded = sorted(sim.open_hosts - journal_shells(state_journals_seen))
            problems.append(f"{left_open} shells open on the simulator after the resume "
                            f"({leaked} open after the cut), on {len(sim.open_hosts)} hosts, "
                            f"{len(unrecorded)} of them with no shell_opened line in the journal "
                            f"(a Create in flight at the cut): {unrecorded[:5]}")
            self.totals["left_open"] += left_open or 0
        rerun = {h for h in finished if before.get(h, 0) != 1 or after.get(h, 0) != 1}
        if rerun:
            problems.append(f"{len(rerun)} finished hosts did not run exactly once: "
                            + ", ".join(f"{h} ({before.get(h, 0)} then {after.get(h, 0)})"
                                        for h in sorted(rerun)[:5]))
            self.totals["reruns"] += len(rerun)
        never = {h for h in sim.hosts if after.get(h, 0) == 0}
        if never:
            problems.append(f"{len(never)} hosts never ran the script")
        twice = {h for h in interrupted if after.get(h, 0) > 1}
        self.totals["interrupted_rerun"] += len(twice)
        not_once_more = {h for h in interrupted if after.get(h, 0) != before.get(h, 0) + 1}
        if not_once_more:
            problems.append(f"{len(not_once_more)} interrupted hosts did not run exactly once "
                            f"more on the resume: " + ", ".join(
                                f"{h} ({before.get(h, 0)} then {after.get(h, 0)})"
                                for h in sorted(not_once_more)[:5]))
        unstarted = set(sim.hosts) - started_at_cut
        ran_early = {h for h in unstarted if before.get(h, 0) != 0}
        if ran_early:
            problems.append(f"{len(ran_early)} hosts ran the script with no started line in "
                            f"the journal: {sorted(ran_early)[:5]}")
            self.totals["unstarted_ran"] += len(ran_early)
        not_once = {h for h in unstarted if after.get(h, 0) != 1}
        if not_once:
            problems.append(f"{len(not_once)} hosts not started at the cut did not run exactly "
                            f"once: " + ", ".join(f"{h} ({after.get(h, 0)})"
                                                   for h in sorted(not_once)[:5]))
        if problems:
            print(f"cycle {n}: FAILED (cut at {cut_at:.3f} s, {len(acked)} acknowledged): "
                  + "; ".join(problems), flush=True)
        else:
            self.totals["passed"] += 1
            print(f"cycle {n}: ok (cut at {cut_at:.3f} s, {len(acked)} acknowledged, "
                  f"{len(finished)} done, {len(interrupted)} interrupted and reported so, "
                  f"{len(twice)} of them had run and ran again; {leaked} shells leaked, "
                  f"0 left open)", flush=True)
        self.release_state(state, keep=bool(problems) and self.args.keep_failures)

    def check_interrupted_reported(self, state, done, interrupted, listed):
        """Before the resume: the report of the cut run gives exactly the hosts in flight at
        the cut (started, not done, in the journal) a record in bucket Interrupted, and
        `psfleet runs` counts as many."""
        problems = []
        out = os.path.join(self.work, "report")
        shutil.rmtree(out, ignore_errors=True)
        report = self.psfleet(state, ["report", "last", "--format", "json", "--out", out])
        records = {}
        try:
            with open(os.path.join(out, "hosts.jsonl")) as f:
                for line in f:
                    record = json.loads(line)
                    records[record.get("host")] = record
        except (OSError, ValueError) as e:
            self.totals["report_failures"] += 1
            return [f"no report of the cut run (exit {report.returncode}, {e}): "
                    f"{report.stderr.strip()[-300:]}"]
        finally:
            shutil.rmtree(out, ignore_errors=True)
        reported = {h for h, r in records.items() if r.get("bucket") == "Interrupted"}
        missing = interrupted - reported
        extra = reported - interrupted
        absent = (interrupted | done) - set(records)
        if missing or extra or absent:
            self.totals["report_failures"] += 1
            problems.append(f"report before the resume: {len(missing)} hosts in flight at the "
                            f"cut not reported Interrupted {sorted(missing)[:5]}, {len(extra)} "
                            f"others reported Interrupted {sorted(extra)[:5]}, {len(absent)} "
                            f"started hosts absent {sorted(absent)[:5]}")
        else:
            self.totals["interrupted_reported"] += len(reported)
        summaries = []
        for line in listed.stdout.splitlines():
            try:
                summaries.append(json.loads(line))
            except ValueError:
                pass
        counted = summaries[0].get("interrupted") if summaries else None
        if listed.returncode == 0 and counted != len(interrupted):
            problems.append(f"`psfleet runs` counts {counted} interrupted hosts, the journal "
                            f"{len(interrupted)}")
        return problems

    # ----- psfleet ---------------------------------------------------------------------

    def start_run(self, sim, state, resume):
        args = ["run", "-i", sim.inventory, "--user", sim.user, "-c", SCRIPT, "-o", "json",
                "-f", str(self.args.forks), "--no-progress"]
        if resume:
            args += ["--resume", "last", "--rerun-interrupted"]
        return Run(self.args.psfleet, state, args, sim.password,
                   os.path.join(self.work, "stderr.txt"))

    def psfleet(self, state, args):
        return subprocess.run([self.args.psfleet, "--state-dir", state] + args,
                              env=clean_env(), capture_output=True, text=True,
                              timeout=self.args.timeout)

    # ----- state directories -----------------------------------------------------------

    def fresh_state(self, name):
        if self.args.mode == "kill":
            path = os.path.join(self.work, f"state-{name}")
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            return path
        image = os.path.join(self.work, "state.img")
        mount = os.path.join(self.work, "mnt")
        os.makedirs(mount, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(self.args.image_mib * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        subprocess.run(["mount", "-o", "loop", image, mount], check=True)
        self.mounted = mount
        path = os.path.join(mount, "state")
        os.makedirs(path)
        return path

    def remount(self):
        subprocess.run(["umount", self.mounted], check=True)
        image = os.path.join(self.work, "state.img")
        subprocess.run(["mount", "-o", "loop", image, self.mounted], check=True)

    def release_state(self, state, keep):
        if keep:
            self.kept = True
            kept = os.path.join(self.work, f"failed-{len(os.listdir(self.work))}")
            shutil.copytree(state, kept, symlinks=True)
            print(f"crash: kept the failed state directory in {kept}", flush=True)
        if self.args.mode == "kill":
            shutil.rmtree(state, ignore_errors=True)
        elif self.mounted:
            subprocess.run(["umount", self.mounted], check=False)
            self.mounted = None

    def cleanup(self):
        if self.mounted:
            subprocess.run(["umount", self.mounted], check=False)
            self.mounted = None
        image = os.path.join(self.work, "state.img")
        if os.path.exists(image):
            os.remove(image)


class Run:
    """`psfleet run -o json` in the background, its acknowledged hosts read as they come."""

    def __init__(self, psfleet, state, args, password, stderr_path):
        env = clean_env()
        env["PSFLEET_PASSWORD"] = password
        self.stderr_path = stderr_path
        self.stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen([psfleet, "--state-dir", state] + args, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        self.acked = set()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill: not acknowledged
            if isinstance(record, dict) and "host" in record:
                self.acked.add(record["host"])

    def freeze(self):
        """Stops the process and returns what it acknowledged until then (every line it
        printed: a stopped process prints nothing more)."""
        try:
            self.proc.send_signal(signal.SIGSTOP)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with open(f"/proc/{self.proc.pid}/stat") as f:
                    if f.read().rsplit(")", 1)[-1].split()[0] in ("T", "t"):
                        break
            except OSError:
                break
            time.sleep(0.001)
        # The reader drains the pipe: give it time to take what is buffered.
        time.sleep(0.1)
        return self.acknowledged()

    def resume_after_cut(self):
        try:
            self.proc.send_signal(signal.SIGCONT)
        except ProcessLookupError:
            pass

    def kill(self):
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.reader.join()
        self.stderr.close()

    def wait(self, timeout):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return "timeout"
        self.reader.join()
        self.stderr.close()
        return code

    def acknowledged(self):
        return set(self.acked)

    def stderr_text(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()


class Sim:
    """A `psfleet sim` fleet of fast hosts; its final stats.json counts script runs."""

    def __init__(self, args, out):
        shutil.rmtree(out, ignore_errors=True)
        self.out = out
        self.inventory = os.path.join(out, "inventory.csv")
        self.open_hosts = set()
        self.proc = subprocess.Popen(
            [args.psfleet, "sim", "--hosts", str(args.hosts), "--profile", "bench",
             "--latency-ms", "0", "--seed", "1", "--first-address", args.first_address,
             "--out", out],
            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        accounts = os.path.join(out, "accounts.txt")
        while not (os.path.exists(self.inventory) and os.path.exists(accounts)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"crash: psfleet sim did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)
        time.sleep(0.1)
        with open(accounts) as f:
            for line in f:
                name, password, *_ = line.split()
                if name == "fleetadmin":
                    self.user, self.password = name, password
        with open(self.inventory) as f:
            next(f)
            self.hosts = [line.split(",")[0] for line in f if line.strip()]

    def executions(self):
        """Script executions per host and shells open now: stats.json is rewritten every
        second, so the one written after a pause holds everything the cut client did."""
        time.sleep(STATS_REFRESH)
        return self.read_stats()

    def stop(self):
        """Stops the fleet; returns script executions per host name and the shells open
        (final stats.json)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        stats = self.read_stats()
        shutil.rmtree(self.out, ignore_errors=True)
        return stats

    def read_stats(self):
        executions, shells_open = {}, None
        try:
            with open(os.path.join(self.out, "stats.json")) as f:
                stats = json.load(f)
            self.open_hosts = set()
            for host in stats.get("hosts", []):
                service = host.get("service") or {}
                executions[host["name"]] = service.get("totals", {}).get("script_executions", 0)
                if service.get("totals", {}).get("shells_open", 0):
                    self.open_hosts.add(host["name"])
            shells_open = (stats.get("service_totals") or {}).get("shells_open", 0)
        except (OSError, ValueError) as e:
            print(f"crash: cannot read the simulator's stats: {e}", flush=True)
        return executions, shells_open


def read_journals(state):
    """(hosts done, hosts started without done, the end reason, runs) over every run."""
    done, started, ended = set(), set(), None
    runs = glob.glob(os.path.join(state, "runs", "*", "journal.jsonl"))
    for journal in runs:
        with open(journal, "rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue  # the torn tail psfleet itself ignores
                kind = entry.get("type")
                if kind == "started":
                    started.add(entry.get("host"))
                elif kind == "done":
                    done.add((entry.get("record") or {}).get("host"))
                elif kind == "end":
                    ended = entry.get("reason")
    return done, started - done, ended, len(runs)


def journal_shells(journals):
    """Hosts with a shell_opened line in the given (path, content) journals."""
    hosts = set()
    for _, content in journals:
        for raw in content.splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("type") == "shell_opened":
                hosts.add(entry.get("host"))
    return hosts


def power_cut(mount):
    fd = os.open(mount, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def clean_env():
    """PATH only, and a home of its own, so no psfleet.toml or PSFLEET_* of the user's
    changes what runs (the password is added where a run needs it)."""
    home = os.path.join(tempfile.gettempdir(), "psfleet-crash-home")
    os.makedirs(home, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
        "XDG_STATE_HOME": os.path.join(home, "state"),
    }


if __name__ == "__main__":
    main()
