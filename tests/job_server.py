"""`python tests/job_server.py`: the real engine server (`engine.server`) with one more job, `wait`, that
needs no networks, so the tests can drive the server's job, progress and cancel machinery on its own.

wait args: steps (progress events to send), block (then wait until terminated), output (an .npz to write
at the end), pid_file (where the job's process writes its pid first). Production has no such job.
"""

import os
import sys
import threading


def wait_job(args: dict, progress) -> dict:
    if args.get("pid_file"):
        with open(args["pid_file"], "w") as fh:
            fh.write(str(os.getpid()))
    steps = int(args.get("steps", 1))
    for i in range(steps):
        progress(i, steps, "waiting")
    if args.get("block"):
        threading.Event().wait()  # until the server terminates this process
    path = args.get("output")
    if path:
        import numpy as np

        from engine.results import atomic_savez

        atomic_savez(path, {"x": np.zeros(3)})
    return {"files": {"result": path}}


if __name__ == "__main__":
    from engine import protocol, server

    protocol.ARG_SPECS["wait"] = {
        "steps": ((int,), 1, False),
        "block": ((bool,), False, False),
        "output": ((str, None), None, False),
        "pid_file": ((str, None), None, False),
    }
    protocol.COMMANDS = protocol.COMMANDS + ("wait",)
    sys.exit(server.serve_stdio(jobs=dict(server.JOBS, wait=wait_job)))
