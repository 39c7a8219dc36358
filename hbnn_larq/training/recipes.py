"""Named weight-binarization recipes: `train.py --quantizer NAME`, the benchmarks and the tests.

Every comparison runs through the same code path: a recipe name gives the kernel quantizer, the
kernel constraint and whether the model needs `RiemannianOptimizer` (it has points to train).

| name | kernel quantizer | kernel constraint | points' step | latent LR |
|---|---|---|---|---|
| `ste_sign` | `ste_sign` (identity STE clipped at 1) | `weight_clip` (1) | - | 10 |
| `sign-normalized` | `NormalizedSign()`: sign(w~ / ||w~||) per layer, identity STE | none | - | 100 |
| `hbnn` | `HyperbolicSign(r=0.05)` (ball) | none | 100 | 10 |
| `hbnn-boundary` | `HyperbolicSign(r=0.01, boundary=True)` | none | 100 | 10 |
| `ir_net` | `IRNetSign()` (balanced weights, power-of-two scale, EDE gradient) | none | - | 1 |
| `ir_net+hbnn` | `HyperbolicSign(r=0.05, base=IRNetSign())` | none | 1 | 1 |
| `recu` | `ReCUSign()` (standardize, clamp at the Laplace τ-quantile, learned α) | none | - | 1 |
| `recu+hbnn` | `HyperbolicSign(r=0.05, base=ReCUSign())` | none | 1 | 1 |

IR-Net and ReCU re-standardize every filter in the forward pass, so a latent-kernel clip would
only starve gradients: neither reference clips its weights, and neither do these recipes. Their
schedules (EDE `t`, ReCU `τ`) need the `hbnn_larq.QuantizerSchedule` callback. The points' step
is the quantizer's own (`HyperbolicSign.resolved_point_lr_multiplier`: 1 when the base
re-standardises every filter, else 100), so a bare `RiemannianOptimizer` trains every recipe with it.

`sign-normalized` is the point-free limit of `hbnn-boundary` (its map with the point at the
origin): the baseline that tells whether HBNN's gain comes from the hyperbolic geometry or from
the normalised, scale-invariant latent kernel. Its gradient is 1/||w~|| times sign/STE's, so its
latent step lives at larger multipliers (x100 corresponds to the ∂D control row at r = 0.01, x10).

The latent LR column is the default multiplier of the latent binary kernels' learning rate
(`TrainConfig.latent_lr_multiplier=None`): x10 for `ste_sign` and `hbnn`, the best of the latent
steps swept on the quick benchmark protocol (`benchmarks/accuracy.py`; see `docs/results.md`),
and for `hbnn-boundary`, measured at it; recipes whose latent step has not been swept keep the
papers' x1. Pass `--latent-lr-multiplier 1` for the papers' recipe.

`hbnn-boundary` (the paper's HBNN(∂D)) uses r = 0.01 instead of the paper's r = 1, the radius that
measured best for the boundary at HBNN's tuned steps (see `docs/results.md`, "Radius
ablation"). Pass `--radius 1 --latent-lr-multiplier 1 --point-lr-multiplier 1` for the paper's
∂D recipe.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from hbnn_larq.ir_net import IRNetSign
from hbnn_larq.normalized_sign import NormalizedSign
from hbnn_larq.quantizers import HyperbolicSign
from hbnn_larq.recu import ReCUSign
from hbnn_larq.utils import check_choice


class Recipe(NamedTuple):
    make_quantizer: Callable  # make_quantizer(**options) -> a fresh kernel quantizer
    kernel_constraint: object  # of the latent kernel, or None
    hyperbolic: bool  # has Poincaré-ball points (needs RiemannianOptimizer)
    latent_lr_multiplier: float  # default learning-rate multiplier of the latent binary kernels


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, make_quantizer, kernel_constraint=None, hyperbolic: bool = False,
                    latent_lr_multiplier: float = 1.0):
    """Register a recipe: `make_quantizer(**options)` returns a fresh kernel quantizer."""
    _RECIPES[name] = Recipe(make_quantizer, kernel_constraint, hyperbolic, latent_lr_multiplier)


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def _lookup(name: str) -> Recipe:
    check_choice("quantizer", name, recipe_names())
    return _RECIPES[name]


def kernel_quantizer(name: str, **options):
    """A fresh kernel quantizer for recipe `name`; `options` go to `HyperbolicSign` for HBNN
    recipes (e.g. `r`, `cluster_size`, `selection`, `grouping`) and are ignored otherwise."""
    recipe = _lookup(name)
    return recipe.make_quantizer(**options) if recipe.hyperbolic else recipe.make_quantizer()


def kernel_constraint(name: str):
    """The latent-kernel constraint of recipe `name` (e.g. `"weight_clip"`), or None."""
    return _lookup(name).kernel_constraint


def is_hyperbolic(name: str) -> bool:
    """Whether recipe `name` has Poincaré-ball points (train it with `RiemannianOptimizer`)."""
    return _lookup(name).hyperbolic


def point_lr_multiplier(name: str) -> float | None:
    """The points' step multiplier recipe `name` trains with by default (its quantizer's
    `resolved_point_lr_multiplier`), or None if it has no points."""
    return kernel_quantizer(name).resolved_point_lr_multiplier if is_hyperbolic(name) else None


def latent_lr_multiplier(name: str) -> float:
    """The learning-rate multiplier of latent binary kernels recipe `name` trains with by default."""
    return _lookup(name).latent_lr_multiplier


def _hbnn(**options):
    return HyperbolicSign(**{"r": 0.05, **options})


def _hbnn_boundary(**options):
    return HyperbolicSign(**{"r": 0.01, "boundary": True, **options})


def _hbnn_with(make_base):
    """An HBNN recipe whose constrained weight is binarized by a fresh `make_base()` quantizer."""

    def make(**options):
        if "base" in options:
            raise ValueError("`base` is fixed by the recipe; use recipe 'hbnn' to choose another base.")
        return HyperbolicSign(**{"r": 0.05, **options, "base": make_base()})

    return make


# x10: see the module docstring.
register_recipe("ste_sign", lambda: "ste_sign", kernel_constraint="weight_clip", latent_lr_multiplier=10.0)
register_recipe("sign-normalized", NormalizedSign, latent_lr_multiplier=100.0)
register_recipe("hbnn", _hbnn, hyperbolic=True, latent_lr_multiplier=10.0)
register_recipe("hbnn-boundary", _hbnn_boundary, hyperbolic=True, latent_lr_multiplier=10.0)
register_recipe("ir_net", IRNetSign)
register_recipe("ir_net+hbnn", _hbnn_with(IRNetSign), hyperbolic=True)
register_recipe("recu", ReCUSign)
register_recipe("recu+hbnn", _hbnn_with(ReCUSign), hyperbolic=True)
