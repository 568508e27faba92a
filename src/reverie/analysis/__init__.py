"""Tools for looking inside trained world models: plots, dream videos, reports.

The modules here are pure computations (open loop, spectral, DMD and imagined modes, Fourier,
projection), plus the plots and dream videos; the report of ``reverie analyze``, the part that opens
runs and writes files, is the subpackage :mod:`reverie.analysis.report` (not imported here).
"""

from reverie.analysis.dmd import DMDResult, dmd, hankel
from reverie.analysis.fourier import (
    BandLearningOrder,
    SpectrumComparison,
    band_power,
    compare_spectra,
    default_band_edges,
    learning_order,
    power_spectrum,
)
from reverie.analysis.modes import ImaginedModes, imagined_modes
from reverie.analysis.open_loop import OpenLoopReport, open_loop_error
from reverie.analysis.plots import plot_dream_vectors, plot_learning_curve, write_dream_video
from reverie.analysis.projection import (
    DistortionReport,
    PlanningKeepReport,
    ProjectedModel,
    RidgeReport,
    fit_projected_model,
    jl_eps,
    projected_model_r2,
    projection_distortion,
    projection_r2,
)
from reverie.analysis.spectral import (
    SpectrumSummary,
    analyze_matrix,
    analyze_transition,
    effective_rank,
    eigen_timescales,
    jacobians,
    model_spectrum,
)

__all__ = [
    "BandLearningOrder", "DMDResult", "DistortionReport", "ImaginedModes", "OpenLoopReport", "PlanningKeepReport",
    "ProjectedModel", "RidgeReport", "SpectrumComparison", "SpectrumSummary", "analyze_matrix", "analyze_transition",
    "band_power", "compare_spectra", "default_band_edges", "dmd", "effective_rank", "eigen_timescales",
    "fit_projected_model", "hankel", "imagined_modes", "jacobians", "jl_eps", "learning_order", "model_spectrum",
    "open_loop_error", "plot_dream_vectors", "plot_learning_curve", "power_spectrum", "projected_model_r2",
    "projection_distortion", "projection_r2", "write_dream_video",
]
