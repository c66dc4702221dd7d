"""defaults.py is the one home of the defaults: every user of a default gets the same value."""
from pathlib import Path

from stochastic_shield import defaults as D


def test_observer_names_are_the_ones_quantization_accepts():
    from stochastic_shield.compile.quantization.spec import OBSERVERS, QuantSpec

    assert D.OBSERVERS == OBSERVERS and D.OBSERVER in OBSERVERS
    assert QuantSpec().observer == D.OBSERVER and QuantSpec().calib_images == D.CALIB_IMAGES


def test_the_default_shield_is_one_config_everywhere():
    from stochastic_shield.bench.robustness import RobustnessArgs
    from stochastic_shield.compile.shield import config
    from stochastic_shield.compile.shield.filters import parse_filters
    from stochastic_shield.demo import DemoArgs

    shield = config.parse_shield("default")
    assert shield.filters == parse_filters(D.DEFAULT_FILTER) and [str(s) for s in shield.dropout] == [D.DEFAULT_DROPOUT]
    assert shield.T == D.SHIELD_T == config.ShieldConfig().T
    assert config.parse_shield(DemoArgs().shield) == shield
    r = RobustnessArgs()
    assert config.parse_shield(f"filter={r.filter}; dropout={r.dropout}") == shield
    assert r.T == DemoArgs().robust_T == D.ROBUSTNESS_T


def test_the_shipped_checkpoint_label_round_trips():
    assert D.checkpoint_label(None) == D.SHIPPED_CHECKPOINT
    assert D.checkpoint_from_label(D.checkpoint_label(None)) is None
    assert D.checkpoint_from_label(D.checkpoint_label(Path("m/ckpt.pt"))) == Path("m/ckpt.pt")
