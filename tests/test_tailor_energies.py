"""Tailor energies (Eq. 9, 10, 11, 13) and the analytic scale (Eq. 12, 17) on hand-computed joint arrays."""

import jax.numpy as jnp
import numpy as np
import pytest

from engine.camera import project_perspective
from engine.tailor import energies as E
from engine.tailor import scale as S

K = np.array([[800.0, 0.0, 320.0], [0.0, 800.0, 240.0], [0.0, 0.0, 1.0]], np.float32)


def _line_hand():
    """(1, 21, 3): every keypoint on the x axis (zero twist), reference bone 0 -> 9 of length 1."""
    j = np.zeros((1, 21, 3), np.float32)
    j[0, :, 0] = np.arange(21) * 0.1
    j[0, 9, 0] = 1.0
    return j


def test_crop_scale():
    kp = np.zeros((3, 21, 2), np.float32)
    kp[0, :, 0] = np.linspace(0, 128, 21)  # 128 px wide -> 2 crop px per px
    kp[1] = 50.0  # all on one point: floored at 1 px
    kp[2, :, 1] = np.linspace(0, 64, 21)
    conf = np.ones((3, 21), np.float32)
    conf[2] = 0.0  # no confidence: all keypoints count for the size
    c = np.asarray(E.crop_scale(kp, conf))
    assert c.shape == (3,)
    np.testing.assert_allclose(c, [2.0, 256.0, 4.0])
    conf2 = np.ones((1, 21), np.float32)
    conf2[0, 20] = 0.0
    kp2 = kp[:1].copy()
    kp2[0, 20] = [1000.0, 1000.0]  # an ignored outlier does not count
    np.testing.assert_allclose(np.asarray(E.crop_scale(kp2, conf2)), [256.0 / kp2[0, 19, 0]], rtol=1e-6)


def test_joint_energy_perspective_hand_computed():
    rng = np.random.default_rng(0)
    j = (rng.normal(size=(2, 21, 3)) * 0.05 + [0, 0, 0.5]).astype(np.float32)
    uv = np.asarray(project_perspective(j, K))
    obs = uv + np.array([1.0, 0.0], np.float32)  # 1 px off everywhere
    conf = np.ones((2, 21), np.float32)
    crop = np.array([2.0, 1.0], np.float32)
    e = np.asarray(E.joint_energy_perspective(j, K, obs, conf, crop))
    assert e.shape == (2,)
    np.testing.assert_allclose(e, [4.0, 1.0], rtol=1e-4)
    obs2 = obs.copy()
    obs2[:, 3] += 50.0
    conf[:, 3] = 0.0  # a zero-confidence keypoint is ignored
    np.testing.assert_allclose(np.asarray(E.joint_energy_perspective(j, K, obs2, conf, crop)), [4.0, 1.0], rtol=1e-4)
    conf[:] = 0.0
    e0 = np.asarray(E.joint_energy_perspective(j, K, obs2, conf, crop))
    assert np.all(e0 == 0.0)


def test_twist_energy_hand_computed():
    j = _line_hand()
    np.testing.assert_allclose(np.asarray(E.twist_energy(j)), [0.0], atol=1e-6)
    # thumb (keypoints 4,3,2,1 tip-to-palm): V_ab=(0,0,1), V_bc=(0,1,0), V_cd=(1,0,0) -> |-1| - min(0, 0) = 1
    t1 = j.copy()
    t1[0, [1, 2, 3, 4]] = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    cop, bend = E.twist_terms(t1)
    assert cop.shape == (1, 5) and bend.shape == (1, 5)
    np.testing.assert_allclose(np.asarray(E.twist_energy(t1)), [1.0], atol=1e-6)
    # reversed bend in one plane: coplanarity 0, (V_ab x V_bc).(V_bc x V_cd) = -2 -> energy 2
    t2 = j.copy()
    t2[0, [1, 2, 3, 4]] = [[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 0, 0]]
    np.testing.assert_allclose(np.asarray(E.twist_energy(t2)), [2.0], atol=1e-6)
    # invariant to the hand's size (joints divided by the reference bone length) but not to bone ratios
    np.testing.assert_allclose(np.asarray(E.twist_energy(t2 * 0.09)), [2.0], atol=1e-5)
    # degenerate: everything on one point -> finite
    assert np.isfinite(np.asarray(E.twist_energy(np.zeros((1, 21, 3), np.float32)))).all()


def test_identity_and_total_energy():
    d = np.zeros((1, 16, 3), np.float32)
    d[0, 3] = [0.1, 0.2, 0.0]
    b = np.ones((1, 10), np.float32)
    e = np.asarray(E.identity_energy(d, b, np.zeros((1, 10), np.float32)))
    np.testing.assert_allclose(e, [0.05 + 10.0], rtol=1e-6)
    tot = np.asarray(E.total_energy(jnp.array([2.0]), jnp.array([0.5]), jnp.array([10.0])))
    np.testing.assert_allclose(tot, [2.0 + 50.0 + 1.0], rtol=1e-6)


def test_temporal_energy():
    j = np.repeat(_line_hand(), 5, axis=0)
    j += np.arange(5, dtype=np.float32)[:, None, None] * np.array([0.1, 0.0, 0.0], np.float32)  # constant velocity
    valid = np.ones(5, bool)
    np.testing.assert_allclose(float(E.temporal_energy(j, valid)), 0.0, atol=1e-10)
    j2 = j.copy()
    j2[2] += [0.0, 0.5, 0.0]  # bone length 1: acceleration 0.5, -1, 0.5 at frames 1, 2, 3
    np.testing.assert_allclose(float(E.temporal_energy(j2, valid)), 0.25 + 1.0 + 0.25, rtol=1e-5)
    valid[0] = False  # frame 1's triple is dropped
    np.testing.assert_allclose(float(E.temporal_energy(j2, valid)), 1.0 + 0.25, rtol=1e-5)
    assert float(E.temporal_energy(j2[:2], valid[:2])) == 0.0


def _hand_rel(seed, flat=False):
    rng = np.random.default_rng(seed)
    rel = rng.normal(size=(3, 21, 3)).astype(np.float32) * 0.04
    rel[:, 0] = 0.0  # keypoint 0 is the wrist = root
    if flat:
        rel[..., 2] = 0.0
    return rel


def test_perspective_scale_eq12_on_axis_flat_is_exact():
    rel = _hand_rel(1, flat=True)
    root = np.array([[0, 0, 0.5], [0, 0, 0.7], [0, 0, 0.4]], np.float32)
    s_true = np.array([0.8, 1.0, 1.3], np.float32)
    obs = np.asarray(project_perspective(root[:, None] + s_true[:, None, None] * rel, K))
    conf, fb = np.ones((3, 21), np.float32), np.ones(3, np.float32)
    s = S.perspective_scale(rel, root, K, obs, conf, fb, gauss_newton_steps=0)
    assert s.shape == (3,)
    np.testing.assert_allclose(np.asarray(s), s_true, rtol=1e-5)


def test_perspective_scale_off_axis_with_depth():
    rel = _hand_rel(2)
    root = np.array([[0.2, -0.1, 0.5], [-0.15, 0.1, 0.7], [0.0, 0.2, 0.4]], np.float32)
    s_true = np.array([0.8, 1.0, 1.3], np.float32)
    obs = np.asarray(project_perspective(root[:, None] + s_true[:, None, None] * rel, K))
    conf = np.ones((3, 21), np.float32)
    s0 = np.asarray(S.perspective_scale(rel, root, K, obs, conf, np.ones(3, np.float32), gauss_newton_steps=0))
    s = np.asarray(S.perspective_scale(rel, root, K, obs, conf, np.ones(3, np.float32)))
    np.testing.assert_allclose(s0, s_true, rtol=0.1)  # the linearized Eq. 12 is near-optimal
    np.testing.assert_allclose(s, s_true, rtol=1e-4)  # the Gauss-Newton steps make it exact


def test_weak_perspective_scale_eq17():
    rel = _hand_rel(3)
    s_true = np.array([900.0, 1500.0, 300.0], np.float32)
    t = np.array([[100, 200], [300, 50], [0, 0]], np.float32)
    obs = rel[..., :2] * s_true[:, None, None] + t[:, None]
    s = np.asarray(S.weak_perspective_scale(rel, t, obs, np.ones((3, 21), np.float32), np.ones(3, np.float32)))
    np.testing.assert_allclose(s, s_true, rtol=1e-5)
    # Eq. 17 minimizes the Eq. 16 energy over s
    rng = np.random.default_rng(0)
    noisy = obs + rng.normal(size=obs.shape).astype(np.float32) * 3
    conf = np.ones((3, 21), np.float32)
    s_n = np.asarray(S.weak_perspective_scale(rel, t, noisy, conf, np.ones(3, np.float32)))
    from engine.camera import project_weak_perspective

    def e(ss):  # Eq. 16's squared 2D error, summed over the keypoints
        uv = project_weak_perspective(rel.astype(np.float64), ss[:, None].astype(np.float64), t[:, None].astype(np.float64))
        return np.sum((uv - noisy) ** 2, axis=(-2, -1))

    assert np.all(e(s_n) <= e(s_n * 1.001) + 1e-3) and np.all(e(s_n) <= e(s_n * 0.999) + 1e-3)


def test_redistance_eq_p6_moves_the_wrist_along_its_ray_to_the_2d_optimum():
    """Exact 2D of a hand at another distance: Eq. P6 puts the wrist back where the 2D says, on its ray; a
    frame that is not free keeps its wrist bit for bit."""
    rel = _hand_rel(5)
    hs = np.array([1.0, 1.1, 0.9], np.float32)
    root = np.array([[0.05, -0.03, 0.5], [-0.1, 0.05, 0.4], [0.0, 0.0, 0.7]], np.float32)
    obs = np.asarray(project_perspective(root[:, None] + hs[:, None, None] * rel, K))
    start = root * np.array([[1.2], [0.85], [1.1]], np.float32)  # on the same rays, at another distance
    conf = np.ones((3, 21), np.float32)
    out = np.asarray(S.redistance(rel, start, hs, K, obs, conf, E.crop_scale(obs, conf), np.array([1, 1, 0], bool)))
    np.testing.assert_allclose(out[:2], root[:2], rtol=1e-4)
    np.testing.assert_array_equal(out[2], start[2])


def test_redistance_never_raises_the_2d_energy():
    """Noisy 2D (up to 30 px), a fitted pose that is not the observed one, wrists from 0.1 to 0.8 m started at
    half to twice their distance: the closed form alone raises E_J on a few frames (strong perspective); Eq. P6
    keeps those wrists where they were and lowers E_J everywhere else, moving each wrist along its ray."""
    rng = np.random.default_rng(1)
    n = 256
    rel = (rng.normal(size=(n, 21, 3)) * 0.04).astype(np.float32)
    rel[:, 0] = 0.0
    z = rng.uniform(0.1, 0.8, n)
    root = np.stack([rng.uniform(-0.1, 0.1, n) * z, rng.uniform(-0.1, 0.1, n) * z, z], -1).astype(np.float32)
    hs = rng.uniform(0.8, 1.2, n).astype(np.float32)
    obs = np.asarray(project_perspective(root[:, None] + hs[:, None, None] * rel, K))
    obs = obs + (rng.normal(size=obs.shape) * rng.uniform(0, 30, (n, 1, 1))).astype(np.float32)
    fitted = rel + (rng.normal(size=rel.shape) * 0.01).astype(np.float32)
    fitted[:, 0] = 0.0
    start = (root * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)
    conf = np.ones((n, 21), np.float32)
    crop = E.crop_scale(obs, conf)

    def e_j(r):
        return np.asarray(E.joint_energy_perspective(r[:, None] + hs[:, None, None] * fitted, K, obs, conf, crop))

    s = np.asarray(S.perspective_scale(fitted, start, K, obs, conf, hs))
    worse = e_j(np.asarray(S.place_at_distance(start, s / hs))) > e_j(start)
    assert 1 <= worse.sum() <= 10  # the closed form alone (measured: 3 of 256)
    out = np.asarray(S.redistance(fitted, start, hs, K, obs, conf, crop, np.ones(n, bool)))
    np.testing.assert_array_equal(out[worse], start[worse])
    assert np.all(e_j(out) <= e_j(start)) and np.mean(e_j(out) < e_j(start)) > 0.95
    off_ray = np.linalg.norm(np.cross(out, start), axis=-1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(start, axis=-1)
    assert off_ray.max() < 1e-5


@pytest.mark.parametrize("case", ["one_point", "zero_confidence", "edge_on", "nan_input"])
def test_scale_degenerate_inputs_are_finite(case):
    rel = _hand_rel(4)
    root = np.array([[0, 0, 0.5]] * 3, np.float32)
    obs = np.asarray(project_perspective(root[:, None] + rel, K))
    conf = np.ones((3, 21), np.float32)
    if case == "one_point":
        obs[:] = 123.0
    elif case == "zero_confidence":
        conf[:] = 0.0
    elif case == "edge_on":
        rel[..., :2] = 0.0  # every joint on the line of sight: no 2D extent at all
    elif case == "nan_input":
        obs[1, 3] = np.nan
        conf[1, 3] = 0.0
        obs[1] = np.where(np.isnan(obs[1]), 0.0, obs[1])
    fb = np.ones(3, np.float32)
    s = np.asarray(S.perspective_scale(rel, root, K, obs, conf, fb))
    w = np.asarray(S.weak_perspective_scale(rel, obs[:, 0], obs, conf, fb * 1000))
    c = np.asarray(E.crop_scale(obs, conf))
    assert np.isfinite(s).all() and np.isfinite(w).all() and np.isfinite(c).all()
    assert (s >= S.S_MIN).all() and (s <= S.S_MAX).all() and (w > 0).all()
    if case in ("zero_confidence", "edge_on"):
        np.testing.assert_array_equal(w, fb * 1000)


# ------------------------------------------------------------------------- the project's terms (P1..P4)
def _hand(seed=0):
    """(1, 21, 3) a random hand-sized skeleton (m), the reference bone 0 -> 9 about 8 cm."""
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(1, 21, 3)).astype(np.float32) * 0.03
    j[0, 0] = 0.0
    j[0, 9] = [0.08, 0.0, 0.0]
    return j


def test_depth_prior_energy_hand_computed():
    j0 = _hand()
    bone = np.linalg.norm(j0[:, 9] - j0[:, 0], axis=-1)
    assert float(E.depth_prior_energy(j0, j0, bone)[0]) == 0.0
    # one fingertip 1 cm deeper than the hand module had it: (0.01 / bone)^2 over the 15 finger keypoints
    j = j0.copy()
    j[0, 8, 2] += 0.01
    np.testing.assert_allclose(E.depth_prior_energy(j, j0, bone), (0.01 / bone) ** 2 / 15, rtol=1e-5)
    # each finger moved in depth as a whole with its base (the palm tilted), the wrist too: free
    j = j0.copy()
    for base, dz in zip((1, 5, 9, 13, 17), (0.01, 0.02, -0.01, 0.02, 0.03)):
        j[0, base:base + 4, 2] += dz
    j[0, 0, 2] += 0.005
    np.testing.assert_allclose(E.depth_prior_energy(j, j0, bone), 0.0, atol=1e-9)
    # in-plane motion is free too, and the energy has no unit: a hand twice the size, twice the change
    j = j0.copy()
    j[0, 12, :2] += 0.03
    j[0, 12, 2] -= 0.004
    want = float(E.depth_prior_energy(j, j0, bone)[0])
    np.testing.assert_allclose(want, (0.004 / bone[0]) ** 2 / 15, rtol=1e-5)
    np.testing.assert_allclose(E.depth_prior_energy(2 * j, 2 * j0, 2 * bone), want, rtol=1e-5)


def test_size_energy_holds_the_size_not_the_proportions():
    from engine.hand_model import load_hand_model
    from engine.tailor import model_params

    hand = model_params(load_hand_model())
    beta0 = np.zeros((1, 10), np.float32)
    size0 = E.hand_size(hand.J0, hand.Jdirs, beta0)
    assert 0.06 < float(size0[0]) < 0.12  # meters: a hand's joints ~9 cm from the wrist on average
    assert float(E.size_energy(beta0, size0, hand.J0, hand.Jdirs)[0]) == 0.0
    # beta_0 (the open hand's size direction, +5.5 % per unit): ((S - S0) / S0)^2 = 0.055^2
    grow = beta0.copy()
    grow[0, 0] = 1.0
    np.testing.assert_allclose(E.size_energy(grow, size0, hand.J0, hand.Jdirs), 0.055**2, rtol=0.05)
    # a proportion change (palm width) costs far less than the same amount of size
    wide = beta0.copy()
    wide[0, 1] = 1.0
    assert float(E.size_energy(wide, size0, hand.J0, hand.Jdirs)[0]) < 0.1 * 0.055**2


def test_identity_energy_part_weights():
    d = np.zeros((1, 16, 3), np.float32)
    d[0, 0] = [0.1, 0.0, 0.0]  # global rotation
    d[0, 5] = [0.0, 0.2, 0.0]  # a finger joint
    beta, beta0 = np.full((1, 10), 0.5, np.float32), np.zeros((1, 10), np.float32)
    np.testing.assert_allclose(E.identity_energy(d, beta, beta0), 0.01 + 0.04 + 2.5, rtol=1e-6)  # the paper's
    np.testing.assert_allclose(E.identity_energy(d, beta, beta0, 0.1, 0.2), 0.001 + 0.04 + 0.5, rtol=1e-6)


def test_total_energy_adds_the_project_terms():
    one = np.ones(2, np.float32)
    np.testing.assert_allclose(E.total_energy(one, one, one, 1.0, 100.0, 0.1), 101.1, rtol=1e-6)
    np.testing.assert_allclose(E.total_energy(one, one, one, 1.0, 100.0, 0.1, 2 * one, 3 * one, 10.0, 1000.0),
                               101.1 + 20.0 + 3000.0, rtol=1e-6)


def test_place_at_distance_gives_the_same_image_at_the_hand_size():
    rng = np.random.default_rng(1)
    rel = (rng.normal(size=(3, 21, 3)) * 0.04).astype(np.float32)
    root = np.array([[0.05, -0.02, 0.5], [0.0, 0.0, 0.3], [-0.1, 0.05, 0.8]], np.float32)
    s = np.array([1.2, 0.8, 1.05], np.float32)
    scaled = project_perspective(root[:, None] + s[:, None, None] * rel, K)  # the paper: the hand scaled
    placed = project_perspective(np.asarray(S.place_at_distance(root, s))[:, None] + rel, K)  # the hand moved
    np.testing.assert_allclose(placed, scaled, atol=1e-3)
    np.testing.assert_allclose(np.asarray(S.place_at_distance(root, s))[:, 2], root[:, 2] / s, rtol=1e-6)


def test_annealed_lr_runs_from_lr_to_lr_final():
    from engine.tailor import TailorConfig
    from engine.tailor.transform import annealed_lr

    sched = annealed_lr(TailorConfig(lr=0.05, lr_final=0.2, iterations=20).settings())
    got = np.array([float(sched(c)) for c in (0, 10, 19, 30)])
    np.testing.assert_allclose(got, [0.05, 0.05 * 0.2 ** (10 / 19), 0.01, 0.01], rtol=1e-5)
    const = annealed_lr(TailorConfig(lr=0.03, lr_final=1.0, iterations=5).settings())
    np.testing.assert_allclose([float(const(c)) for c in range(5)], 0.03, rtol=1e-6)
    single = annealed_lr(TailorConfig(lr=0.05, lr_final=0.2, iterations=1).settings())
    assert float(single(0)) == np.float32(0.05)
