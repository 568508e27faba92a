"""Tools for looking inside trained world models: plots, dream videos, reports."""

from reverie.analysis.plots import plot_dream_vectors, plot_learning_curve, write_dream_video

__all__ = ["plot_dream_vectors", "plot_learning_curve", "write_dream_video"]
