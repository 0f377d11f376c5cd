"""VersaTuneConfig: validation messages, serialisation round trips and the UpdateParams it hands to strategies."""

import copy
import dataclasses
import json
import logging
import math
import pickle
import re

import pytest

from versatune_hf.config import CONFIG_VERSION, VersaTuneConfig
from versatune_hf.mixing import STRATEGIES, UpdateParams


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"strategy": "not-a-strategy"}, "strategy"),
        ({"strategy": "VersaTune"}, "strategy"),
        ({"eta": 0.0}, "eta"),
        ({"eta": -0.5}, "eta"),
        ({"eta": math.nan}, "eta"),
        ({"eta": math.inf}, "eta"),
        ({"min_weight": -0.01}, "min_weight"),
        ({"min_weight": 1.0}, "min_weight"),
        ({"min_weight": 1.5}, "min_weight"),
        ({"max_weight_change": 0.0}, "max_weight_change"),
        ({"max_weight_change": -0.1}, "max_weight_change"),
        ({"max_weight_change": 1.01}, "max_weight_change"),
        ({"smoothing": -0.1}, "smoothing"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"divergence_factor": 1.0}, "divergence_factor"),
        ({"divergence_factor": math.nan}, "divergence_factor"),
        ({"strategy": "expansion"}, "target_domain"),
        ({"seed": -1}, "seed"),
        ({"initial_weights": {"law": -0.2, "code": 1.2}}, "initial_weights"),
        ({"initial_weights": {"law": math.nan, "code": 1.0}}, "initial_weights"),
        ({"initial_weights": {"law": math.inf, "code": 1.0}}, "initial_weights"),
        ({"reference_losses": {"law": -1.0, "code": 0.5}}, "reference_losses"),
        ({"reference_losses": {"law": math.nan}}, "reference_losses"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(kwargs, field):
    """Each invalid option raises ValueError, and the message names the offending field."""
    with pytest.raises(ValueError, match=re.escape(field)):
        VersaTuneConfig(**kwargs)


def test_invalid_dict_values_name_the_domain():
    """A bad initial_weights / reference_losses entry names the domain as well as the field."""
    with pytest.raises(ValueError, match=r"initial_weights\['law'\]"):
        VersaTuneConfig(initial_weights={"code": 0.5, "law": -1.0})
    with pytest.raises(ValueError, match=r"reference_losses\['code'\]"):
        VersaTuneConfig(reference_losses={"law": 1.0, "code": -0.1})


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"eta": 1e-6},
        {"min_weight": 0.0},
        {"min_weight": 0.999},
        {"max_weight_change": 1.0},
        {"max_weight_change": 1e-6},
        {"smoothing": 0.0},
        {"smoothing": 0.999},
        {"seed": 0},
        {"strategy": "expansion", "target_domain": "law"},
        {"initial_weights": {"law": 0.0, "code": 1}},
        {"reference_losses": {"law": 0.0, "code": 2}},
    ],
)
def test_boundary_values_are_accepted(kwargs):
    """Values at the edge of each accepted range do not raise."""
    VersaTuneConfig(**kwargs)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_registered_strategy_is_a_valid_config(strategy):
    """Every name in STRATEGIES is accepted (expansion with its target_domain)."""
    config = VersaTuneConfig(strategy=strategy, target_domain="law")
    assert config.strategy == strategy


def _full_config():
    return VersaTuneConfig(
        domain_column="topic",
        strategy="expansion",
        eta=0.75,
        forgetting_weight=0.5,
        initial_weights={"law": 0.25, "code": 0.75},
        reference_losses={"law": 1.25, "code": 0.5},
        reference_model="some/model",
        target_domain="law",
        target_max_weight=0.8,
        min_weight=0.02,
        max_weight_change=0.1,
        smoothing=0.05,
        divergence_factor=4.0,
        seed=7,
        switch_delay_steps=3,
        history_file="mixture.jsonl",
    )


def test_to_dict_has_every_field_and_the_version():
    """to_dict() holds every dataclass field plus config_version."""
    data = _full_config().to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(VersaTuneConfig)} | {"config_version"}
    assert data["config_version"] == CONFIG_VERSION
    assert data["initial_weights"] == {"law": 0.25, "code": 0.75}


@pytest.mark.parametrize("config", [VersaTuneConfig(), _full_config()], ids=["default", "full"])
def test_round_trips(config):
    """from_dict(to_dict()) reproduces the config, also through JSON text, copy.deepcopy and pickle."""
    assert VersaTuneConfig.from_dict(config.to_dict()) == config
    assert VersaTuneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert copy.deepcopy(config) == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert VersaTuneConfig.from_dict(copy.deepcopy(config.to_dict())) == config
    assert pickle.loads(pickle.dumps(config.to_dict())) == config.to_dict()


def test_round_trip_does_not_share_mutable_state():
    """Changing the dict from to_dict() does not change the config it came from."""
    config = _full_config()
    data = config.to_dict()
    data["initial_weights"]["law"] = 0.9
    assert config.initial_weights == {"law": 0.25, "code": 0.75}


def test_from_dict_ignores_unknown_keys(versatune_messages):
    """A newer version's extra field is ignored (with a warning naming it) and the known fields survive."""
    data = _full_config().to_dict()
    data["field_from_the_future"] = 123
    data["config_version"] = CONFIG_VERSION + 1
    config = VersaTuneConfig.from_dict(data)
    assert config == _full_config()
    assert not hasattr(config, "field_from_the_future")
    assert "field_from_the_future" in versatune_messages(logging.WARNING)


def test_from_dict_without_version_and_with_partial_fields():
    """An old dict with no config_version and only some fields gets defaults for the rest."""
    config = VersaTuneConfig.from_dict({"strategy": "uniform", "eta": 2.0})
    assert config.strategy == "uniform" and config.eta == 2.0
    assert config.min_weight == VersaTuneConfig().min_weight


def test_from_dict_still_validates():
    """from_dict goes through __post_init__: an invalid saved value raises ValueError naming the field."""
    data = VersaTuneConfig().to_dict()
    data["eta"] = -1.0
    with pytest.raises(ValueError, match="eta"):
        VersaTuneConfig.from_dict(data)


def test_update_params_copies_the_strategy_fields():
    """update_params() carries eta, forgetting_weight, target_domain, target_max_weight and the four guards."""
    params = _full_config().update_params()
    assert isinstance(params, UpdateParams)
    assert params == UpdateParams(
        eta=0.75,
        forgetting_weight=0.5,
        target_domain="law",
        target_max_weight=0.8,
        min_weight=0.02,
        max_weight_change=0.1,
        smoothing=0.05,
        divergence_factor=4.0,
    )


def test_update_params_defaults():
    """Default config → UpdateParams with the config's defaults (note min_weight 0.01, not UpdateParams' 0)."""
    params = VersaTuneConfig().update_params()
    assert params == UpdateParams(
        eta=1.0,
        forgetting_weight=0.0,
        target_domain=None,
        target_max_weight=0.9,
        min_weight=0.01,
        max_weight_change=None,
        smoothing=0.0,
        divergence_factor=10.0,
    )


def test_booleans_are_not_weights_or_losses():
    with pytest.raises(ValueError, match="initial_weights"):
        VersaTuneConfig(initial_weights={"law": True, "code": 1.0})
    with pytest.raises(ValueError, match="reference_losses"):
        VersaTuneConfig(reference_losses={"law": True})
