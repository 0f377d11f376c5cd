"""resolve_initial_weights (named specs, dicts, JSON share files) and read_reference_losses, with the errors for each
kind of bad input."""

import json
import math

import pytest

from versatune_hf.mixing import read_reference_losses, resolve_initial_weights

SIZES = {"law": 100, "code": 300, "med": 600}


def approx_weights(expected):
    return {name: pytest.approx(value, rel=1e-9, abs=1e-12) for name, value in expected.items()}


def test_uniform():
    """'uniform' gives 1/N to each of the train set's domains."""
    assert resolve_initial_weights("uniform", SIZES) == approx_weights({"law": 1 / 3, "code": 1 / 3, "med": 1 / 3})


def test_proportional_to_domain_sizes():
    """'proportional' gives each domain rows/total rows: 100, 300, 600 of 1000."""
    assert resolve_initial_weights("proportional", SIZES) == approx_weights({"law": 0.1, "code": 0.3, "med": 0.6})


def test_dict_that_sums_to_one_is_kept():
    """A dict over exactly the train domains that sums to 1 comes back unchanged."""
    spec = {"law": 0.2, "code": 0.3, "med": 0.5}
    assert resolve_initial_weights(spec, SIZES) == approx_weights(spec)


def test_dict_is_normalised():
    """A dict that does not sum to 1 is normalised: (1, 3, 4)/8."""
    result = resolve_initial_weights({"law": 1.0, "code": 3.0, "med": 4.0}, SIZES)
    assert result == approx_weights({"law": 0.125, "code": 0.375, "med": 0.5})
    assert list(result) == list(SIZES)  # in the train set's domain order


def test_dict_may_give_zero_to_some_domains():
    """A zero weight is allowed as long as some weight is positive."""
    result = resolve_initial_weights({"law": 0, "code": 2, "med": 2}, SIZES)
    assert result == approx_weights({"law": 0.0, "code": 0.5, "med": 0.5})


def test_json_file_with_shares_key(tmp_path):
    """A detection result {"shares": {...}} (with other keys around it) is read and normalised."""
    path = tmp_path / "detect.json"
    path.write_text(json.dumps({"model": "x", "n": 10, "shares": {"law": 2, "code": 2, "med": 4}}))
    assert resolve_initial_weights(str(path), SIZES) == approx_weights({"law": 0.25, "code": 0.25, "med": 0.5})


def test_json_file_with_plain_mapping(tmp_path):
    """A plain {domain: share} JSON object is accepted too."""
    path = tmp_path / "shares.json"
    path.write_text(json.dumps({"law": 0.1, "code": 0.2, "med": 0.7}))
    assert resolve_initial_weights(str(path), SIZES) == approx_weights({"law": 0.1, "code": 0.2, "med": 0.7})


def test_unknown_domains_are_named():
    """A dict naming a domain the train set lacks raises ValueError naming that domain."""
    with pytest.raises(ValueError, match="biology") as excinfo:
        resolve_initial_weights({"law": 0.2, "code": 0.3, "med": 0.4, "biology": 0.1}, SIZES)
    assert "law" not in str(excinfo.value).split("train set's domains")[0]


def test_missing_domains_are_named():
    """A dict without a weight for a train domain raises ValueError naming the missing domains."""
    with pytest.raises(ValueError) as excinfo:
        resolve_initial_weights({"law": 1.0}, SIZES)
    message = str(excinfo.value)
    assert "code" in message and "med" in message


def test_unknown_and_missing_domains_together():
    """Both problems are reported in one message."""
    with pytest.raises(ValueError) as excinfo:
        resolve_initial_weights({"law": 0.5, "code": 0.5, "bio": 0.1}, SIZES)
    message = str(excinfo.value)
    assert "bio" in message and "med" in message


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_negative_or_nonfinite_values_are_named(bad):
    """A negative or non-finite weight raises ValueError naming the domain that holds it."""
    with pytest.raises(ValueError, match="code"):
        resolve_initial_weights({"law": 0.5, "code": bad, "med": 1.0}, SIZES)


def test_all_zero_raises():
    """All-zero weights cannot be normalised."""
    with pytest.raises(ValueError, match="0"):
        resolve_initial_weights({"law": 0.0, "code": 0.0, "med": 0.0}, SIZES)


def test_unknown_string_that_is_not_a_file(tmp_path):
    """A string that is neither a named spec nor an existing file raises ValueError quoting it."""
    with pytest.raises(ValueError, match="inverse-ish"):
        resolve_initial_weights("inverse-ish", SIZES)
    missing = str(tmp_path / "no_such_file.json")
    with pytest.raises(ValueError, match="no_such_file"):
        resolve_initial_weights(missing, SIZES)


@pytest.mark.parametrize(
    "content",
    [
        [0.2, 0.3, 0.5],
        {"shares": [0.2, 0.3, 0.5]},
        {"shares": {"law": "high", "code": 0.3, "med": 0.5}},
        {"law": "0.2", "code": 0.3, "med": 0.5},
        "law",
        3.5,
    ],
    ids=["list", "shares-list", "shares-string-value", "plain-string-value", "string", "number"],
)
def test_file_with_wrong_structure(tmp_path, content):
    """A JSON file that does not hold {domain: number} (top level or under "shares") raises ValueError."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="shares"):
        resolve_initial_weights(str(path), SIZES)


def test_file_with_wrong_domains_names_them_and_the_file(tmp_path):
    """Domain errors from a file name the domains and the file."""
    path = tmp_path / "other_model.json"
    path.write_text(json.dumps({"shares": {"law": 0.5, "finance": 0.5}}))
    with pytest.raises(ValueError) as excinfo:
        resolve_initial_weights(str(path), SIZES)
    message = str(excinfo.value)
    assert "finance" in message and "code" in message and "med" in message
    assert "other_model.json" in message


def test_file_with_invalid_json(tmp_path):
    """A file that is not JSON at all raises ValueError (json.JSONDecodeError is one)."""
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError):
        resolve_initial_weights(str(path), SIZES)


def test_booleans_are_not_shares(tmp_path):
    """JSON true/false are not numbers here, although Python counts a bool as an int."""
    path = tmp_path / "bools.json"
    path.write_text('{"law": true, "code": false}')
    with pytest.raises(ValueError, match="does not hold per-domain shares"):
        resolve_initial_weights(str(path), {"law": 1, "code": 1})


# --------------------------------------------------------------------------------------------------------------------
# read_reference_losses: a JSON file, or a proxy run's history
# --------------------------------------------------------------------------------------------------------------------


def test_reference_losses_from_a_json_file(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"reference_losses": {"law": 1.5, "code": 0.5}, "how": "a longer run"}))
    assert read_reference_losses(path) == {"law": 1.5, "code": 0.5}


def test_reference_losses_from_a_proxy_runs_history_are_its_last_evaluation(tmp_path):
    """The last line with eval losses wins; odm rounds (rewards, no losses) and a torn last line are skipped."""
    path = tmp_path / "versatune_history.jsonl"
    lines = [
        json.dumps({"step": 50, "losses": {"law": 3.0, "code": 2.0}}),
        json.dumps({"step": 100, "losses": {"law": 2.5, "code": 1.5}}),
        json.dumps({"step": 101, "rewards": {"law": 9.0}}),
        '{"step": 150, "losses": {"law": 2.',
    ]
    path.write_text("\n".join(lines))
    assert read_reference_losses(path) == {"law": 2.5, "code": 1.5}


def test_reference_losses_from_a_history_without_evaluations_say_what_to_pass(tmp_path):
    path = tmp_path / "odm_history.jsonl"
    path.write_text(json.dumps({"step": 1, "rewards": {"law": 1.0}}) + "\n")
    with pytest.raises(ValueError, match="no evaluation with per-domain eval losses.*strategy='uniform'"):
        read_reference_losses(path)


def test_reference_losses_from_a_history_whose_last_evaluation_diverged_name_the_domain(tmp_path):
    path = tmp_path / "versatune_history.jsonl"
    path.write_text(json.dumps({"step": 50, "losses": {"law": None, "code": 2.0}}) + "\n")
    with pytest.raises(ValueError, match=r"no finite eval loss for \['law'\]"):
        read_reference_losses(path)
