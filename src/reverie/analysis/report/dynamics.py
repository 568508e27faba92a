"""The spectral section of ``reverie analyze`` and the report's headline: how the learned dynamics oscillate.

Two methods, both shown, each named:

- **DMD of the model's free-running imagination** (:mod:`reverie.analysis.modes`): observable DMD of
  the decoded observations for a model with a decoder, latent DMD of its features otherwise. It finds
  the oscillation that carries the most of the imagined motion, in seconds;
- **the latent spectrum** (:mod:`reverie.analysis.spectral`): the eigenvalues of the learned
  transition's Jacobian at the visited states. Its largest complex pair is often a direction of a large
  latent that the observations never show, so its period need not be the system's.

The headline is DMD's dominant oscillation when DMD found one, else the latent spectrum's median
dominant pair; it always says which.
"""

from __future__ import annotations

import numpy as np
import torch

from reverie.analysis import spectral
from reverie.analysis.modes import ImaginedModes, imagined_modes
from reverie.analysis.report import figures as figs
from reverie.analysis.report.sections import TITLES, Section, _fmt, seeded
from reverie.analysis.spectral import SpectrumSummary
from reverie.models.base import TRANSITION, State, WorldModel, has

__all__ = ["headline", "spectral_section"]

LATENT_SPECTRUM = "latent spectrum"


def headline(modes: ImaginedModes | None, s: SpectrumSummary | None, dt: float | None) -> dict:
    """The report's one-line answer to "how does the learned system oscillate": method, period, decay rate
    (per second, or per step without ``dt``), and the sentence that says it."""
    unit = "s" if dt is not None else "steps"
    rate_unit = "/s" if dt is not None else "/step"
    if modes is not None and modes.dmd.dominant is not None:
        d = modes.dmd
        period, rate = d.dominant_period, d.dominant_decay_rate
        verb = "decays" if rate < 0 else "grows"
        text = (f"Dominant oscillation: period {_fmt(period)} {unit}, {verb} at {_fmt(abs(rate))} {rate_unit} "
                f"({modes.method} of the {modes.signal} the model imagines freely from {modes.n_states} visited "
                f"states; {100 * d.dominant_energy:.0f}% of the imagined motion, one-step fit residual "
                f"{_fmt(d.residual, 2)}).")
        out = {"method": modes.method, "period": period, "decay_rate": rate, "energy": d.dominant_energy}
    elif s is not None and np.isfinite(s.summary()["median_dominant_period"]):
        summ = s.summary()
        period = summ["median_dominant_period"]
        rate = float(np.nanmedian(np.log(np.abs(s.dominant_pair))) / (dt or 1.0))
        text = (f"Dominant oscillation: period {_fmt(period)} {unit} ({LATENT_SPECTRUM}: the largest complex "
                "eigenvalue pair of the learned transition's Jacobian, median over the visited states; "
                "DMD of the imagined trajectories found no oscillation).")
        out = {"method": LATENT_SPECTRUM, "period": period, "decay_rate": rate, "energy": None}
    else:
        return {"method": None, "period": None, "decay_rate": None, "energy": None, "unit": unit,
                "text": "No oscillation found: neither DMD of the imagined trajectories nor the latent "
                        "spectrum has a complex eigenvalue pair."}
    if modes is not None and modes.dmd.dominant is not None and s is not None:
        latent = s.summary()["median_dominant_period"]
        if np.isfinite(latent):
            text += f" The {LATENT_SPECTRUM}'s largest complex pair has a median period of {_fmt(latent)} {unit}."
    return {**out, "unit": unit, "text": text}


def _modes_facts(m: ImaginedModes, dt: float | None) -> dict:
    d = m.dmd
    unit, rate_unit = ("s", "/s") if dt is not None else ("steps", "/step")
    facts = {"DMD method": f"{m.method} of the {m.signal}",
             "imagined": f"{m.n_states} start states x {m.horizon} steps, action {m.held}",
             "DMD rank / delays / one-step fit residual": f"{d.rank} / {d.delays} / {_fmt(d.residual)}"}
    if d.dominant is None:
        facts["DMD dominant oscillation"] = "none (every eigenvalue is real)"
        return facts
    rate = d.dominant_decay_rate
    efold = f" (e-folding {_fmt(-1 / rate)} {unit})" if rate < 0 else ""
    facts["DMD dominant oscillation: period"] = f"{_fmt(d.dominant_period)} {unit}"
    facts["DMD dominant oscillation: decay rate"] = f"{_fmt(rate)} {rate_unit}{efold}"
    facts["DMD dominant oscillation: share of the energy"] = _fmt(d.dominant_energy)
    facts["DMD dominant oscillation: moves most"] = ", ".join(m.names[i] for i in d.dominant_dims())
    others = [i for i in range(d.rank) if i != d.dominant and d.eigenvalues[i].imag > 0][:3]
    if others:
        facts["next oscillations (period, energy)"] = "; ".join(
            f"{_fmt(d.period[i])} {unit}, {_fmt(d.energy[i], 2)}" for i in others)
    return facts


def _spectrum_facts(s: SpectrumSummary) -> dict:
    summ = s.summary()
    unit = "s" if s.dt is not None else "steps"
    r = summ["spectral_radius"]
    return {"latent size D": str(s.dim), "states": str(summ["n_states"]),
            "spectral radius (median, q05-q95)": f"{_fmt(r['median'], 4)} ({_fmt(r['q05'], 4)}-{_fmt(r['q95'], 4)})",
            "fraction of eigenvalues with |lambda| >= 1": _fmt(summ["fraction_unstable"]),
            "latent spectrum: largest complex pair's period (median)":
                f"{_fmt(summ['median_dominant_period'])} {unit}",
            "median Jacobian effective rank": _fmt(summ["median_jacobian_effective_rank"]),
            "visited states' effective rank": _fmt(summ["state_effective_rank"]),
            "collapsed": "yes: " + summ["collapse_reason"] if s.collapsed else "no"}


def spectral_section(model: WorldModel, state: State, action: np.ndarray, dt: float | None,
                     device: torch.device | str, names: tuple[str, ...] | None = None, horizon: int = 64,
                     seed: int = 0) -> Section:
    """DMD of ``horizon`` free-running imagined steps from the visited ``state [N]`` and the Jacobian spectrum
    there, with ``action [N, A]`` the model-space actions taken next; ``names`` of the vector observations'
    dimensions (sorted keys), for saying where the dominant oscillation moves."""
    act = torch.as_tensor(action, device=device, dtype=torch.float32)
    modes, why_not = None, ""
    try:
        with seeded(device, seed):
            modes = imagined_modes(model, state, act, horizon=horizon, dt=dt, names=names)
    except (ValueError, np.linalg.LinAlgError) as err:
        why_not = f"DMD of the imagined trajectories failed: {err}"
    s = spectral.model_spectrum(model, state, act, dt=dt) if has(model, TRANSITION) else None
    if modes is None and s is None:
        return Section("spectral", TITLES["spectral"], False,
                       f"Not available: {why_not}; and the model ({type(model).__name__}) has no 'transition' "
                       "capability, so its prior step cannot be linearised.")
    head = headline(modes, s, dt)
    facts: dict = {}
    data: dict = {"headline": head}
    text = head["text"] if modes is not None else f"{head['text']} ({why_not}.)"
    if modes is not None:
        facts.update(_modes_facts(modes, dt))
        data["dmd"] = modes.summary()
        text += (" DMD fits one linear map to the model's own imagination (started at visited states, the "
                 "action held) and finds the oscillations that carry the imagined motion.")
    if s is not None:
        facts.update(_spectrum_facts(s))
        data.update(s.summary())
        data["dominant_period"] = s.dominant_period.tolist()
        data["spectral_radius_per_state"] = s.spectral_radius.tolist()
        text += (" The latent spectrum: eigenvalues of the learned transition's Jacobian at the visited states; "
                 "inside the unit circle a perturbation decays, on it it persists, and complex pairs rotate, "
                 "in directions the observations may never show.")
    else:
        text += (f" No latent spectrum: the model ({type(model).__name__}) has no 'transition' capability, so "
                 "its prior step cannot be linearised.")
    return Section("spectral", TITLES["spectral"], True, text, facts, {"spectral": figs.spectrum(s, modes)}, data)
