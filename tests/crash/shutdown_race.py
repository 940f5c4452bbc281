#!/usr/bin/env python3
"""Checks the power-loss method itself, without psfleet (docs/reliability.md).

A writer appends numbered lines to a file on a loop-mounted ext4 image, calls fdatasync
(or fsync) after each, and prints the number only once the sync returned. At a random
moment the file system is shut down with EXT4_IOC_SHUTDOWN + EXT4_GOING_FLAGS_NOLOGFLUSH,
the writer killed, the image remounted, and the last line on disk compared with the last
number printed.

  naive   the ioctl is issued while the writer runs: a sync racing the shutdown can return
          success for a transaction the aborted journal never wrote (seen on Linux 6.18:
          12 of 100 cycles lost the last acknowledged line);
  stop    the writer is stopped (SIGSTOP) and its output read before the ioctl, as
          tests/crash/harness.py does: a stopped process has no sync in flight, so every
          number it printed is on disk (0 of 100 cycles lost one).

    sudo python3 tests/crash/shutdown_race.py --cycles 100 --cut naive
    sudo python3 tests/crash/shutdown_race.py --cycles 100 --cut stop --sync fsync

Root, mkfs.ext4 and a loop device; a 64 MiB sparse image in a temporary directory.
"""

import argparse
import fcntl
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

EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2

WRITER = r"""
import os, sys
sync = getattr(os, sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.fsync(fd)
directory = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY)
os.fsync(directory)
print("ready", flush=True)
n = 0
while True:
    n += 1
    try:
        os.write(fd, b"%08d %s\n" % (n, b"x" * 300))
        sync(fd)
    except OSError:
        break
    print(n, flush=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--cut", choices=["naive", "stop"], default="naive")
    parser.add_argument("--sync", choices=["fdatasync", "fsync"], default="fdatasync")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="psfleet-shutdown-race-")
    image, mount = os.path.join(work, "img"), os.path.join(work, "mnt")
    os.makedirs(mount)
    rng = random.Random(args.seed)
    losses = 0
    try:
        for cycle in range(args.cycles):
            printed, on_disk = one_cycle(image, mount, args, rng)
            if on_disk < printed:
                losses += 1
                print(f"cycle {cycle}: printed {printed}, on disk {on_disk}", flush=True)
    finally:
        subprocess.run(["umount", mount], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"shutdown race ({args.cut} cut, {args.sync}): {args.cycles} cycles, {losses} lost "
          f"an acknowledged line")
    sys.exit(0 if args.cut == "naive" or losses == 0 else 1)


def one_cycle(image, mount, args, rng):
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True)
    path = os.path.join(mount, "journal")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, args.sync],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert writer.stdout.readline().strip() == "ready"
    last = [0]

    def read():
        for line in writer.stdout:
            last[0] = int(line)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(rng.uniform(0.05, 0.5))
    if args.cut == "stop":
        writer.send_signal(signal.SIGSTOP)
        while stat_state(writer.pid) not in ("T", "t"):
            time.sleep(0.001)
        time.sleep(0.1)
        printed = last[0]
    fd = os.open(mount, os.O_RDONLY)
    fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    os.close(fd)
    if args.cut == "stop":
        writer.send_signal(signal.SIGCONT)
    time.sleep(rng.uniform(0.0, 0.02))
    writer.kill()
    writer.wait()
    reader.join()
    if args.cut == "naive":
        printed = last[0]
    subprocess.run(["umount", mount], check=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True)
    on_disk = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                on_disk = int(line[:8])
            except ValueError:
                break
    subprocess.run(["umount", mount], check=True)
    return printed, on_disk


def stat_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0]


if __name__ == "__main__":
    main()
