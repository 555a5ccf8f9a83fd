"""The signal-to-noise ratio of gradient estimators against the number of draws K (Rainforth et al. 2018, Tucker et
al. 2019).

For each estimator and each K, ``num_repeats`` gradient estimates on one batch with the parameters held fixed give,
per parameter, SNR = |mean| / standard deviation, the squared mean less its sampling variance (so that a parameter
whose expected gradient is zero adds little, not the 0.8 / sqrt(R) that |mean| alone would); the guide's
(inference network's) and the model's (generative network's) SNR are the means over their parameters. On log-log axes SNR against K is close to a line, and its
slope says how the estimator scales: Rainforth et al. show that under the IWAE bound the guide's SNR falls as
K^(-1/2) while the model's rises as K^(1/2); Tucker et al. that DReG's guide SNR does not fall. Those rates are
asymptotic in K, so besides the slope over every K the study fits the slope over the largest ``TAIL`` values.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import pyro
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.studies.estimators import Estimator, applicability, check_positive, estimator_spec
from pyro_vae.studies.gradients import gradient_statistics, sample_gradients

#: Student's t quantiles for a two-sided 95 % interval, by degrees of freedom (more than 30: the normal's 1.96)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t_quantile_95(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (the nearest tabulated one below)."""
    if dof > 30:
        return 1.96
    return _T95[max(d for d in _T95 if d <= dof)]


def _elbo_options(name: str, num_particles: int) -> dict:
    spec = estimator_spec(name)
    options = {"num_particles": num_particles}
    if spec.elbo_class.__module__.startswith("pyro.infer"):  # Pyro's ELBOs draw the K particles in one pass
        options["vectorize_particles"] = num_particles > 1
    return options


def snr_against_particles(model: Callable, guide: Callable, batch: tuple, estimators: Sequence[str],
                          particle_counts: Sequence[int], *, num_repeats: int = 100,
                          progress: Optional[Callable[[str, int], Callable]] = None) -> list[dict]:
    """One row per (estimator, K): the guide's and the model's SNR and total variance over ``num_repeats`` gradient
    estimates on ``batch``, and the seconds per estimate; an estimator that does not apply at some K gets a row
    with the reason under ``not_applicable``. Each runs in its own scope of Pyro's parameter store."""
    check_positive(num_repeats, "the number of repeated gradient estimates")
    if num_repeats < 2:
        raise PyroVAEError("a signal-to-noise ratio needs at least 2 repeated gradient estimates, got 1")
    if not particle_counts or any(k < 1 for k in particle_counts):
        raise PyroVAEError(f"the numbers of draws K must be positive whole numbers, got {list(particle_counts)}")
    rows = []
    for name in estimators:
        estimator_spec(name)
        for k in particle_counts:
            reason = applicability(name, model, guide, batch, k)
            if reason is not None:
                rows.append({"estimator": name, "num_particles": k, "not_applicable": reason})
                continue
            with pyro.get_param_store().scope():
                estimator = Estimator(name, model, guide, batch, **_elbo_options(name, k))
                loop = progress(f"{name} K={k}", num_repeats) if progress else None
                result = sample_gradients(estimator, batch, num_repeats, progress=loop)
            row = {"estimator": name, "num_particles": k}
            for group, samples in result.samples.items():
                if samples.shape[1]:
                    stats = gradient_statistics(samples, debias=True)
                    row[f"{group}_snr"] = stats["snr"]
                    row[f"{group}_total_variance"] = stats["total_variance"]
            row["seconds_per_gradient"] = result.seconds_per_gradient
            rows.append(row)
    return rows


def fit_slope(ks: Sequence[float], values: Sequence[float]) -> dict:
    """Least-squares slope of log(value) on log(K), with its standard error and 95 % interval (Student's t with
    n - 2 degrees of freedom); with two points the slope is exact and its interval unknown (NaN)."""
    points = [(math.log(k), math.log(v)) for k, v in zip(ks, values) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return {"slope": math.nan, "slope_se": math.nan, "slope_low": math.nan, "slope_high": math.nan, "points": len(points)}
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    y = torch.tensor([p[1] for p in points], dtype=torch.float64)
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    if len(points) == 2:
        return {"slope": slope, "slope_se": math.nan, "slope_low": math.nan, "slope_high": math.nan, "points": 2}
    residuals = y - y.mean() - slope * xc
    se = float(((residuals * residuals).sum() / (len(points) - 2) / (xc * xc).sum()).sqrt())
    half = t_quantile_95(len(points) - 2) * se
    return {"slope": slope, "slope_se": se, "slope_low": slope - half, "slope_high": slope + half,
            "points": len(points)}


#: how many of the largest K the large-K slope is fitted on
TAIL = 4


def snr_slopes(rows: Sequence[dict]) -> list[dict]:
    """The fitted slope of log SNR against log K per estimator and group (guide, model): over every K
    (``slope``, ``slope_low``, ``slope_high``) and over the :data:`TAIL` largest (``tail_slope``, ``tail_low``,
    ``tail_high``; NaN with fewer than TAIL values of K)."""
    slopes = []
    for name in dict.fromkeys(row["estimator"] for row in rows):
        measured = [row for row in rows if row["estimator"] == name and "not_applicable" not in row]
        for group in ("guide", "model"):
            points = [(row["num_particles"], row[f"{group}_snr"]) for row in measured if f"{group}_snr" in row]
            if points:
                tail = sorted(points)[-TAIL:] if len(points) >= TAIL else []
                fit = fit_slope([k for k, _ in tail], [v for _, v in tail]) if tail else {}
                slopes.append({"estimator": name, "group": group,
                               **fit_slope([k for k, _ in points], [v for _, v in points]),
                               "tail_slope": fit.get("slope", math.nan), "tail_low": fit.get("slope_low", math.nan),
                               "tail_high": fit.get("slope_high", math.nan)})
    return slopes
