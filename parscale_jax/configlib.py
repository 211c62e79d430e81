"""Typed dataclass configs: strict parsing from dicts/YAML and `key=value` overrides.

Every config in the project is a frozen dataclass whose fields carry their types. `from_dict` refuses
unknown keys and wrong types with a message that names the key, so a typo never silently trains the
wrong model.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
import re
import types
import typing
from typing import Any, TypeVar

import yaml

from parscale_jax.errors import UserError


T = TypeVar("T")


class _Loader(yaml.SafeLoader):
  """YAML with 1.2's numbers (`1e-3` is a float; YAML 1.1 reads it as a string), and no key twice
  in one mapping (PyYAML keeps the last silently: a second `model:` would train another model)."""

  def construct_mapping(self, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
      key = self.construct_object(key_node, deep=deep)
      if isinstance(key, typing.Hashable) and key in seen:
        raise DuplicateKeyError(f"key {key!r} appears twice in one mapping", key_node.start_mark)
      seen.add(key)
    return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
  def __init__(self, message: str, mark):
    super().__init__(message)
    self.message, self.problem_mark = message, mark


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
  return yaml.load(text, Loader=_Loader)


class ConfigError(UserError):
  """A config that cannot be used; the message names the offending key."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)
  if tp is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _coerce(value, arg, key)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
  if origin is typing.Literal:
    if value not in args:
      raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    return value
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return from_dict(tp, value, prefix=f"{key}.")
  if origin in (tuple, list):
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{key}: expected a list, got {value!r}")
    item = args[0] if args else Any
    return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
  if origin is dict:
    if not isinstance(value, dict):
      raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return dict(value)
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(f"{key}: expected true/false, got {value!r}")
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      if isinstance(value, float) and value.is_integer():
        return int(value)
      raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value
  return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
  """Builds dataclass `cls` from `data`, refusing unknown keys and wrong types."""
  if not isinstance(data, dict):
    raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {type(data).__name__}")
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
  kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
  try:
    return cls(**kwargs)
  except TypeError as e:  # A required field is missing.
    raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


def check_choices(config: Any, prefix: str = "") -> None:
  """Refuses a value outside a `Literal` field's choices: `from_dict` checks them, a dataclass
  built in Python does not, and an unknown choice would otherwise run some default path."""
  for name, tp in typing.get_type_hints(type(config)).items():
    value = getattr(config, name)
    if typing.get_origin(tp) is typing.Literal and value not in typing.get_args(tp):
      raise ConfigError(f"{prefix}{name}: {value!r} is not one of {list(typing.get_args(tp))}")


def to_dict(config: Any) -> dict[str, Any]:
  out = dataclasses.asdict(config)

  def plain(v):
    if isinstance(v, tuple):
      return [plain(x) for x in v]
    if isinstance(v, dict):
      return {k: plain(x) for k, x in v.items()}
    return v

  return plain(out)


def parse_value(text: str) -> Any:
  """Parses the right-hand side of `--set key=value` as YAML (numbers, bools, lists)."""
  try:
    return yaml_load(text)
  except yaml.YAMLError:
    return text


def set_nested(data: dict[str, Any], dotted_key: str, value: Any) -> None:
  """Sets data[a][b] = value for the key "a.b", creating sections as needed."""
  parts = dotted_key.strip().split(".")
  node = data
  for part in parts[:-1]:
    node = node.setdefault(part, {})
    if not isinstance(node, dict):
      raise ConfigError(f"key '{dotted_key}': '{part}' is not a section")
  node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
  """Applies `a.b=value` overrides to a copy of a nested dict; `from_dict` later refuses unknown
  keys."""
  data = copy.deepcopy(data)
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override '{item}' is not of the form key=value")
    key, text = item.split("=", 1)
    set_nested(data, key, parse_value(text))
  return data


def load_yaml(path: str | Path) -> dict[str, Any]:
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"{path}: no such config file")
  try:
    data = yaml_load(path.read_text())
  except DuplicateKeyError as e:
    raise ConfigError(f"{path}: {e.message} (line {e.problem_mark.line + 1})") from None
  except yaml.YAMLError as e:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    raise ConfigError(f"{path}: malformed YAML{where}") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: expected a mapping at the top level")
  return data


def positive_ints(text: str) -> list[int]:
  """An argparse type: "1,2,4" -> [1, 2, 4]; anything else is a one-line usage error."""
  try:
    values = [int(x) for x in text.split(",")]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of positive integers")
  repeated = sorted({v for v in values if values.count(v) > 1})
  if repeated:
    raise argparse.ArgumentTypeError(f"'{text}' repeats {', '.join(map(str, repeated))}")
  return values


def bounded(kind, ok, what: str):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
    if not ok(value):
      raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
    return value
  parse.__name__ = what  # argparse names the type in its messages.
  return parse


# argparse types: a value out of range is a one-line usage error naming the flag.
positive_int = bounded(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = bounded(int, lambda v: v >= 0, "an integer >= 0")
positive_float = bounded(float, lambda v: v > 0 and v != float("inf"), "a positive number")
fraction = bounded(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def comma_choices(*choices: str):
  """An argparse type: "a,b" -> ["a", "b"], each one of `choices`; else a one-line usage error."""
  def parse(text: str) -> list[str]:
    values = text.split(",")
    unknown = [v for v in values if v not in choices]
    if unknown:
      raise argparse.ArgumentTypeError(f"'{unknown[0]}' is not one of {', '.join(choices)}")
    return values
  return parse
