"""`VersaTuneArguments`: every `VersaTuneConfig` field as a command-line flag and YAML key of a `TrlParser` script.

Generated from `VersaTuneConfig`, so a new config field is a new flag without a second copy to keep in step. Each
flag is the field's name with a `versatune_` prefix (so `seed` cannot collide with `TrainingArguments.seed`):
`--versatune_strategy`, `--versatune_eta`, `--versatune_reference_losses`, ... Dict fields take a JSON object or the
path of a JSON file (in a `--config` YAML file also a mapping); `--versatune_strategy` lists its choices.

```python
parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig, VersaTuneArguments))
script_args, training_args, model_args, versatune_args = parser.parse_args_and_config()
...
trainer = SFTTrainer(..., callbacks=[versatune_args.callback(train_dataset=dataset["train"])])
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import TYPE_CHECKING, Any

from .config import VersaTuneConfig
from .mixing.initial_weights import read_domain_values, read_reference_losses
from .mixing.strategies import STRATEGIES

if TYPE_CHECKING:
    from .integrations.callback import VersaTuneCallback

PREFIX = "versatune_"

DICT_FIELD_HELP = {
    "initial_weights": "'uniform', 'proportional', a JSON object {domain: weight} or the path of a JSON file of "
    "shares (a `versatune detect` result).",
    "reference_losses": "Per-domain reference eval losses: a JSON object {domain: loss}, the path of a JSON file "
    "(plain or under 'reference_losses'), or the versatune_history.jsonl of a finished proxy run (its last "
    "evaluation's losses).",
}


def _flag_field(config_field: dataclasses.Field, annotation: Any) -> tuple[str, Any, dataclasses.Field]:
    """The `versatune_`-prefixed field of `VersaTuneArguments` for one config field."""
    metadata = dict(config_field.metadata)
    if config_field.name in DICT_FIELD_HELP:  # argparse cannot type a dict: a JSON text or a path instead
        annotation = str | None if config_field.default is None else str
        metadata["help"] = DICT_FIELD_HELP[config_field.name]
    if config_field.name == "strategy":
        metadata["choices"] = sorted(STRATEGIES)
    return (
        f"{PREFIX}{config_field.name}",
        annotation,
        dataclasses.field(default=config_field.default, metadata=metadata),
    )


def _domain_values(value: Any, field_name: str, key: str) -> Any:
    """A dict field's flag value as the config wants it: a mapping stays, JSON text is parsed, a file path is read
    (`initial_weights` keeps its path and names: the config reads them itself)."""
    if value is None or isinstance(value, dict):
        return value
    text = str(value).strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--{PREFIX}{field_name} {text!r} is not a valid JSON object: {error}.") from error
    if field_name == "initial_weights":
        return text
    if not os.path.isfile(text):
        raise ValueError(
            f"--{PREFIX}{field_name} {text!r} is neither a JSON object nor an existing JSON file. Pass e.g. "
            f'\'{{"law": 1.2, "code": 0.9}}\' or refs.json.'
        )
    return read_reference_losses(text) if field_name == "reference_losses" else read_domain_values(text, key)


def to_config(self: Any) -> VersaTuneConfig:
    """The `VersaTuneConfig` these flags describe."""
    values = {name.removeprefix(PREFIX): value for name, value in dataclasses.asdict(self).items()}
    values["initial_weights"] = _domain_values(values["initial_weights"], "initial_weights", "shares")
    values["reference_losses"] = _domain_values(values["reference_losses"], "reference_losses", "reference_losses")
    return VersaTuneConfig(**values)


def callback(self: Any, **kwargs: Any) -> VersaTuneCallback:
    """A `VersaTuneCallback` with these options; keyword arguments (e.g. `train_dataset=`) go to the callback."""
    from .integrations.callback import VersaTuneCallback

    return VersaTuneCallback(config=self.to_config(), **kwargs)


_CONFIG_TYPES = typing.get_type_hints(VersaTuneConfig)

VersaTuneArguments = dataclasses.make_dataclass(
    "VersaTuneArguments",
    [_flag_field(field, _CONFIG_TYPES[field.name]) for field in dataclasses.fields(VersaTuneConfig)],
    namespace={"to_config": to_config, "callback": callback, "__module__": __name__},
)
VersaTuneArguments.__doc__ = (
    "Every `VersaTuneConfig` field as a `--versatune_<field>` flag of `TrlParser`/`HfArgumentParser` (and a key of "
    "a `--config` YAML file). `to_config()` gives the `VersaTuneConfig`, `callback(**kwargs)` the "
    "`VersaTuneCallback`."
)
