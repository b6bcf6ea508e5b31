"""`python -m engine serve` stand-in. FAKE_ENGINE_MODE: ok | crash | hang | error | silent_start.
ok: capture copies $FAKE_ENGINE_RESULT to the output; retailor keeps locked values and nudges the rest."""

import json
import os
import shutil
import signal
import sys
import threading

import numpy as np

MODE = os.environ.get("FAKE_ENGINE_MODE", "ok")


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def retailor(args):
    res = dict(np.load(args["result"], allow_pickle=False))
    ed = np.load(args["edits"], allow_pickle=False)
    th = res["theta"].copy()
    nudge = np.array([np.cos(0.05), np.sin(0.05), 0.0, 0.0])
    w, x, y, z = np.moveaxis(th, -1, 0)
    bw, bx = nudge[0], nudge[1]
    th = np.stack([w * bw - x * bx, w * bx + x * bw, y * bw + z * bx, z * bw - y * bx], -1)
    res["theta"] = np.where(ed["lock_theta"][..., None], ed["theta"], th)
    res["beta"] = np.where(ed["lock_beta"][..., None], ed["beta"], res["beta"] + 0.1)
    res["root"] = np.where(ed["lock_root"][..., None], ed["root"], res["root"] + 0.002)
    res["hand_scale"] = np.where(ed["lock_hand_scale"], ed["hand_scale"], res["hand_scale"] * 1.01)
    tmp = args["output"] + ".tmp.npz"
    np.savez(tmp, **res)
    os.replace(tmp, args["output"])


def main():
    if MODE == "silent_start":
        threading.Event().wait()  # never says hello: the client gives up and kills it
    print("fake engine up", file=sys.stderr, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        rid, cmd, args = req["id"], req["cmd"], req.get("args", {})
        if cmd == "hello":
            send({"id": rid, "type": "result", "result": {"protocol": 1, "engine_version": "fake", "python":
                  sys.version.split()[0], "versions": {"numpy": np.__version__},
                  "capabilities": ["capture", "retailor", "export_model", "cancel", "shutdown"]}})
        elif cmd == "shutdown":
            send({"id": rid, "type": "result", "result": {}})
            return 0
        elif cmd == "cancel":
            continue
        elif cmd in ("capture", "retailor"):
            for i in range(3):
                send({"id": rid, "type": "progress", "done": i, "total": 3, "message": "fitting"})
                if MODE == "crash" and i == 1:
                    print("fake engine: about to be killed", file=sys.stderr, flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                if MODE == "hang" and i == 1:
                    threading.Event().wait()  # alive but silent until killed
            if MODE == "error":
                send({"id": rid, "type": "error", "code": "no_hand", "message": "no hand found in the footage"})
                continue
            if cmd == "capture":
                shutil.copy(os.environ["FAKE_ENGINE_RESULT"], args["output"])
            else:
                retailor(args)
            send({"id": rid, "type": "result", "result": {"files": {"result": args["output"]}}})
        else:
            send({"id": rid, "type": "error", "code": "unknown_command", "message": cmd})
    return 0


if __name__ == "__main__":
    sys.exit(main())
