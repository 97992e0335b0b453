"""Several runs of scripts/train.py one after the other in the same processes: the two-process tests start one
``accelerate launch`` (its start-up, a few seconds per process, paid once) instead of one per family.

    accelerate launch --multi_gpu --num_processes 2 tests/train_in_sequence.py RUNS.json

RUNS.json is a list of argument lists for ``train.main``; before each run the main process prints
``=== run <i>``, so a test can split the output. The first run that does not exit 0 ends the launch with its
status. The process group stays up from one run to the next (each run's ``end_training`` would destroy it, and
a group set up again on the launcher's store hangs), as in one long run; it is destroyed after the last."""

import json
import os
import sys

from accelerate.state import PartialState

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

from train import main  # noqa: E402

if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        runs = json.load(handle)
    destroy = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None
    for i, argv in enumerate(runs):
        if os.environ.get("RANK", "0") == "0":
            print(f"=== run {i}", flush=True)
        code = main(argv)
        if code != 0:
            sys.exit(code)
    destroy(PartialState())
