"""Every documented output shape of the camera and tailor functions is the shape they return.

The `Returns:` section of each docstring is parsed: shapes such as `(B, K, 2)`, `(B,)`, `()`, `(3, 3)`,
`(..., 2)`, optionally after a name (`theta (B, 16, 4)`), with B = batch, K = 21 keypoints, J = 16 joints.
"""

import re

import numpy as np
import pytest

from engine import camera
from engine.tailor import energies as E
from engine.tailor import scale as S

B = 40
SIZES = {"B": B, "N": B, "K": 21, "J": 16}
SHAPE = re.compile(r"\(((?:[A-Z0-9.]+(?:,\s*)?)*)\)")


def _returns(fn) -> str:
    doc = fn.__doc__ or ""
    assert "Returns:" in doc, f"{fn.__qualname__} documents no Returns section"
    return doc.split("Returns:", 1)[1]


def _parse(text: str):
    """Shape tuples in order of appearance: (..., 2) -> ('...', 2); (B,) -> (B,)."""
    out = []
    for m in SHAPE.finditer(text):
        parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
        out.append(tuple(p if p == "..." else (SIZES[p] if p in SIZES else int(p)) for p in parts))
    return out


def _matches(doc_shape, shape) -> bool:
    if doc_shape and doc_shape[0] == "...":
        tail = doc_shape[1:]
        return tuple(shape[len(shape) - len(tail):]) == tuple(tail)
    return tuple(doc_shape) == tuple(shape)


rng = np.random.default_rng(0)
J3 = (rng.normal(size=(B, 21, 3)) * 0.05 + [0, 0, 0.5]).astype(np.float32)
KP = rng.uniform(0, 400, size=(B, 21, 2)).astype(np.float32)
CONF = np.ones((B, 21), np.float32)
KM = np.array([[500, 0, 200], [0, 500, 200], [0, 0, 1]], np.float32)
ONES = np.ones(B, np.float32)

CASES = [
    (camera.project_perspective, (J3, KM)),
    (camera.backproject_perspective, (KP, J3[..., 2], KM)),
    (camera.project_weak_perspective, (J3, ONES[:, None], KP[:, :1])),
    (camera.nominal_K, ((640, 480),)),
    (E.crop_scale, (KP, CONF)),
    (E.joint_energy_perspective, (J3, KM, KP, CONF, ONES)),
    (E.twist_terms, (J3,)),
    (E.twist_energy, (J3,)),
    (E.identity_energy, (np.zeros((B, 16, 3), np.float32), np.ones((B, 10), np.float32), np.zeros((B, 10)))),
    (E.temporal_energy, (J3, np.ones(B, bool))),
    (E.depth_prior_energy, (J3, J3 * 1.1, ONES)),
    (E.hand_size, (np.zeros((16, 3), np.float32), np.ones((16, 3, 10), np.float32), np.ones((B, 10), np.float32))),
    (E.size_energy, (np.ones((B, 10), np.float32), ONES, np.zeros((16, 3), np.float32),
                     np.ones((16, 3, 10), np.float32))),
    (E.total_energy, (ONES, ONES, ONES)),
    (S.perspective_scale, (J3 - J3[:, :1], J3[:, 0], KM, KP, CONF, ONES)),
    (S.weak_perspective_scale, (J3, KP[:, 0], KP, CONF, ONES)),
    (S.place_at_distance, (J3[:, 0], ONES)),
]


@pytest.mark.parametrize("fn,args", CASES, ids=[c[0].__name__ for c in CASES])
def test_documented_shapes(fn, args):
    out = fn(*args)
    outs = out if isinstance(out, tuple) else (out,)
    doc = _parse(_returns(fn))
    assert len(doc) >= len(outs), (fn.__name__, doc)
    for d, o in zip(doc, outs):
        assert _matches(d, np.shape(o)), (fn.__name__, d, np.shape(o))


def test_fit_and_synthetic_documented_shapes():
    from engine.hand_model import load_hand_model
    from engine.tailor import fit, model_params
    from engine.tailor.synthetic import make_case

    model = load_hand_model()
    case = make_case(model, model_params(model), B, seed=1)
    named = re.compile(r"(\w+) (\((?:[A-Z0-9.]+(?:,\s*)?)*\))")
    for name, shape in named.findall(_returns(make_case)):
        if name in case:
            assert _matches(_parse(shape)[0], case[name].shape), name
    out = fit(model, case["theta0"], case["beta0"], case["root0"], case["keypoints_2d"], case["confidence"], None,
              case["K"])
    checked = 0
    for name, shape in named.findall(_returns(fit)):
        if name in out:
            assert _matches(_parse(shape)[0], np.shape(out[name])), name
            checked += 1
    assert checked >= 8
    for v in out["energies"].values():
        assert np.shape(v) in ((B,), ())
