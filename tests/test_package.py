"""The package as a user meets it: the public names, imports that stay light, the command line, optional extras."""

import subprocess
import sys

import pytest

import versatune_hf
from versatune_hf.cli import main
from versatune_hf.utils import plots

from utils import SUBPROCESS_TIMEOUT

PUBLIC = [
    "STRATEGIES",
    "UpdateParams",
    "VersaTuneArguments",
    "VersaTuneCallback",
    "VersaTuneConfig",
    "VersaTuneSFTTrainer",
    "WeightUpdate",
    "WeightedDomainSampler",
    "WeightedDomainStream",
    "compute_update",
]


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=True
    )


def test_public_names_are_importable_from_the_top_level():
    assert sorted(versatune_hf.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(versatune_hf, name) is not None
    assert versatune_hf.VersaTuneCallback.__module__ == "versatune_hf.integrations.callback"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(versatune_hf, "Nope")  # noqa: B009


def test_the_mixing_layer_imports_without_torch_or_transformers():
    heavy = run_python(
        "import sys, versatune_hf.mixing as m\n"
        "m.compute_update('versatune', {'a': .5, 'b': .5}, {'a': 1., 'b': 2.}, None, None, m.UpdateParams())\n"
        "print(sorted(n for n in ('torch', 'transformers', 'trl') if n in sys.modules))"
    )
    assert heavy.stdout.strip() == "[]"


def test_versatune_help_lists_the_commands_without_loading_torch():
    result = run_python(
        "import sys; from versatune_hf.cli import main; code = main(['--help']); "
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    assert "demo " in result.stdout and "detect " in result.stdout and "detect-plot" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "0 False False"


def test_an_unknown_command_is_named():
    result = subprocess.run(
        [sys.executable, "-m", "versatune_hf", "demos"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert result.returncode == 2 and "unknown command 'demos'" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--strategy", "bogus"], "argument --strategy: invalid choice: 'bogus' (choose from"),
        (["--compare", "uniform,bogus"], "--compare names unknown strategies ['bogus']; choose from: dbl,"),
    ],
)
def test_a_bad_strategy_is_an_argparse_error_before_any_training(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *flags])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: versatune demo") and message in error


def test_plots_without_matplotlib_say_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'versatune-hf\[plots\]'"):
        plots.plot_shares({"model": {"law": 1.0}}, "unused.png")


def test_every_bundled_data_file_is_declared_package_data():
    """A wheel install (not editable) must carry the demo corpus and the pretrained base: setup.cfg's globs say so."""
    import configparser
    import fnmatch
    from pathlib import Path

    root = Path(versatune_hf.__file__).parent
    config = configparser.ConfigParser()
    config.read(root.parent / "setup.cfg")
    globs = [pattern.strip() for pattern in config["options.package_data"]["versatune_hf"].split(",")]
    files = [path.relative_to(root).as_posix() for path in (root / "data").rglob("*") if path.is_file()]
    assert any(name.startswith("data/base/") for name in files)
    undeclared = [name for name in files if not any(fnmatch.fnmatch(name, pattern) for pattern in globs)]
    assert not undeclared, f"add these to [options.package_data] in setup.cfg: {undeclared}"
