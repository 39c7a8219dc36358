"""The benchmark scripts' train.py commands are valid configurations that mean what their rows say."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
import accuracy  # noqa: E402
import train  # noqa: E402
import zoo_weights  # noqa: E402


def _config(cmd):
    assert cmd[1].endswith("train.py")
    return train.parse_config(cmd[2:]).validate()


@pytest.mark.parametrize("protocol", sorted(accuracy.PROTOCOLS))
def test_every_row_is_a_valid_config_with_the_latent_step_it_names(protocol):
    for row, (_, flags) in accuracy.rows_for(protocol).items():
        config = _config(accuracy.command(protocol, row, seed=1))
        assert config.seed == 1 and config.run_dir.endswith(f"{protocol}/{row}-s1")
        # rows that name no latent step measure the papers' x1, whatever the recipes' default
        named = flags[flags.index("--latent-lr-multiplier") + 1] if "--latent-lr-multiplier" in flags else "1"
        assert config.resolved_latent_lr_multiplier() == float(named), row
        assert (f"-wlr{named}" in row) == (named != "1"), row


@pytest.mark.parametrize("model", sorted(zoo_weights.EPOCHS))
def test_zoo_weights_train_the_full_width_cifar_model_with_the_defaults(model):
    config = _config(zoo_weights.command(model))
    assert (config.model, config.dataset, config.width, config.variant) == (model, "cifar10", 1.0, None)
    assert config.resolved_latent_lr_multiplier() == train.recipes.latent_lr_multiplier("hbnn")
    assert config.resolved_point_lr_multiplier() == train.recipes.point_lr_multiplier("hbnn")
