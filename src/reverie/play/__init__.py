"""``reverie play``: a person plays a trained world model's dream on a local web page.

:mod:`reverie.play.session` holds the dream (no web framework); :mod:`reverie.play.server` is the thin Flask
layer over it (the ``play`` extra installs Flask); :mod:`reverie.play.page` is the page it serves.
"""

from reverie.play.session import PlayError, PlaySession, Side, View

__all__ = ["PlayError", "PlaySession", "Side", "View"]
