"""The constants dataclass is the command line (parsed by tyro).

Every field of a script's constants dataclass becomes an option of the same name (`--tv_weight 0.01`, booleans as
`--progress` / `--no-progress`, tuples as `--seeds 0 1 2`, Literal fields as choices, Optional ones accept None);
the comment at the end of the field's line is its help text. A class attribute `QUICK` (a dict) holds the preset that
`--quick` applies before any explicit option, so `--quick --upper_iterations 5` runs the quick preset with five
upper iterations. A class attribute `LIMITS` maps every numeric constant to the interval it must lie in, written
as in mathematics ("[0, 1)", "(0, inf)", "[1, inf)"); a tuple's every entry must lie in it. A Config made from
shared constants (dipkit.engine.RunConstants, ...) takes their QUICK and LIMITS too. Bad input raises
`RunError`, which `run_main` reports as one line with exit code 2. A tuple constant lists distinct values (a seed or
an image given twice is refused, never run or counted twice); `run_name` must be one plain folder name and `device`
one this collection runs on, both checked here, before anything is read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable


from .errors import RunError  # noqa: F401  (the scripts import it from here)


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


def class_dicts(cls: type, name: str) -> dict[str, Any]:
    """The class attribute `name` (a dict: LIMITS, QUICK) of `cls` and of every class it is made from, merged, the
    class's own entries last (so they win)."""
    merged: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        merged.update(vars(base).get(name, {}))
    return merged


def check_limits(config: Any) -> None:
    """A RunError naming the first constant outside its interval in the LIMITS of the class and of those it is
    made from (None, where a constant is optional, means "not set" and is not checked)."""
    for name, interval in class_dicts(type(config), "LIMITS").items():
        value = getattr(config, name)
        for entry in value if isinstance(value, tuple) else () if value is None else (value,):
            if not in_interval(entry, interval):
                raise RunError(f"{name} must be in {interval}, not {entry}")


def check_choices(config: Any) -> None:
    """A RunError naming the first constant typed Literal[...] (a choice) whose value is not one of its choices (the
    command line refuses them too; this also covers configs made in Python)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        hint = hints.get(f.name)
        if typing.get_origin(hint) is typing.Literal and getattr(config, f.name) not in typing.get_args(hint):
            choices = ", ".join(str(choice) for choice in typing.get_args(hint))
            raise RunError(f"{f.name} must be one of {choices}, not {getattr(config, f.name)!r}")


def check_distinct(config: Any) -> None:
    """A RunError naming the first tuple constant that lists a value twice (seeds, images, variants, ...)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, tuple):
            repeated = [entry for i, entry in enumerate(value) if entry in value[:i]]
            if repeated:
                raise RunError(f"{f.name} lists {repeated[0]!r} twice; give each value once")


def check_common(config: Any) -> None:
    """The constants every script shares: `run_name` one plain folder name (and given, to resume), `device` one the
    scripts run on."""
    from .device import check_device_name  # torch is imported only once a config is built
    from .runs import check_run_name

    if hasattr(config, "run_name"):
        check_run_name(config.run_name)
        if getattr(config, "resume", False) and not config.run_name:
            raise RunError("resume needs the run_name of the run to go on with")
    if hasattr(config, "device"):
        check_device_name(config.device)


def make_config(cls: type, **overrides: Any):
    """The defaults, then the QUICK presets of the class (and of those it is made from) if `quick=True`, then the
    explicit overrides; every constant is checked against the LIMITS, tuples for repeated values, run_name and
    device (check_common)."""
    values = class_dicts(cls, "QUICK") if overrides.get("quick", False) else {}
    values.update(overrides)
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise RunError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    check_limits(config)
    check_choices(config)
    check_distinct(config)
    check_common(config)
    return config


def _one_line(box: str) -> str:
    """tyro's framed error message as one line: the frame, the title and the pointer to --help dropped."""
    lines = [line.strip(" │╭╮╰╯─\t") for line in box.splitlines()]
    kept = [line for line in lines[1:] if line and not line.startswith("For full helptext")]
    text = " ".join(" ".join(kept).split()) or " ".join(" ".join(lines).split())
    return text.split(" Argument helptext:")[0]


def parse_config(cls: type, argv: list[str] | None = None, description: str | None = None):
    """Build `cls` from the command line (`argv`, default sys.argv[1:]) with tyro: every field is an option of the
    same name (`--lr_image 0.01`, `--no-progress`), `--help` lists them with their comments and defaults. The
    QUICK preset is the starting point when `--quick` is given, so explicit options win over it. A bad option is
    one line on stderr and exit code 2, as every other bad input."""
    import tyro  # the command line only: scripts imported as modules never need it

    argv = sys.argv[1:] if argv is None else list(argv)
    start = make_config(cls, **({"quick": True} if "--quick" in argv else {}))
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            config = tyro.cli(cls, args=argv, default=start, description=description, use_underscores=True)
    except SystemExit as stop:
        if stop.code:
            prog = Path(sys.argv[0]).name
            print(f"{prog}: error: {_one_line(errors.getvalue())} (see --help)", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    return make_config(cls, **dataclasses.asdict(config))


def run_main(main: Callable[[], Any]) -> None:
    """Call `main()`; a RunError or a non-finite solver state becomes one line on stderr and exit code 2; Ctrl-C
    one line saying what was kept and how to go on, and exit code 130 (as a shell reports SIGINT)."""
    code = 0
    try:
        main()
    except (RunError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        from .runs import interrupted_line

        print(f"\n{interrupted_line()}", file=sys.stderr)
        code = 130
    if code:  # raised here, once the error and the frames it holds (a process pool's queues among them) are freed
        gc.collect()
        raise SystemExit(code)
