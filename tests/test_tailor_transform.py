"""engine.tailor.transform in optax's test style: one jitted update step of the tailor against an Adam step
computed by hand from the energy's gradient; the runner; the non-jitted path's plumbing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.hand_model import load_hand_model
from engine.hand_model.rotations import axis_angle_to_quat, quat_multiply
from engine.tailor import TailorConfig, fit, model_params
from engine.tailor.api import start_delta
from engine.tailor import scale as S
from engine.tailor import transform as T
from engine.tailor.synthetic import make_case

B = 2


@pytest.fixture(scope="module")
def setup():
    model = load_hand_model()
    hand = model_params(model)
    c = make_case(model, hand, B, seed=3)
    lock_theta = np.zeros((B, 16), bool)
    lock_theta[1, 3] = True
    frames = T.Frames(
        theta0=c["theta0"], beta0=c["beta0"], root0=c["root0"], hand_scale0=np.ones(B, np.float32),
        projection_scale0=np.full(B, np.nan, np.float32), keypoints_2d=c["keypoints_2d"], confidence=c["confidence"],
        delta_pose_start=np.zeros((B, 16, 3), np.float32), valid=np.ones(B, bool), lock_theta=lock_theta, lock_beta=np.array([True, False]), lock_root=np.zeros(B, bool),
        lock_hand_scale=np.zeros(B, bool))
    frames = jax.tree_util.tree_map(jnp.asarray, frames)
    config = TailorConfig(lr=0.05, b1=0.9, b2=0.99, temporal_weight=3.0)
    settings = jax.tree_util.tree_map(jnp.asarray, config.settings())
    problem = jax.jit(T.scale_step)(hand, frames, jnp.asarray(c["K"]), settings)
    t = T.tailor(hand, settings)
    return model, hand, c, config, settings, problem, t, jax.jit(t.update)


_energy_grad = jax.jit(jax.grad(T.energy, argnums=3))


def _grad(hand, settings, problem, params):
    """The energy's gradient, with locked entries zeroed (what the update is documented to step on)."""
    g = _energy_grad(hand, settings, problem, params)
    return [np.asarray(gi, np.float64) * np.asarray(m > 0) for gi, m in zip(g, problem.grad_mask)]


def test_one_jitted_update_is_a_hand_computed_adam_step(setup):
    _, hand, _, config, settings, problem, t, update = setup
    s0 = t.init(problem)
    s1 = update(s0, problem)
    s2 = update(s1, problem)
    lr, b1, b2, eps = config.lr, config.b1, config.b2, 1e-8  # optax.adam's eps
    unit = [1.0, config.shape_step, 1.0]  # Eq. P5: beta's step is shape_step times the others' (Params order)
    p0 = [np.asarray(x, np.float64) for x in s0.params]
    g0 = _grad(hand, settings, problem, s0.params)
    m1 = [(1 - b1) * g for g in g0]
    v1 = [(1 - b2) * g * g for g in g0]
    p1 = [p - u * lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps) for p, m, v, u in zip(p0, m1, v1, unit)]
    for got, want in zip(s1.params, p1):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    g1 = _grad(hand, settings, problem, s1.params)
    m2 = [b1 * m + (1 - b1) * g for m, g in zip(m1, g1)]
    v2 = [b2 * v + (1 - b2) * g * g for v, g in zip(v1, g1)]
    lr2 = lr * config.lr_final ** (1 / (config.iterations - 1))  # Eq. P4: the step anneals geometrically
    p2 = [p - u * lr2 * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps) for p, m, v, u in zip(p1, m2, v2, unit)]
    for got, want in zip(s2.params, p2):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    # a step is about lr per free coordinate (Adam's first step is lr * sign(g)); locked ones do not move
    assert np.abs(np.abs(p1[0] - p0[0]).max() - lr) < 1e-3
    assert (np.asarray(s2.params.delta_pose)[1, 3] == 0).all()
    assert np.array_equal(np.asarray(s2.params.beta)[0], np.asarray(problem.beta0)[0])
    assert not np.array_equal(np.asarray(s2.params.beta)[1], np.asarray(problem.beta0)[1])


def test_an_update_with_eq_p6_moves_the_distance_then_steps_at_it(setup):
    """Frames fitted independently (no temporal term): an update first re-solves the distance at the pose the
    last step reached (`scale.redistance`, Eq. P6), then takes Adam's step with the energy's gradient at that
    distance; without Eq. P6 compiled in (`with_redistance=False`) the wrist stays where step 1 put it."""
    _, hand, c, _, _, problem, _, _ = setup
    config = TailorConfig(lr=0.05, b1=0.9, b2=0.99)
    settings = jax.tree_util.tree_map(jnp.asarray, config.settings())
    problem = problem._replace(distance_free=problem.fitted)  # as scale_step sets it without a temporal term
    t = T.tailor(hand, settings)
    s0 = t.init(problem)
    s1 = jax.jit(t.update)(s0, problem)
    s2 = jax.jit(t.update)(s1, problem)
    rel, _, root = T._posed(hand, T.current(problem, s1), s1.params)
    moved = S.redistance(rel, root, problem.hand_scale, problem.K, problem.keypoints_2d, problem.confidence,
                         problem.crop, problem.distance_free)
    np.testing.assert_allclose(np.asarray(s2.root_start), np.asarray(s1.root_start + (moved - root)), rtol=1e-6)
    assert np.abs(np.asarray(s2.root_start - s1.root_start)).max() > 1e-6  # it moved
    # the same step from s1's moments with the wrist already there and nothing free: the gradient was taken there
    held = problem._replace(distance_free=jnp.zeros_like(problem.fitted))
    want = jax.jit(t.update)(s1._replace(root_start=s2.root_start), held)
    for got, ref in zip(s2.params, want.params):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-6)
    fixed = T.tailor(hand, settings, with_redistance=False)
    np.testing.assert_array_equal(np.asarray(fixed.update(s0, problem).root_start), np.asarray(s0.root_start))


def test_the_runner_is_init_then_n_updates(setup):
    _, _, _, _, _, problem, t, update = setup
    ran = jax.jit(T.run, static_argnums=0)(t, problem, 3)
    state = t.init(problem)
    for _ in range(3):
        state = update(state, problem)
    for a, b in zip(jax.tree_util.tree_leaves(ran), jax.tree_util.tree_leaves(state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_unjitted_path_returns_the_same_fit(setup):
    """`fit(jit=False)` (the benchmark's reference: every op dispatched on its own, ~a minute a frame for
    20 steps) splits the batch into frames and joins the results. Step 1 and the outputs only: 0 steps."""
    model, c = setup[0], setup[2]
    args = (c["theta0"], c["beta0"], c["root0"], c["keypoints_2d"], c["confidence"], None, c["K"])
    config = TailorConfig(iterations=0)
    eager = fit(model, *args, config=config, jit=False)
    jitted = fit(model, *args, config=config)
    assert eager["theta"].shape == (B, 16, 4) and eager["fitted"].all() and eager["energies"]["E_t"] == 0
    for key in ("theta", "beta", "root", "hand_scale", "joints_3d"):
        np.testing.assert_allclose(eager[key], jitted[key], atol=2e-5)
    np.testing.assert_allclose(eager["energies"]["E"], jitted["energies"]["E"], rtol=1e-3)


def _same_rotation(a, b, atol):
    """(..., 4) quaternions that are one rotation (q and -q alike)."""
    dot = np.abs(np.sum(a / np.linalg.norm(a, axis=-1, keepdims=True) * b / np.linalg.norm(b, axis=-1, keepdims=True), -1))
    np.testing.assert_allclose(dot, 1.0, atol=atol)


def test_start_delta_is_the_tailors_pose_parameter_at_the_start():
    rng = np.random.default_rng(0)
    q0 = rng.normal(size=(3, 16, 4)) * rng.uniform(0.5, 2.0, size=(3, 16, 1))  # any norm
    qs = rng.normal(size=(3, 16, 4))
    qs[0, 2] = -qs[0, 2]  # either sign
    qs[1, 4] = np.nan  # not finite: that joint starts at theta0
    d = start_delta(q0, qs)
    assert d.shape == (3, 16, 3) and np.all(np.linalg.norm(d, axis=-1) <= np.pi + 1e-9)
    assert np.array_equal(d[1, 4], np.zeros(3))
    ok = np.ones((3, 16), bool)
    ok[1, 4] = False
    # exp(delta) R(theta0) = R(theta_start): the rotation in the parent's axes, applied after theta0
    _same_rotation(quat_multiply(axis_angle_to_quat(d), q0 / np.linalg.norm(q0, axis=-1, keepdims=True))[ok], qs[ok], 1e-12)
    assert np.array_equal(start_delta(q0, q0), np.zeros((3, 16, 3)))  # the same pose: exactly no change


def test_a_warm_start_begins_at_theta_start_and_e_id_still_measures_from_theta0(setup):
    model, c = setup[0], setup[2]
    args = (c["theta0"], c["beta0"], c["root0"], c["keypoints_2d"], c["confidence"], None, c["K"])
    locks = {"lock_theta": np.zeros((B, 16), bool)}
    locks["lock_theta"][1, 3] = True
    config = TailorConfig(iterations=12)
    cold = fit(model, *args, locks, config)
    # theta_start = theta0 is no warm start at all: bit for bit the same fit
    same = fit(model, *args, locks, config, theta_start=c["theta0"])
    for key in ("theta", "beta", "root", "joints_3d"):
        assert np.array_equal(same[key], cold[key]), key
    # 0 iterations from the cold fit's pose: the result is that pose (locked joints: theta0, bit for bit), and
    # the identity energy is its distance from theta0, not 0
    at = fit(model, *args, locks, config._replace(iterations=0), theta_start=cold["theta"])
    _same_rotation(at["theta"], cold["theta"], 1e-6)
    assert np.array_equal(at["theta"][1, 3], np.asarray(c["theta0"], np.float32)[1, 3])
    cold0 = fit(model, *args, locks, config._replace(iterations=0))
    assert np.all(cold0["energies"]["E_id"] == 0) and np.all(at["energies"]["E_id"] > 1e-4)
    # from there Adam goes on lowering the same energy
    warm = fit(model, *args, locks, config, theta_start=cold["theta"])
    assert np.all(warm["energies"]["E"] < cold["energies"]["E"])
