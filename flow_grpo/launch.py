"""Running the training scripts from other scripts (the demos, comparisons): as subprocesses, the way a user
runs them, never by importing one script from another; and finding a launcher's processes again (the fault
drill and its tests signal one rank, or a whole node)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, args: list[str], processes: int = 1, threads: int = 0, stdout=None) -> int:
    """Run ``scripts/<script>`` with ``args``; returns its exit code.

    One process: ``python scripts/<script>``. Several: ``accelerate launch --multi_gpu`` (without a GPU the
    trainer runs its processes on the CPU with gloo) on a free loopback port. ``threads``: torch threads per
    process (OMP_NUM_THREADS), 0 to leave the default. ``stdout``: a file for its output and errors (default:
    this process's).
    """
    path = os.path.join(REPO, "scripts", script)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if processes <= 1:
        return subprocess.run([sys.executable, path, *args], env=env, stdout=stdout, stderr=stdout).returncode
    with socket.socket() as probe:  # a free loopback port for the processes' rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        path, *args,
    ]
    return subprocess.run(command, env=env, stdout=stdout, stderr=stdout).returncode


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc (Linux)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    return parents


def worker_processes(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of a launcher's worker processes (its children with a RANK variable), from /proc."""
    found = {}
    for pid, parent in _parents().items():
        if parent != launcher_pid:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if b"RANK" in env:
            found[int(env[b"RANK"])] = pid
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (torchrun starts its workers in sessions of their own, so a
    signal to the launcher's process group does not reach them)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
