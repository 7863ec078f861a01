"""Reference plugin, in Python: the `Name` tag of each instance from a pattern, as the Rust
naming plugin (plugins/naming) makes it.

Config (`[plugins.config.NAME]`): `pattern`, default `{env}-{role}-{index:02}`, with the
placeholders {project} {env} {role} {index} {count} {region}; numbers take a zero-padded
width as in `{index:02}`. A config error is raised as Err([...]); heet reports it at the
config's place. print() would trap: there is no stdout in the sandbox.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports

DEFAULT_PATTERN = "{env}-{role}-{index:02}"
FIELDS = ("project", "env", "role", "index", "count", "region")
NUMBERS = ("index", "count")
PLACEHOLDER = re.compile(r"\{([a-z]+)(?::0([0-9]))?\}")

pattern = DEFAULT_PATTERN


def check(p):
    """The errors of a pattern, in the SDK's words where it has them."""
    errors = []
    for m in PLACEHOLDER.finditer(p):
        field, width = m.group(1), m.group(2)
        if field not in FIELDS:
            errors.append(f"unknown placeholder {{{field}}}: use one of " + ", ".join("{" + f + "}" for f in FIELDS))
        elif width is not None and field not in NUMBERS:
            errors.append(f"{{{field}}} is not a number: only {{index}} and {{count}} take a width")
    if "{" in PLACEHOLDER.sub("", p) or "}" in PLACEHOLDER.sub("", p):
        errors.append(f"pattern {p!r} has an unclosed or malformed placeholder")
    return errors


def render(p, ctx):
    def field(m):
        name, width = m.group(1), m.group(2)
        value = getattr(ctx, name)
        if width is not None:
            return str(value).zfill(int(width))
        return str(value)

    return PLACEHOLDER.sub(field, p)


class Configure(exports.Configure):
    def configure(self, config_json: str) -> None:
        global pattern
        config = json.loads(config_json)
        errors = [f"unknown field `{k}`, expected `pattern`" for k in config if k != "pattern"]
        p = config.get("pattern", DEFAULT_PATTERN)
        if not isinstance(p, str):
            errors.append("pattern must be a string")
        else:
            errors.extend(check(p))
        if errors:
            raise Err(errors)
        pattern = p


class Naming(exports.Naming):
    def name(self, ctx, current: str):
        return render(pattern, ctx)
