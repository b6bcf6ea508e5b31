"""engine.retailor: edited values stay locked bit for bit, the rest is refit from the stored 2D evidence."""

import numpy as np
import pytest

from engine import cli, results, retailor
from engine.errors import InputError
from engine.tailor.posing import model_keypoints
from capture_fixtures import model_result


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("retailor")
    r = model_result()
    rp = results.write_result(d / "result.npz", r)
    e = results.empty_edits(r)
    q = np.array([np.cos(0.4), np.sin(0.4), 0.0, 0.0])  # index1 bent 0.8 rad about x
    e["theta"][0, 1, 1] = q
    e["lock_theta"][0, 1, 1] = True
    e["beta"][0, 2] = np.linspace(-1, 1, 10)
    e["lock_beta"][0, 2] = True
    e["hand_scale"][0, 3] = 1.1
    e["lock_hand_scale"][0, 3] = True
    e["theta"][0, 5, 13] = q
    e["lock_theta"][0, 5, 13] = True  # outside --frames below: applied, joints_3d recomputed
    ep = results.write_edits(d / "edits.npz", e, r)
    out = d / "new.npz"
    code = cli.main(["retailor", str(rp), "--edits", str(ep), "-o", str(out), "--frames", "0:3", "--quiet"])
    return d, r, e, code, out


def test_locked_values_are_kept_bit_for_bit(case):
    d, r, e, code, out = case
    assert code == 0
    new = results.read_result(out)
    assert np.array_equal(new["theta"][0, 1, 1], e["theta"][0, 1, 1])
    assert np.array_equal(new["beta"][0, 2], e["beta"][0, 2])
    assert new["hand_scale"][0, 3] == 1.1
    assert np.array_equal(new["theta"][0, 5, 13], e["theta"][0, 5, 13])


def test_the_rest_is_refit_and_consistent(case):
    d, r, e, code, out = case
    new = results.read_result(out)
    # frame 1's other joints moved to explain the evidence around the locked joint
    assert not np.array_equal(new["theta"][0, 1, 2:], r["theta"][0, 1, 2:])
    # joints_3d is the model posed by the new values, everywhere valid
    valid = new["valid"][0]
    posed = model_keypoints(__import__("engine.hand_model", fromlist=["x"]).load_hand_model(None, "right"),
                            new["theta"][0, valid], new["beta"][0, valid], new["root"][0, valid], new["hand_scale"][0, valid])
    np.testing.assert_allclose(new["joints_3d"][0, valid], posed, atol=2e-4)
    # the unedited frame inside the range still projects onto its evidence
    from engine import camera

    uv = camera.project_perspective(new["joints_3d"][0, 0], new["K"])
    assert np.nanmean(np.linalg.norm(uv - r["keypoints_2d"][0, 0], axis=-1)) < 3.0


def test_outside_the_range_and_invalid_frames_are_untouched(case):
    d, r, e, code, out = case
    new = results.read_result(out)
    assert np.isnan(new["theta"][0, 4]).all() and not new["valid"][0, 4]
    theta5 = r["theta"][0, 5].copy()
    theta5[13] = e["theta"][0, 5, 13]
    assert np.array_equal(new["theta"][0, 5], theta5)
    assert not np.allclose(new["joints_3d"][0, 5], r["joints_3d"][0, 5])  # recomputed after the edit


def test_joints_option_holds_the_other_joints(case, tmp_path):
    d, r, e, code, out = case
    out2 = tmp_path / "joints.npz"
    assert cli.main(["retailor", str(d / "result.npz"), "--edits", str(d / "edits.npz"), "-o", str(out2),
                     "--frames", "0:3", "--joints", "thumb1,thumb2,thumb3", "--quiet"]) == 0
    new = results.read_result(out2)
    held = [j for j in range(16) if j not in (13, 14, 15)]
    merged = r["theta"][0, :4].copy()
    merged[1, 1] = e["theta"][0, 1, 1]
    assert np.array_equal(new["theta"][0, :4][:, held], merged[:, held])


def test_bad_requests(case, tmp_path, capsys):
    d, r, e, code, out = case
    base = ["retailor", str(d / "result.npz"), "--edits", str(d / "edits.npz"), "-o", str(tmp_path / "x.npz"), "--quiet"]
    assert cli.main(base + ["--joints", "elbow"]) == 2
    assert "unknown joint name" in capsys.readouterr().err
    assert cli.main(base + ["--frames", "100:200"]) == 2
    assert "selects none" in capsys.readouterr().err
    bad = dict(e, lock_beta=e["lock_beta"][:, :3])
    np.savez(tmp_path / "bad.npz", **bad)
    base[3] = str(tmp_path / "bad.npz")
    assert cli.main(base) == 2
    assert "[bad_input]" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(InputError, match="MANO joints"):
        retailor.joint_mask(["wrist", "pinky9"])


# ------------------------------------------------------------------------ the capture's hand model, per track


def test_a_model_no_one_has_exits_2_naming_the_mismatch_and_writes_nothing(case, tmp_path):
    import subprocess
    import sys

    d, r, e, code, out = case
    bad = results.read_result(d / "result.npz")
    bad["hand_model_sha256"] = np.asarray(["f" * 64])
    rp = results.write_result(tmp_path / "other model.npz", bad)
    target = tmp_path / "new.npz"
    proc = subprocess.run([sys.executable, "-m", "engine", "retailor", str(rp), "--edits", str(d / "edits.npz"),
                           "-o", str(target), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "[hand_model_mismatch]" in proc.stderr and "ffffffffffff" in proc.stderr
    assert str(r["hand_model"][0]) in proc.stderr  # names what it looked at
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other model.npz"]


def test_format_1_other_side_uses_the_shipped_model_only_when_track_0_did(mano_case):
    from engine.errors import HandModelMismatch
    from engine.hand_model import default_model_path, load_hand_model

    right, left = load_hand_model(None, "right"), load_hand_model(None, "left")
    r = {"hand_side": np.asarray(["right", "left"]), "hand_model": np.asarray([str(right.path)] * 2),
         "hand_model_sha256": np.asarray([right.sha256, ""])}
    assert [m.sha256 for m in retailor.track_models(r)] == [right.sha256, left.sha256]
    d, mano, _, _ = mano_case
    r.update(hand_model=np.asarray([str(mano.path)] * 2), hand_model_sha256=np.asarray([mano.sha256, ""]))
    with pytest.raises(HandModelMismatch, match="does not record the hand model of track 1"):
        retailor.track_models(r)
    models = retailor.track_models(r, hand_model=str(default_model_path("left").parent))
    assert [m.sha256 for m in models] == [mano.sha256, left.sha256]


@pytest.fixture(scope="module")
def mano_case(tmp_path_factory):
    """A MANO-format (official-layout pickle) capture result, its edits and the model folder."""
    from engine.hand_model import load_hand_model
    from test_hand_model_loading import official_mano_pickle

    d = tmp_path_factory.mktemp("mano")
    (d / "mano").mkdir()
    blob, _ = official_mano_pickle(seed=7)
    (d / "mano" / "MANO_RIGHT.pkl").write_bytes(blob)
    model = load_hand_model(d / "mano", side="right")
    r = model_result(model=model)
    rp = results.write_result(d / "mano take.npz", r)
    ep = results.write_edits(d / "edits.npz", results.empty_edits(r), r)
    return d, model, rp, ep


def test_mano_capture_is_retailored_with_mano_through_the_protocol(mano_case):
    import json
    import subprocess
    import sys

    from engine.hand_model import load_hand_model

    d, model, rp, ep = mano_case
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def ask(rid, args):
        proc.stdin.write(json.dumps({"id": rid, "cmd": "retailor", "args": args}) + "\n")
        proc.stdin.flush()
        while True:
            msg = json.loads(proc.stdout.readline())
            if msg["type"] != "progress":
                return msg

    try:
        out = d / "refit.npz"
        msg = ask("r", {"result": str(rp), "edits": str(ep), "output": str(out)})
        assert msg["type"] == "result", msg
        new = results.read_result(out)
        assert new["hand_model"].tolist() == [model.path] and new["hand_model_sha256"].tolist() == [model.sha256]
        valid = new["valid"][0]
        args = (new["theta"][0, valid], new["beta"][0, valid], new["root"][0, valid], new["hand_scale"][0, valid])
        np.testing.assert_allclose(new["joints_3d"][0, valid], model_keypoints(model, *args), atol=2e-4)
        open_hand = model_keypoints(load_hand_model(None, "right"), *args)
        assert np.abs(new["joints_3d"][0, valid] - open_hand).max() > 0.01  # not the open model's joints
        # the model folder moved: found again only where the protocol's hand_model points
        moved = d / "moved"
        (d / "mano").rename(moved)
        out2 = d / "refit2.npz"
        msg = ask("m", {"result": str(rp), "edits": str(ep), "output": str(out2)})
        assert msg["type"] == "error" and msg["code"] == "hand_model_mismatch", msg
        assert not out2.exists()
        msg = ask("h", {"result": str(rp), "edits": str(ep), "output": str(out2), "hand_model": str(moved)})
        assert msg["type"] == "result", msg
        assert results.read_result(out2)["hand_model"].tolist() == [str(moved / "MANO_RIGHT.pkl")]
    finally:
        proc.kill()
        proc.wait(5)
