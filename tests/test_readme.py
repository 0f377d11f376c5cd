"""The README's configuration table documents every VersaTuneConfig field and every strategy."""

import dataclasses
import pathlib

from versatune_hf import STRATEGIES, VersaTuneConfig

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_config_field_is_documented():
    for field in dataclasses.fields(VersaTuneConfig):
        assert f"| `{field.name}` |" in README, f"README's configuration table lacks `{field.name}`"


def test_every_strategy_is_documented():
    for name in STRATEGIES:
        assert f"| `{name}`" in README, f"README's strategy table lacks `{name}`"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    commands = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(commands) == 2
    assert "versatune demo" in commands[0]
    ci_script = (pathlib.Path(__file__).parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci_script.splitlines()
