"""The figures of ``reverie analyze``: each function draws one analysis's results as a matplotlib Figure.

Drawn on matplotlib's Agg canvas directly (never ``pyplot``), so they work
headless and leave an interactive user's backend alone; nothing is written
to disk here (the report writer, :mod:`.html`, renders, saves and embeds them).
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from reverie.analysis.modes import ImaginedModes
from reverie.analysis.spectral import SpectrumSummary

__all__ = ["checkpoints", "fidelity", "fourier", "open_loop", "projection", "render", "spectrum"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def render(fig, fmt: str = "png") -> bytes:
    """The figure as ``png`` or ``svg`` bytes (dense scatters stay rasterised in the SVG)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def _positive(y) -> bool:
    y = np.asarray(y, dtype=np.float64)
    return bool(np.all(y[np.isfinite(y)] > 0)) and np.isfinite(y).any()


def open_loop(r) -> Figure:
    """Error against the horizon: observations (MSE or PSNR), reward/value MSE, continuation, latent distance."""
    panels = []
    if r.obs_mse:
        panels.append("obs")
    if r.reward_mse is not None or r.value_mse is not None:
        panels.append("heads")
    if r.cont_brier is not None:
        panels.append("cont")
    panels.append("latent")
    fig = _figure(3.4 * len(panels), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    h = r.horizon
    for ax, panel in zip(axes, panels):
        if panel == "obs":
            for k, mse in r.obs_mse.items():
                ax.plot(h, mse, marker=".", label=f"{k} MSE")
            if all(_positive(v) for v in r.obs_mse.values()):
                ax.set_yscale("log")
            ax.set_title("observations")
            if r.psnr:
                twin = ax.twinx()
                for k, p in r.psnr.items():
                    twin.plot(h, p, color="tab:red", ls="--", label=f"{k} PSNR")
                twin.set_ylabel("PSNR (dB)")
        elif panel == "heads":
            if r.reward_mse is not None:
                ax.plot(h, r.reward_mse, marker=".", label="reward MSE")
            if r.value_mse is not None:
                ax.plot(h, r.value_mse, marker=".", label="value MSE")
            ax.set_title("reward / value")
            ys = [y for y in (r.reward_mse, r.value_mse) if y is not None]
            if all(_positive(y) for y in ys):
                ax.set_yscale("log")
        elif panel == "cont":
            ax.plot(h, r.cont_pred_mean, label="mean predicted")
            ax.plot(h, r.cont_real_mean, label="mean real")
            ax.plot(h, r.cont_brier, label="Brier score")
            ax.set_ylim(-0.05, 1.05)
            ax.set_title("continuation")
        else:
            ax.plot(h, r.latent_distance_relative, marker=".", color="tab:purple", label="imagined vs filtered")
            ax.set_title("latent distance (relative)")
        ax.set_xlabel("imagined steps h")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _unit_circle(ax) -> None:
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), color="gray", lw=0.8)
    ax.set_aspect("equal")
    ax.set_xlabel("Re lambda")
    ax.set_ylabel("Im lambda")


def _modes_panel(ax, m: ImaginedModes) -> None:
    """DMD eigenvalues of the imagined trajectories, marker area by energy, the dominant pair in red."""
    d = m.dmd
    lam = d.eigenvalues
    _unit_circle(ax)
    ax.scatter(lam.real, lam.imag, s=20 + 400 * d.energy, alpha=0.6, color="tab:blue")
    if d.dominant is not None:
        dom = lam[d.dominant]
        ax.scatter([dom.real, dom.real], [dom.imag, -dom.imag], s=60, color="tab:red",
                   label=f"dominant: period {d.dominant_period:.3g} {d.unit}")
        ax.legend(fontsize="small", loc="lower left")
    reach = max(1.2, float(np.abs(lam).max()) * 1.05) if lam.size else 1.2
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_title(f"{m.method} (rank {d.rank}, area = energy)", fontsize="medium")


def spectrum(s: SpectrumSummary | None, m: ImaginedModes | None = None) -> Figure:
    """The DMD eigenvalues of the imagined trajectories ``m`` (when given), then the Jacobians' eigenvalues
    on the complex plane, the spectral radius per state and the dominant periods (when ``s`` is given)."""
    panels = (["modes"] if m is not None else []) + (["eig", "radius", "period"] if s is not None else [])
    fig = _figure(3.7 * len(panels), 3.4)
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0]))
    if m is not None:
        _modes_panel(axes["modes"], m)
    if s is None:
        return fig
    ax, ax2, ax3 = axes["eig"], axes["radius"], axes["period"]
    lam = s.eigenvalues.ravel()
    if lam.size > 20000:
        lam = lam[np.random.default_rng(0).choice(lam.size, 20000, replace=False)]
    _unit_circle(ax)
    ax.scatter(lam.real, lam.imag, s=3, alpha=0.2, color="tab:blue", rasterized=True)
    dom = s.dominant_pair[np.isfinite(s.dominant_pair)]
    if dom.size:
        ax.scatter(dom.real, dom.imag, s=5, alpha=0.4, color="tab:red", label="dominant pair", rasterized=True)
        ax.legend(fontsize="small", loc="lower left")
    reach = max(1.5, float(np.quantile(np.abs(lam), 0.99)) * 1.05) if lam.size else 1.5
    reach = min(reach, 3.0)   # a few far outliers would squash the unit circle: they are counted instead
    outside = int((np.abs(lam) > reach).sum())
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_title("eigenvalues of the latent Jacobians" + (f" ({outside} beyond the frame)" if outside else ""),
                 fontsize="medium")
    radius = s.spectral_radius
    top = max(1.1, float(np.quantile(radius, 0.99))) if radius.size else 1.1
    ax2.hist(np.clip(radius, None, top), bins=30, color="tab:blue")
    ax2.axvline(1.0, color="gray", ls="--")
    ax2.set_title("spectral radius per state")
    period = s.dominant_period[np.isfinite(s.dominant_period)]
    if period.size:
        wide = period.max() > 10 * period.min()     # periods over decades: log axis, else a plain one
        bins = np.geomspace(period.min(), period.max(), 30) if wide else 30
        ax3.hist(period, bins=bins, color="tab:red")
        if wide:
            ax3.set_xscale("log")
        ax3.axvline(float(np.median(period)), color="black", ls="--", label=f"median {np.median(period):.3g}")
    if m is not None and m.dmd.dominant is not None and np.isfinite(m.dmd.dominant_period):
        ax3.axvline(m.dmd.dominant_period, color="tab:green", lw=2, label=f"DMD {m.dmd.dominant_period:.3g}")
    if ax3.get_legend_handles_labels()[0]:
        ax3.legend(fontsize="small")
    ax3.set_title(f"period of the largest complex pair ({s.unit})", fontsize="medium")
    for a in (ax2, ax3):
        a.grid(alpha=0.3)
    return fig


def fourier(c, unit: str) -> Figure:
    """Power spectra of real, predicted and error trajectories (summed over dimensions), error per band."""
    fig = _figure(10, 3.4)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    f = c.freqs
    for psd, label in ((c.real_psd, "real"), (c.pred_psd, "predicted"), (c.error_psd, "error (pred - real)")):
        ax.plot(f[1:], psd.sum(1)[1:], label=label)
    if all(_positive(p.sum(1)[1:]) for p in (c.real_psd, c.pred_psd, c.error_psd)):
        ax.set_yscale("log")
    for e in c.band_edges[1:-1]:
        ax.axvline(e, color="gray", ls=":", lw=0.8)
    ax.set_xlabel(f"frequency ({unit})")
    ax.set_ylabel("power spectral density")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    labels = [f"{lo:.2g}-{hi:.2g}" for lo, hi in zip(c.band_edges[:-1], c.band_edges[1:])]
    ax2.bar(labels, np.nan_to_num(c.relative_error_total), color="tab:orange")
    ax2.set_title("error / signal power per band")
    ax2.set_xlabel(f"band ({unit})")
    ax2.grid(alpha=0.3, axis="y")
    return fig


def projection(d, r2: dict, eps: float) -> Figure:
    """Distortion against k with the JL formula's eps, and R^2 of targets from projected features."""
    fig = _figure(10, 3.4)
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(d.ks, d.max_distortion, marker=".", label="max over pairs")
    ax.plot(d.ks, d.quantiles["q90"], marker=".", label="90th percentile")
    ax.plot(d.ks, d.mean_distortion, marker=".", label="mean")
    jl = np.where(np.isfinite(d.jl_eps), d.jl_eps, np.nan)
    ax.plot(d.ks, jl, color="black", ls="--", label="JL formula's eps at k")
    ax.axhline(eps, color="gray", ls=":", label=f"eps = {eps:g}")
    ax.axvline(d.n_features, color="tab:green", ls=":", label=f"feature size {d.n_features}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("target dimension k")
    ax.set_ylabel("| ||P dx||^2 / ||dx||^2 - 1 |")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    for name, rep in r2.items():
        line, = ax2.plot(rep.ks, rep.r2, marker=".", label=f"{name}")
        ax2.axhline(rep.full_r2, color=line.get_color(), ls="--", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_xlabel("target dimension k")
    ax2.set_ylabel("held-out R^2 (dashed: all features)")
    if r2:
        ax2.legend(fontsize="small")
    ax2.grid(alpha=0.3)
    return fig


def checkpoints(order, radius: list, mse: list) -> Figure:
    """Relative error per frequency band and spectral radius against the checkpoint's step."""
    panels = (["bands"] if order is not None else []) + (["radius"] if radius else [])
    panels = panels or ["empty"]
    fig = _figure(5 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if panel == "bands":
            for b in range(order.relative_error.shape[1]):
                lo, hi = order.band_edges[b], order.band_edges[b + 1]
                ax.plot(order.steps, order.relative_error[:, b], marker="o", label=f"band {lo:.2g}-{hi:.2g}")
            ax.axhline(order.threshold, color="gray", ls=":", label=f"threshold {order.threshold:g}")
            if _positive(order.relative_error):
                ax.set_yscale("log")
            ax.set_title("error / signal power per band")
        elif panel == "radius":
            steps = [s for s, *_ in radius]
            ax.plot(steps, [m for _, m, _, _ in radius], marker="o", label="median")
            ax.fill_between(steps, [lo for _, _, lo, _ in radius], [hi for *_, hi in radius], alpha=0.2,
                            label="5-95 %")
            ax.axhline(1.0, color="gray", ls="--")
            ax.set_title("spectral radius at visited states")
        else:
            ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
        ax.set_xlabel("checkpoint step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def fidelity(policies: tuple[str, ...], dream: np.ndarray, real: np.ndarray, what: str) -> Figure:
    """Dream against real mean ``what`` (return or length) of each policy, with the diagonal."""
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot()
    lo = float(min(dream.min(), real.min()))
    hi = float(max(dream.max(), real.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.7", lw=1, label="dream = reality")
    ax.scatter(real, dream, color="C0", zorder=3)
    for name, x, y in zip(policies, real, dream):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"real mean {what}")
    ax.set_ylabel(f"dream mean {what}")
    ax.set_title(f"Each policy's {what}: dream against reality", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig
