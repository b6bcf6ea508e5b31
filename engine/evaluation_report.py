"""`python -m engine eval`: aggregation of the per-hand results into the report, the per-hand rows and the
markdown (the pipeline itself is in engine.evaluation). Field meanings: engine.evaluation's docstring.

Shapes: K = 21 keypoints.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from engine import metrics

STAGES = ("backbone", "hand_module", "tailored")
FLOOR_STAGES = ("model_floor", "model_floor_beta0", "model_floor_tailored")
FLOOR_SWEEP_FIELDS = ("pa_mpjpe_mm", "mpjpe_mm", "px_error", "fit_residual_px")  # tailor_sweep's floor_tailored_*
STAGE_FIELDS = ("px_error", "px_error_median", "pck_2d", "fit_residual_px", "mpjpe_mm", "pa_mpjpe_mm",
                "mpjpe_rigid_mm", "pck_3d", "auc_20_50", "auc_5_20")


def _num(x, nd: int = 4):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def fit_residual(uv: np.ndarray, fitted_to: np.ndarray, conf: np.ndarray) -> float:
    """Mean px distance of a stage's keypoints to the keypoints it was fitted to, over those with weight:
    uv (K, 2), fitted_to (K, 2), conf (K,) -> float (NaN when nothing has weight)."""
    m = np.asarray(conf) > 0
    if not m.any():
        return float("nan")
    return float(np.linalg.norm(np.asarray(uv)[m] - np.asarray(fitted_to)[m], axis=-1).mean())


def stage_metrics(results: list, stage: str, pck_px: float) -> dict:
    """Aggregates one stage over the evaluated hands (see engine.evaluation's docstring for each field)."""
    uv_p, uv_g, m2, resid = [], [], [], []
    x_p, x_g, m3 = [], [], []
    for r in results:
        if r.failed or stage not in r.stages:
            continue
        p = r.stages[stage]
        rec = r.record
        if p.uv is not None and rec.joints_2d is not None and np.isfinite(p.uv).all():
            uv_p.append(p.uv), uv_g.append(rec.joints_2d), m2.append(rec.visible)
        if p.uv is not None and r.fitted_to is not None and stage != "backbone" and np.isfinite(p.uv).all():
            resid.append(fit_residual(p.uv, r.fitted_to, r.fitted_conf))
        if p.xyz is not None and rec.joints_3d is not None and np.isfinite(p.xyz).all():
            x_p.append(p.xyz), x_g.append(rec.joints_3d), m3.append(rec.visible)
    out = dict(px_error=None, pck_2d=None, mpjpe_mm=None, pa_mpjpe_mm=None, pck_3d=None, auc_20_50=None,
               auc_5_20=None, n_2d=len(uv_p), n_3d=len(x_p), mpjpe_rigid_mm=None, px_error_median=None,
               fit_residual_px=_num(float(np.nanmean(resid))) if resid and np.isfinite(resid).any() else None)
    if uv_p:
        e2 = metrics.joint_errors_2d(np.stack(uv_p), np.stack(uv_g))
        m = np.stack(m2) & np.isfinite(e2)
        out["px_error"] = _num(metrics.masked_mean(e2, m))
        out["px_error_median"] = _num(float(np.median(e2[m]))) if m.any() else None
        out["pck_2d"] = _num(metrics.pck(e2, pck_px, m))
    if x_p:
        P, G, m = np.stack(x_p), np.stack(x_g), np.stack(m3)
        er = metrics.joint_errors_3d(P, G, "root")
        ea = metrics.joint_errors_3d(P, G, "procrustes")
        out["mpjpe_mm"] = _num(1000 * metrics.masked_mean(er, m))
        out["pa_mpjpe_mm"] = _num(1000 * metrics.masked_mean(ea, m))
        out["mpjpe_rigid_mm"] = _num(1000 * metrics.masked_mean(metrics.joint_errors_3d(P, G, "rigid"), m))
        out["pck_3d"] = _num(metrics.pck(er, 0.020, m))
        out["auc_20_50"] = _num(metrics.auc(er, 0.020, 0.050, m))
        out["auc_5_20"] = _num(metrics.auc(er, 0.005, 0.020, m))
    return out


def summarize(results: list, iterations: list[int], pck_px: float) -> dict:
    """The JSON object of one camera mode: n, failures, stages (+ the tailor sweep when several iterations)."""
    n = len(results)
    failures = sum(r.failed for r in results)
    main_it = iterations[-1] if len(iterations) == 1 else (20 if 20 in iterations else iterations[0])
    for r in results:
        for name in ("tailored", "model_floor_tailored"):
            if f"{name}@{main_it}" in r.stages:
                r.stages[name] = r.stages[f"{name}@{main_it}"]
    stages = {s: stage_metrics(results, s, pck_px) for s in STAGES}
    for s in FLOOR_STAGES:
        if any(s in r.stages for r in results):
            stages[s] = stage_metrics(results, s, pck_px)
    ok = [r for r in results if not r.failed]
    errors = [dict(image=r.record.image.name, hand=r.record.hand, error=r.error) for r in results if r.error]
    out = dict(n=n, failures=failures, stages=stages, evaluated=len(ok), errors=len(errors), tailor_iterations=main_it)
    sweep = []
    for it in iterations:
        ms = [r.tailor_ms[it] for r in ok if it in r.tailor_ms]
        m = stage_metrics(results, f"tailored@{it}", pck_px)
        sweep.append(dict(iterations=it, ms_per_hand=_num(float(np.median(ms[1:] or ms)), 2) if ms else None,
                          auc_20_50=m["auc_20_50"], auc_5_20=m["auc_5_20"], mpjpe_mm=m["mpjpe_mm"],
                          pa_mpjpe_mm=m["pa_mpjpe_mm"], px_error=m["px_error"], mpjpe_rigid_mm=m["mpjpe_rigid_mm"],
                          px_error_median=m["px_error_median"], fit_residual_px=m["fit_residual_px"]))
        if any(f"model_floor_tailored@{it}" in r.stages for r in ok):
            f = stage_metrics(results, f"model_floor_tailored@{it}", pck_px)
            sweep[-1].update({f"floor_tailored_{k}": f[k] for k in FLOOR_SWEEP_FIELDS})
    out["tailor_sweep"] = sweep
    a, b = stages["tailored"]["auc_5_20"], stages["hand_module"]["auc_5_20"]
    out["tailor_gain_auc_5_20"] = None if a is None or b is None else round(a - b, 4)
    out["failed"] = [dict(image=r.record.image.name, hand=r.record.hand, reason=r.reason) for r in results if r.failed]
    out["error_list"] = errors
    return out


def hand_row(r) -> dict:
    """One hand's figures (a line of `--per-hand FILE.jsonl`): every stage (and sweep entry) it has."""
    row = dict(image=r.record.image.name, hand=r.record.hand, index=r.record.index, mode=r.mode, failed=r.failed,
               reason=r.reason or None, error=r.error or None, match=r.match, stages={})
    for name in sorted(r.stages):
        m = stage_metrics([r], name, 10.0)
        row["stages"][name] = {k: m[k] for k in STAGE_FIELDS if k not in ("pck_2d", "pck_3d")}
        if name.startswith("tailored@") and int(name.split("@")[1]) in r.tailor_ms:
            row["stages"][name]["ms"] = _num(r.tailor_ms[int(name.split("@")[1])], 3)
    return row


def markdown_report(folder: pathlib.Path, report: dict, pck_px: float) -> str:
    """The human-readable report (`--out`)."""
    lines = [f"# Evaluation of {folder}", "", f"Keypoint backbone: {report.get('backbone', 'mediapipe')}.", ""]
    modes = report.get("modes") or {report.get("mode", "auto"): report}
    cols = ("px_error", "px_error_median", "pck_2d", "fit_residual_px", "mpjpe_mm", "pa_mpjpe_mm", "mpjpe_rigid_mm",
            "pck_3d", "auc_20_50", "auc_5_20")
    for mode, rep in modes.items():
        lines += [f"## Camera: {mode}", "",
                  f"{rep['n']} hands, {rep['failures']} failures (no hand detected, or not the annotated hand), "
                  f"{rep['evaluated']} evaluated, {rep['errors']} pipeline errors; "
                  f"tailor {rep['tailor_iterations']} iterations.", "",
                  "| stage | px error | px median | PCK2D@%gpx | fit residual px | MPJPE mm | PA-MPJPE mm | rigid mm "
                  "| PCK3D@20mm | AUC 20-50 | AUC 5-20 |" % pck_px,
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s, m in rep["stages"].items():
            lines.append(f"| {s} | " + " | ".join("-" if m.get(k) is None else f"{m[k]:.3f}" for k in cols) + " |")
        lines += ["", f"Tailor gain (AUC 5-20 after - before): {rep['tailor_gain_auc_5_20']}", ""]
        if len(rep["tailor_sweep"]) > 1:
            keys = ("iterations", "ms_per_hand", "px_error", "fit_residual_px", "mpjpe_mm", "pa_mpjpe_mm",
                    "mpjpe_rigid_mm", "auc_20_50", "auc_5_20")
            keys += tuple(f"floor_tailored_{k}" for k in FLOOR_SWEEP_FIELDS
                          if f"floor_tailored_{k}" in rep["tailor_sweep"][0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for row in rep["tailor_sweep"]:
                lines.append("| " + " | ".join("-" if row.get(k) is None else str(row[k]) for k in keys) + " |")
            lines.append("")
        if rep["failed"]:
            lines += ["Failures:", ""] + [f"- {f['image']} ({f['hand']}): {f['reason']}" for f in rep["failed"]] + [""]
        if rep["error_list"]:
            lines += ["Pipeline errors (backbone evaluated, later stages missing):", ""]
            lines += [f"- {e['image']} ({e['hand']}): {e['error']}" for e in rep["error_list"]] + [""]
    lines += ["Metrics: 3D errors root-aligned at the wrist (backbone: MediaPipe's hand-centred world landmarks); "
              "PA = similarity Procrustes; rigid = rotation + translation (no scale); fit residual = distance of a "
              "stage's keypoints to the 2D keypoints it was fitted to; model_floor = the hand model fitted directly "
              "to the 3D ground truth (--fit-3d), model_floor_tailored = the tailor started there, on the same 2D "
              "keypoints; AUC over 20 uniformly spaced thresholds (ends included), "
              "trapezoidal area / range; PCK per keypoint then averaged (Zimmermann & Brox). Visible keypoints only "
              "where the set has visibility.", ""]
    return "\n".join(lines)
