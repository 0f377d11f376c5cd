"""VersaTuneConfig validation and round trips; resolving the initial_weights option."""

import copy
import json
import math
import pickle

import pytest

from versatune_hf import VersaTuneConfig
from versatune_hf.initial_weights import resolve_initial_weights

SIZES = {"law": 100, "code": 300}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"strategy": "magic"}, "strategy"),
        ({"eta": 0.0}, "eta"),
        ({"eta": math.nan}, "eta"),
        ({"forgetting_weight": -1.0}, "forgetting_weight"),
        ({"min_weight": 1.0}, "min_weight"),
        ({"max_weight_change": 0.0}, "max_weight_change"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"target_max_weight": 1.5}, "target_max_weight"),
        ({"strategy": "expansion"}, "target_domain"),
        ({"seed": -1}, "seed"),
        ({"switch_delay_steps": 0}, "switch_delay_steps"),
        ({"initial_weights": {"law": -0.1, "code": 1.1}}, "initial_weights"),
        ({"initial_weights": {"law": math.nan, "code": 1.0}}, "initial_weights"),
        ({"reference_losses": {"law": -1.0}}, "reference_losses"),
    ],
)
def test_invalid_fields_name_themselves(kwargs, field):
    with pytest.raises(ValueError, match=field):
        VersaTuneConfig(**kwargs)


def test_round_trips_through_dict_json_copy_and_pickle():
    config = VersaTuneConfig(
        strategy="expansion",
        target_domain="law",
        initial_weights={"law": 0.5, "code": 0.5},
        reference_losses={"law": 1.0},
        max_weight_change=0.1,
        seed=3,
    )
    data = config.to_dict()
    assert data["config_version"] == 1
    assert VersaTuneConfig.from_dict(data) == config
    assert VersaTuneConfig.from_dict(json.loads(json.dumps(data))) == config
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config


def test_unknown_keys_from_a_newer_version_are_ignored_with_a_warning(caplog):
    config = VersaTuneConfig.from_dict({**VersaTuneConfig(eta=2.0).to_dict(), "future_option": 1, "config_version": 9})
    assert config.eta == 2.0
    assert "future_option" in caplog.text


def test_update_params_copy_the_strategy_fields():
    params = VersaTuneConfig(eta=2.0, forgetting_weight=0.5, min_weight=0.02, smoothing=0.1).update_params()
    assert (params.eta, params.forgetting_weight, params.min_weight, params.smoothing) == (2.0, 0.5, 0.02, 0.1)


def test_named_and_dict_initial_weights():
    assert resolve_initial_weights("uniform", SIZES) == {"law": 0.5, "code": 0.5}
    assert resolve_initial_weights("proportional", SIZES) == {"law": 0.25, "code": 0.75}
    assert resolve_initial_weights({"law": 1, "code": 3}, SIZES) == {"law": 0.25, "code": 0.75}


@pytest.mark.parametrize("content", [{"shares": {"law": 0.2, "code": 0.8}}, {"law": 0.2, "code": 0.8}])
def test_shares_files_in_both_formats(tmp_path, content):
    path = tmp_path / "detect.json"
    path.write_text(json.dumps(content))
    assert resolve_initial_weights(str(path), SIZES) == pytest.approx({"law": 0.2, "code": 0.8})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"law": 0.5, "code": 0.3, "finance": 0.2}, r"not in the train set: \['finance'\]"),
        ({"law": 1.0}, r"no weight for train domains \['code'\]"),
        ({"law": -1.0, "code": 2.0}, "negative"),
        ({"law": 0.0, "code": 0.0}, "sums to 0"),
        ("not-a-file.json", "neither 'uniform', 'proportional', a dict, nor an existing JSON file"),
    ],
)
def test_bad_initial_weights_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_initial_weights(spec, SIZES)


def test_a_file_without_shares_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"shares": "law"}))
    with pytest.raises(ValueError, match="does not hold per-domain shares"):
        resolve_initial_weights(str(path), SIZES)
