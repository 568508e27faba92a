"""Layers, distributions and transforms shared by every model family."""

from reverie.nn.distributions import (Bernoulli, BoundedNormal, ImageBernoulli, ImageMSE, OneHotDist, SymlogMSE,
                                      TanhNormal, TwoHotDist, categorical_kl)
from reverie.nn.functional import lambda_returns, polyak_update, simnorm, symexp, symlog, symlog_bins, twohot
from reverie.nn.layers import (MLP, ChannelNorm, ConvDecoder, ConvEncoder, GRUCell, ResidualBlock, ResidualTower,
                               SimNorm)
from reverie.nn.grid import GridDecoder, GridEncoder, needs_grid_codec
from reverie.nn.unet import UNet

__all__ = [
    "Bernoulli", "BoundedNormal", "ChannelNorm", "ConvDecoder", "ConvEncoder", "GRUCell", "GridDecoder", "GridEncoder",
    "ImageBernoulli", "ImageMSE", "MLP", "OneHotDist", "ResidualBlock", "ResidualTower", "SimNorm", "SymlogMSE",
    "TanhNormal", "TwoHotDist", "categorical_kl", "lambda_returns", "needs_grid_codec", "polyak_update", "simnorm",
    "symexp", "symlog", "symlog_bins", "twohot",
]
