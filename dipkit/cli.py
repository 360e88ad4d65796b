"""The constants dataclass is the command line.

Every field of a script's constants dataclass becomes an option of the same name (`--tv_weight 0.01`); the
comment at the end of the field's line is its help text. A class attribute `QUICK` (a dict) holds the preset that
`--quick` applies before any explicit option, so `--quick --upper_iterations 5` runs the quick preset with five
upper iterations. A class attribute `LIMITS` maps every numeric constant to the interval it must lie in, written
as in mathematics ("[0, 1)", "(0, inf)", "[1, inf)"); a tuple's every entry must lie in it. Bad input raises
`RunError`, which `run_main` reports as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import math
import re
import sys
import textwrap
import tokenize
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints


class RunError(Exception):
    """A problem the user can fix (a missing file, a bad setting, a diverging run): one line, exit code 2."""


def field_comments(cls: type) -> dict[str, str]:
    """Map each dataclass field to the `# comment` that ends the line where it is defined."""
    source = textwrap.dedent(inspect.getsource(cls))
    first_name: dict[int, str] = {}
    comment: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.NAME and row not in first_name:
            first_name[row] = token.string
        elif token.type == tokenize.COMMENT:
            comment[row] = token.string.lstrip("#").strip()
    fields = {f.name for f in dataclasses.fields(cls)}
    return {first_name[row]: text for row, text in comment.items() if first_name.get(row) in fields}


def _argument_options(hint: Any) -> dict[str, Any]:
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    if get_origin(hint) is tuple:
        return {"type": get_args(hint)[0], "nargs": "+"}
    return {"type": hint}


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints the usage too; one line is enough
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def require_positive(config: Any, *names: str) -> None:
    """A RunError naming the first of these constants that is not positive."""
    for name in names:
        if not getattr(config, name) > 0:
            raise RunError(f"{name} must be positive, not {getattr(config, name)}")


_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])$")


def in_interval(value: float, interval: str) -> bool:
    """Whether `value` lies in an interval written "[a, b)", "(0, inf)", ... (a NaN never does)."""
    match = _INTERVAL.match(interval)
    if not match:
        raise ValueError(f"not an interval: {interval!r}")
    opening, low, high, closing = match.groups()
    low, high = float(low), float(high)
    if math.isnan(value):
        return False
    above = value >= low if opening == "[" else value > low
    below = value <= high if closing == "]" else value < high
    return above and below


def numeric_fields(cls: type) -> list[str]:
    """The constants that are numbers or tuples of numbers (booleans are not): those LIMITS must cover."""
    def numeric(hint: Any) -> bool:
        if get_origin(hint) is tuple:
            return numeric(get_args(hint)[0])
        return hint in (int, float)

    hints = get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if numeric(hints[f.name])]


def check_limits(config: Any) -> None:
    """A RunError naming the first constant outside its interval in the class's LIMITS."""
    for name, interval in getattr(type(config), "LIMITS", {}).items():
        value = getattr(config, name)
        for entry in value if isinstance(value, tuple) else (value,):
            if not in_interval(entry, interval):
                raise RunError(f"{name} must be in {interval}, not {entry}")


def make_config(cls: type, **overrides: Any):
    """The defaults, then the class's QUICK preset if `quick=True`, then the explicit overrides; every constant
    is checked against the class's LIMITS."""
    values = dict(getattr(cls, "QUICK", {})) if overrides.get("quick", False) else {}
    values.update(overrides)
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise RunError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    check_limits(config)
    return config


def parse_config(cls: type, argv: list[str] | None = None, description: str | None = None):
    """Build `cls` from the command line (`argv`, default sys.argv[1:]); `--help` lists every field."""
    parser = _OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        parser.add_argument(
            f"--{field.name}",
            dest=field.name,
            default=argparse.SUPPRESS,
            help=f"{comments.get(field.name, '')} (default: {field.default!r})".replace("%", "%%"),  # argparse formats help
            **_argument_options(hints[field.name]),
        )
    return make_config(cls, **vars(parser.parse_args(argv)))


def run_main(main: Callable[[], Any]) -> None:
    """Call `main()`; a RunError or a non-finite solver state becomes one line on stderr and exit code 2."""
    try:
        main()
    except (RunError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
