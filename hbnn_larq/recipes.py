"""Named weight-binarization recipes shared by the zoo, `train.py` and the benchmarks.

Every comparison runs through the same code path: a recipe name gives the kernel quantizer, the
kernel constraint and whether the model needs `RiemannianOptimizer` (it has points to train).

| name | kernel quantizer | kernel constraint |
|---|---|---|
| `ste_sign` | `ste_sign` (identity STE clipped at 1) | `weight_clip` (1) |
| `hbnn` | `HyperbolicSign(r=0.05)` (ball) | none |
| `hbnn-boundary` | `HyperbolicSign(r=1, boundary=True)` | none |
"""

from __future__ import annotations

from hbnn_larq.quantizers import HyperbolicSign

# name -> (factory(**options) -> kernel quantizer, kernel constraint, has points)
_RECIPES: dict = {}


def register_recipe(name: str, make_quantizer, kernel_constraint=None, hyperbolic: bool = False):
    """Register a recipe: `make_quantizer(**options)` returns a fresh kernel quantizer."""
    _RECIPES[name] = (make_quantizer, kernel_constraint, hyperbolic)


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def _lookup(name: str):
    if name not in _RECIPES:
        raise ValueError(f"`quantizer` must be one of {', '.join(recipe_names())}; got {name!r}.")
    return _RECIPES[name]


def kernel_quantizer(name: str, **options):
    """A fresh kernel quantizer for recipe `name`; `options` go to `HyperbolicSign` for HBNN
    recipes (e.g. `r`, `cluster_size`, `selection`, `grouping`) and are ignored otherwise."""
    make, _, hyperbolic = _lookup(name)
    return make(**options) if hyperbolic else make()


def kernel_constraint(name: str):
    """The latent-kernel constraint of recipe `name` (e.g. `"weight_clip"`), or None."""
    return _lookup(name)[1]


def is_hyperbolic(name: str) -> bool:
    """Whether recipe `name` has Poincaré-ball points (train it with `RiemannianOptimizer`)."""
    return _lookup(name)[2]


def _hbnn(**options):
    return HyperbolicSign(**{"r": 0.05, **options})


def _hbnn_boundary(**options):
    return HyperbolicSign(**{"r": 1.0, "boundary": True, **options})


register_recipe("ste_sign", lambda: "ste_sign", kernel_constraint="weight_clip")
register_recipe("hbnn", _hbnn, hyperbolic=True)
register_recipe("hbnn-boundary", _hbnn_boundary, hyperbolic=True)
