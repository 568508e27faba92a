"""The report of ``reverie analyze``: the shell around the pure analyses of :mod:`reverie.analysis`.

The computations (open loop, spectral, DMD, Fourier, projection) are pure functions one level up; this
package is the part that touches the world, kept apart so that the pure part stays pure:

- :mod:`.run`: opens a run (through a :class:`RunAccess` the caller hands in, so ``reverie.analysis``
  never imports ``reverie.training``), plays episodes in the run's environment, reads the environment's
  declared ``timing`` and ``obs_names``, and times the stages;
- :mod:`.sections`, :mod:`.dynamics`, :mod:`.over_training`: one :class:`Section` per analysis (numbers,
  a plain sentence, a figure), built from data in memory; :mod:`.dynamics` also makes the headline;
- :mod:`.figures`: the matplotlib figures (Agg, nothing written);
- :mod:`.html`: writes ``analysis.json``, the figures and one self-contained HTML page (or two runs side
  by side).
"""

from reverie.analysis.report.html import write_compare, write_report
from reverie.analysis.report.run import (
    ANALYSES,
    AnalyzeError,
    RunAccess,
    RunAnalysis,
    Section,
    StageProgress,
    analyze_run,
    check_inputs,
)

__all__ = ["ANALYSES", "AnalyzeError", "RunAccess", "RunAnalysis", "Section", "StageProgress", "analyze_run",
           "check_inputs", "write_compare", "write_report"]
