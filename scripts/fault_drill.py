"""The fault drill: every fault a long run meets, done to the tiny SD3 on 1 and 2 CPU processes, with a table
of what the run did, how long it took to stop, and whether it resumed bit-identically (docs/operations.md).

    python scripts/fault_drill.py                 # every row, about 12 minutes on 2 cores
    python scripts/fault_drill.py --only sigterm hung_process

The faults are real where a user meets them: signals sent to the process or the launcher (SIGTERM, SIGUSR1,
SIGSTOP for a process that hangs, SIGKILL for one that dies), a real reward server stopped mid-run, a file
size limit (RLIMIT_FSIZE) for a full disk. Two are injected, as nothing outside the trainer can cause them
on demand: a reward call that hangs and a loss that is NaN (``--inject`` below, applied by this script when
it runs the trainer for itself). A row's "resumed" compares the resumed run's final checkpoint, tensor by
tensor, with a run of the same settings that was never stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from flow_grpo.launch import descendants, worker_processes  # noqa: E402

TINY = os.path.join(REPO, "config", "tiny.py")
EPOCHS = 4
BASE_ARGS = ["--config", f"{TINY}:tiny", "--config.progress=false", f"--config.num_epochs={EPOCHS}", "--config.eval_freq=100",
             "--config.save_freq=1"]
CHECKED_FILES = ("lora/pytorch_lora_weights.safetensors", "state/trainable.safetensors", "state/ema.safetensors",
                 "state/optimizer.safetensors")


# ---- the trainer, run by this script with an injected fault (what runs inside each process) ----

def run_trainer_with_injection(inject: str, train_args: list[str]) -> int:
    """``inject``: ``reward_hang@N`` (the N-th reward call sleeps an hour), ``nan_loss@N`` (every loss from
    the N-th micro-step on is NaN) or ``sigterm_in_update@N`` (SIGTERM to itself at the end of the N-th
    epoch's update: a signal that lands after the rollouts), then scripts/train.py's main."""
    kind, _, at = inject.partition("@")
    at = int(at)
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import train

    if kind == "sigterm_in_update":
        real_update, calls = train.update, {"n": 0}

        def update_then_signal(*args, **kwargs):
            result = real_update(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == at:
                print(f"drill: SIGTERM sent at {time.time():.3f}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
            return result

        train.update = update_then_signal
    elif kind == "reward_hang":
        from flow_grpo.rewards.registry import MultiReward

        real_call, calls = MultiReward.__call__, {"n": 0}

        def hanging_call(self, images, prompts, metadata):
            calls["n"] += 1
            if calls["n"] == at:
                time.sleep(3600)
            return real_call(self, images, prompts, metadata)

        MultiReward.__call__ = hanging_call
    elif kind == "nan_loss":
        from flow_grpo.objectives.grpo import GRPO

        real_loss, calls = GRPO.loss, {"n": 0}

        def nan_loss(self, policy, minibatch, j, prepared=None):
            value, stats = real_loss(self, policy, minibatch, j, prepared)
            calls["n"] += 1
            return (value * float("nan") if calls["n"] >= at else value), stats

        GRPO.loss = nan_loss
    else:
        raise SystemExit(f"unknown injection {inject!r}")
    return train.main(train_args)


# ---- launching and watching runs ----

@dataclasses.dataclass
class Row:
    fault: str
    processes: int
    did: str  # what the run did
    seconds: float  # from the fault to the run's end
    bound: str  # the bound it had to stop within
    resumed: str  # "bit-identical", "differs", or why not checked
    ok: bool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(logdir: str, processes: int, extra: list[str] = (), inject: str = "", env: dict | None = None,
           preexec=None, machine: tuple[int, int, int] | None = None) -> subprocess.Popen:
    """The trainer on ``processes`` processes; ``machine = (rank, machines, port)``: this launcher is one of
    ``machines`` nodes on loopback, one process each, meeting at ``port``."""
    if inject:
        script = [os.path.abspath(__file__), "--inject", inject, "--"]
    else:
        script = [os.path.join(REPO, "scripts", "train.py")]
    args = [*BASE_ARGS, f"--config.logdir={logdir}", *extra]
    if machine is not None:
        rank, machines, port = machine
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(machines),
                   "--num_machines", str(machines), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *script, *args]
    elif processes == 1:
        command = [sys.executable, *script, *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), *script, *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    log = open(os.path.join(logdir, f"log-{time.time_ns()}.txt"), "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env, preexec_fn=preexec,
                               start_new_session=True)
    process.log_path = log.name
    return process


def output(process) -> str:
    with open(process.log_path) as handle:
        return handle.read()


def epochs_done(logdir: str) -> int:
    path = os.path.join(logdir, "tiny", "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as handle:
        return sum(1 for line in handle if '"reward_mean"' in line)


def wait_for_epochs(process, logdir: str, count: int, limit_s: float = 300) -> None:
    deadline = time.time() + limit_s
    while epochs_done(logdir) < count:
        if process.poll() is not None:
            raise RuntimeError(f"the run ended before epoch {count}:\n{output(process)[-3000:]}")
        if time.time() > deadline:
            raise RuntimeError(f"no epoch {count} within {limit_s} s")
        time.sleep(0.1)


def wait(process, limit_s: float) -> tuple[int | None, float]:
    """(exit status or None if still running after limit_s, seconds waited)."""
    started = time.time()
    try:
        process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        return None, time.time() - started
    return process.returncode, time.time() - started


def kill_group(process) -> None:
    """SIGKILL a launcher and everything below it: what losing its machine does."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def same_checkpoints(a_logdir: str, b_logdir: str) -> str:
    import torch
    from safetensors.torch import load_file

    from flow_grpo.checkpoint import resolve_resume

    a = resolve_resume("latest", os.path.join(a_logdir, "tiny", "checkpoints"))
    b = resolve_resume("latest", os.path.join(b_logdir, "tiny", "checkpoints"))
    if os.path.basename(a) != os.path.basename(b):
        return f"differs ({os.path.basename(a)} vs {os.path.basename(b)})"
    for file in CHECKED_FILES:
        x, y = load_file(os.path.join(a, file)), load_file(os.path.join(b, file))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return f"differs ({file})"
    return "bit-identical"


class Drill:
    def __init__(self, root: str):
        self.root = root
        self.straight: dict[tuple, str] = {}

    def folder(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        return path

    def straight_run(self, processes: int, extra: tuple = ()) -> str:
        """A run of these settings never stopped (made once)."""
        key = (processes, extra)
        if key not in self.straight:
            logdir = self.folder(f"straight-{processes}p-{len(self.straight)}")
            process = launch(logdir, processes, list(extra))
            code, _ = wait(process, 600)
            if code != 0:
                raise RuntimeError(f"the straight run failed:\n{output(process)[-3000:]}")
            self.straight[key] = logdir
        return self.straight[key]

    def resume(self, logdir: str, processes: int, extra: tuple = (), same_as: tuple = ()) -> str:
        """Resume ``logdir`` to the end and compare it with the straight run of settings ``same_as``."""
        process = launch(logdir, processes, [*extra, "--config.resume_from=latest"])
        code, _ = wait(process, 600)
        if code != 0:
            return f"resume failed (exit {code})"
        return same_checkpoints(self.straight_run(processes, same_as), logdir)

    # ---- the rows ----

    def stop_signal(self, name: str, processes: int, in_update: bool = False) -> Row:
        """The signal sent from outside once epoch 1 is logged (it lands in epoch 2's rollouts), or, ``in_update``,
        sent by the trainer to itself after epoch 2's update (injected: the timing cannot be hit from outside)."""
        sig = getattr(signal, name)
        logdir = self.folder(f"{name.lower()}-{processes}p" + ("-update" if in_update else ""))
        env = {"TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"} if processes > 1 else {}
        process = launch(logdir, processes, env=env, inject="sigterm_in_update@2" if in_update else "")
        started = time.time()
        if not in_update:
            wait_for_epochs(process, logdir, 1)
            started = time.time()
            process.send_signal(sig)  # to the trainer, or to the launcher, which forwards it to every worker
        code, _ = wait(process, 120)
        ended = time.time()
        text = output(process)
        if in_update:  # the signal's time, as the trainer printed it
            started = float(next((line.split()[-1] for line in text.splitlines() if line.startswith("drill: SIGTERM sent at")), ended))
        seconds = ended - started
        how = "abandoned" if "(abandoned)" in text else "completed" if "(completed)" in text else "?"
        marker = os.path.join(logdir, "tiny", "preempted.json")
        # one process: the trainer's own status, 75; under accelerate launch the launcher's is 1, and the run
        # folder's preempted.json says it was a preemption
        stopped_right = os.path.isfile(marker) and (code == 75 or (processes > 1 and code == 1))
        did = f"exit {code}: epoch in flight {how}, checkpoint written" + (", preempted.json" if os.path.isfile(marker) else "")
        resumed = self.resume(logdir, processes) if stopped_right else "not resumed"
        stopped_right = stopped_right and not os.path.isfile(marker)  # the resumed run removed it
        fault = f"{name} (preemption)" + (" after the update (injected)" if in_update else "")
        return Row(fault, processes, did, seconds, "one epoch + checkpoint", resumed,
                   stopped_right and resumed == "bit-identical")

    def hung_process(self, timeout_s: int = 20) -> Row:
        logdir = self.folder("hung-2p")
        process = launch(logdir, 2, [f"--config.dist_timeout_s={timeout_s}"])
        wait_for_epochs(process, logdir, 2)  # epoch 1's checkpoint is complete by then
        ranks = worker_processes(process.pid)
        os.kill(ranks[1], signal.SIGSTOP)  # rank 1 hangs inside an epoch
        code, seconds = wait(process, timeout_s + 120)
        kill_group(process)
        text = output(process)
        named = re.search(r"Ranks? 1 failed to pass monitoredBarrier", text) is not None  # gloo: "Rank 1" or "Ranks 1"
        did = f"exit {code}: rank 0 reports the timeout" + ("; monitored barrier names rank 1" if named else "; rank not named")
        resumed = self.resume(logdir, 2, (f"--config.dist_timeout_s={timeout_s}",))
        bound = timeout_s + 10 + 30  # the timeout, the monitored barrier, the launcher's wait before SIGKILL
        return Row("a process hangs (SIGSTOP rank 1)", 2, did, seconds, f"about {bound} s: dist_timeout_s {timeout_s} + 10 s barrier + 30 s launcher",
                   resumed, code not in (0, None) and named and seconds < bound + 10 and resumed == "bit-identical")

    def lost_process(self) -> Row:
        logdir = self.folder("lost-2p")
        process = launch(logdir, 2)
        wait_for_epochs(process, logdir, 2)  # epoch 1's checkpoint is complete by then
        os.kill(worker_processes(process.pid)[1], signal.SIGKILL)
        code, seconds = wait(process, 120)
        kill_group(process)
        resumed = self.resume(logdir, 2)
        return Row("a process dies (SIGKILL rank 1)", 2, f"exit {code}: the launcher ends the other process", seconds,
                   "the launcher's own (seconds)", resumed, code not in (0, None) and seconds < 60 and resumed == "bit-identical")

    def lost_node(self, timeout_s: int = 20) -> Row:
        """Two nodes on loopback (two launchers, one process each); node 1 is killed whole, launcher and all."""
        logdir = self.folder("lost-node-2n")
        port = free_port()
        extra = [f"--config.dist_timeout_s={timeout_s}"]
        nodes = [launch(logdir, 2, extra, machine=(rank, 2, port)) for rank in (0, 1)]
        wait_for_epochs(nodes[0], logdir, 2)  # epoch 1's checkpoint is complete by then
        kill_group(nodes[1])  # the node is gone: its launcher and its process, without a word
        code, seconds = wait(nodes[0], timeout_s + 120)
        kill_group(nodes[0])
        text = output(nodes[0])
        named = re.search(r"Ranks? 1 failed to pass monitoredBarrier", text) is not None  # not when a connection closed
        how = "rank 0 reports the peer gone" if "a peer closed its connection" in text else "the launcher ends the run"
        resumed = self.resume(logdir, 2, tuple(extra))
        bound = timeout_s + 10 + 30
        return Row("a node is lost (SIGKILL node 1 of 2)", 2, f"exit {code}: {how}" + ("; rank 1 named" if named else ""), seconds,
                   f"about {bound} s: dist_timeout_s {timeout_s} + 10 s barrier + 30 s launcher", resumed,
                   code not in (0, None) and seconds < bound + 10 and resumed == "bit-identical")

    def hung_reward(self, processes: int, deadline_s: int = 5) -> Row:
        logdir = self.folder(f"hung-reward-{processes}p")
        # call 1: the base model's evaluation, then 2 per epoch: call 6 is epoch 3's first batch
        process = launch(logdir, processes, [f"--config.reward_deadline_s={deadline_s}"], inject="reward_hang@6")
        wait_for_epochs(process, logdir, 2)
        started = time.time()
        code, _ = wait(process, deadline_s + 120)
        seconds = time.time() - started
        kill_group(process)
        text = output(process)
        named = "gave no answer for batch 1 of 2 of epoch 3 within config.reward_deadline_s" in text
        resumed = self.resume(logdir, processes, (f"--config.reward_deadline_s={deadline_s}",))
        return Row("a reward call hangs", processes, f"exit {code}: the reward named, epoch 2 checkpointed" if named else f"exit {code}",
                   seconds, f"reward_deadline_s {deadline_s} (from epoch 2's end)", resumed,
                   code == 1 and named and resumed == "bit-identical")

    def reward_server_down(self) -> Row:
        from flow_grpo.reward_server import RewardServer

        logdir = self.folder("server-down-1p")
        server = RewardServer(["brightness"]).start()
        url = server.url
        options = ["--config.reward_options={'brightness': {'server_url': '%s', 'deadline': 5}}" % url]
        process = launch(logdir, 1, options)
        wait_for_epochs(process, logdir, 1)
        server.stop()
        started = time.time()
        code, _ = wait(process, 120)
        seconds = time.time() - started
        kill_group(process)
        text = output(process)
        named = f"reward server {url}" in text
        # resumed against a run through a server that stayed up (the PNG transport rounds images to 8 bits)
        server = RewardServer(["brightness"], port=int(url.rsplit(":", 1)[1])).start()
        try:
            resumed = self.resume(logdir, 1, tuple(options), same_as=tuple(options))
        finally:
            server.stop()
        return Row("the reward server goes down", 1, f"exit {code}: the server named, last epoch checkpointed" if named else f"exit {code}",
                   seconds, "the client's deadline (5 s)", resumed, code == 1 and named and resumed == "bit-identical")

    def nan_loss(self) -> Row:
        logdir = self.folder("nan-loss-1p")
        # 3 micro-steps per optimizer step, 2 steps per epoch: from micro-step 7 on (epoch 2) every loss is NaN
        process = launch(logdir, 1, ["--config.train.max_nonfinite_steps=3"], inject="nan_loss@7")
        code, seconds = wait(process, 300)
        text = output(process)
        named = "error: epoch 3: 3 optimizer steps in a row had a non-finite gradient norm" in text
        with open(os.path.join(logdir, "tiny", "metrics.jsonl")) as handle:
            skipped = [json.loads(line).get("nonfinite_steps") for line in handle if '"reward_mean"' in line]
        import torch
        from safetensors.torch import load_file

        from flow_grpo.checkpoint import resolve_resume

        last = resolve_resume("latest", os.path.join(logdir, "tiny", "checkpoints"))
        finite = all(torch.isfinite(v).all() for v in load_file(os.path.join(last, "state", "trainable.safetensors")).values())
        did = f"exit {code}: skipped per epoch {skipped}, stopped naming epoch 3; {os.path.basename(last)} finite: {finite}"
        return Row("NaN loss from epoch 2 on", 1, did, seconds, "3 skipped steps in a row (seconds: the whole run)",
                   "n/a (the weights never changed)",
                   code == 1 and named and finite and skipped == [0, 2])

    def full_disk(self) -> Row:
        import resource

        logdir = self.folder("full-disk-1p")
        process = launch(logdir, 1, ["--config.num_epochs=2"])
        if wait(process, 300)[0] != 0:
            raise RuntimeError(output(process)[-3000:])

        def small_files():  # files over 10 kB cannot be written: the LoRA (11.7 kB) of the next checkpoint fails
            resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

        started = time.time()
        process = launch(logdir, 1, ["--config.resume_from=latest"], preexec=small_files)
        code, _ = wait(process, 300)
        seconds = time.time() - started
        text = output(process)
        kept = sorted(os.listdir(os.path.join(logdir, "tiny", "checkpoints")))
        named = "error: cannot write checkpoint-6" in text and "File too large" in text
        resumed = self.resume(logdir, 1)
        return Row("disk full at a checkpoint (RLIMIT_FSIZE)", 1, f"exit {code}: {'write error named' if named else '?'}; kept {kept}",
                   seconds, "one epoch + checkpoint", resumed, code == 2 and named and kept == ["checkpoint-2", "checkpoint-4"]
                   and resumed == "bit-identical")


ROWS = {
    "sigterm": lambda d: [d.stop_signal("SIGTERM", 1), d.stop_signal("SIGTERM", 2)],
    "sigusr1": lambda d: [d.stop_signal("SIGUSR1", 1)],
    "sigterm_in_update": lambda d: [d.stop_signal("SIGTERM", 1, in_update=True)],
    "hung_process": lambda d: [d.hung_process()],
    "lost_process": lambda d: [d.lost_process()],
    "lost_node": lambda d: [d.lost_node()],
    "hung_reward": lambda d: [d.hung_reward(1), d.hung_reward(2)],
    "server_down": lambda d: [d.reward_server_down()],
    "nan_loss": lambda d: [d.nan_loss()],
    "full_disk": lambda d: [d.full_disk()],
}


def table(rows: list[Row]) -> str:
    lines = ["| fault | processes | what the run did | seconds to stop | bound | resumed | survived |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.processes} | {r.did} | {r.seconds:.1f} | {r.bound} | {r.resumed} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--inject"]:  # inside a drill run: the trainer with a fault injected
        return run_trainer_with_injection(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(ROWS), help="rows to run (default: all)")
    parser.add_argument("--out", default="", help="write the table (markdown) and the rows (json) here")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders (printed)")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="fault_drill_")
    drill, rows = Drill(root), []
    for name in args.only or ROWS:
        started = time.time()
        try:
            found = ROWS[name](drill)
        except (RuntimeError, OSError) as error:
            found = [Row(name, 0, f"drill error: {type(error).__name__}: {str(error)[-300:]}", 0.0, "", "", False)]
        rows.extend(found)
        for row in found:
            print(f"{row.fault} ({row.processes} processes): {row.did}; {row.seconds:.1f} s; resumed {row.resumed}; "
                  f"{'survived' if row.ok else 'NOT SURVIVED'} [{time.time() - started:.0f} s]", flush=True)
    text = table(rows)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fault_drill.md"), "w") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, "fault_drill.json"), "w") as handle:
            json.dump([dataclasses.asdict(r) for r in rows], handle, indent=2)
    if args.keep:
        print(f"runs kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
