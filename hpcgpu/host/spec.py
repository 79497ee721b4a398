"""The job spec: safe YAML loading, errors that name the key path and line, overrides, the schema.

The models themselves are in hpcgpu.host.spec_models and re-exported here. A spec that loads is
valid; nothing later re-checks it. Torch-free (the CLI imports this).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpcgpu.contract.errors import UserError
from hpcgpu.contract.specview import RESOLVED_HEADER
from hpcgpu.host.secrets import SECRET_ENV_VARIABLE, marked_names, redact
from hpcgpu.host.spec_models import (DEFAULT_SPEC_FILE, DEMO_TASK, Checkpoint, Container, Debug, Distributed,  # noqa: F401
                                     Entry, Logging, Resources, Slurm, Spec, Train, _Model)

# ---------------------------------------------------------------- loading


#: bounds on loading a spec: far above any real spec, far below what exhausts a login node
MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_NODES = 20_000


class _SafeLineLoader(yaml.SafeLoader):
    """SafeLoader (no Python object tags) that rejects duplicate keys, anchors and aliases (a few
    hundred bytes of nested aliases expand to gigabytes: "billion laughs"), and more than
    MAX_SPEC_NODES values."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "YAML anchors and aliases (&name, *name) are not allowed in a spec", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_SPEC_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_SPEC_NODES} values: a spec is far smaller", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _SafeLineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SafeLineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple) to its 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                sub = path + (k.value,)
                lines[sub] = k.start_mark.line + 1
                walk(v, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    try:
        root = yaml.compose(text, Loader=_SafeLineLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _format_errors(err: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    out = [f"{source}: invalid spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        # pydantic puts union branch names in loc (e.g. 'int', "literal['all']"); drop them
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("int", "str", "bool"))))
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f" (line {line})" if line else ""
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; see `hpcgpu spec schema` for the allowed keys"
        if e["type"] == "int_parsing_size":  # pydantic's words for a number past 64 bits: say the range
            msg = _range_text(loc)
        out.append(f"  {key}{where}: {msg}")
    return "\n".join(out)


def _range_text(loc: tuple) -> str:
    """`Input should be less than or equal to N`, the words of every other range error, for the field at loc."""
    model, field = Spec, None
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            break
        model = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, _Model) else None
        if model is None:
            break
    highest = next((m.le for m in getattr(field, "metadata", ()) if getattr(m, "le", None) is not None), None)
    return f"Input should be less than or equal to {highest}" if highest is not None else "Input should be a smaller number"


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate YAML text; raise UserError naming each bad key path and line."""
    if len(text) > MAX_SPEC_BYTES:
        raise UserError(f"{source}: {len(text)} characters: a spec may have at most {MAX_SPEC_BYTES} (1 MiB)",
                        hint="put data in files the task reads, not in the spec")
    try:
        data = yaml.load(text, Loader=_SafeLineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f": line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        hint = ("hpcgpu loads YAML safely: Python object tags (!!python/...) are refused" if "tag" in problem
                else "write the value out where the alias stood" if "alias" in problem else None)
        raise UserError(f"{source}{where}: not valid YAML: {problem}", hint=hint) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a mapping of keys (name:, entry:, ...), got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise UserError(
            _format_errors(e, source, _key_lines(text)),
            hint="`hpcgpu spec schema` prints every key with its type; docs/spec.md explains them",
        ) from None


def load_spec(path: str | Path | None) -> tuple[Spec, str]:
    """Load the spec at path; with None, `./hpcgpu.yaml` if present, else the bundled demo.

    Returns the spec and where it came from (a path, or "<bundled demo>").
    """
    if path is None:
        if Path(DEFAULT_SPEC_FILE).is_file():
            path = DEFAULT_SPEC_FILE
        else:
            return Spec(name="demo"), "<bundled demo>"
    p = Path(path)
    if not p.is_file():
        raise UserError(f"spec file {str(p)!r} not found", hint="pass -f PATH, or run `hpcgpu init` to write one")
    if p.stat().st_size > MAX_SPEC_BYTES:  # before reading it: a 50 MB file would take minutes
        raise UserError(f"spec file {str(p)!r} is {p.stat().st_size} bytes: a spec may have at most "
                        f"{MAX_SPEC_BYTES} (1 MiB)", hint="is this the spec? data belongs in files the task reads")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"spec file {str(p)!r} is not UTF-8 text: byte {e.start} (line {line}) is {raw[e.start]:#04x}",
                        hint="save the spec as UTF-8") from None
    return parse_spec(text, str(p)), str(p)


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (what nodes and ranks read); secret `env:` values (host.secrets)
    are written as <redacted> (they reach the ranks through the environment, never a file)."""
    return RESOLVED_HEADER + yaml.safe_dump(resolved_data(spec), sort_keys=False)


def resolved_data(spec: Spec) -> dict[str, Any]:
    """The spec as plain JSON data, secret env values REDACTED: what spec.yaml and plan.json hold."""
    data = spec.model_dump(mode="json")
    data["env"] = redact(data["env"], spec.secret_env)
    if data.get("sweep") is None:
        del data["sweep"]  # one run (or one task of a sweep): nothing to record, nothing for the ranks
    return data


def _attribute_docs(cls: type) -> dict[str, str]:
    """{field: docstring} for the string literal right after each `field: type = ...` of a model."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def json_schema() -> dict:
    """The spec's JSON Schema, each property described by its field's docstring."""
    schema = Spec.model_json_schema()
    for cls in _Model.__subclasses__():
        target = schema if cls is Spec else schema.get("$defs", {}).get(cls.__name__)
        for name, doc in _attribute_docs(cls).items() if target else ():
            if name in target.get("properties", {}):
                target["properties"][name]["description"] = doc
    return schema


def spec_schema() -> str:
    """JSON Schema of the spec, for editors (yaml-language-server) and docs."""
    return json.dumps(json_schema(), indent=2, sort_keys=True)


#: HPCGPU_* variables that override the spec (and are overridden by flags): name -> dotted key
ENV_OVERRIDES: dict[str, str] = {
    "HPCGPU_NAME": "name",
    "HPCGPU_NODES": "resources.nodes",
    "HPCGPU_GPUS_PER_NODE": "resources.gpus_per_node",
    "HPCGPU_NPROC": "resources.procs_per_node",
    "HPCGPU_MAX_RESTARTS": "distributed.max_restarts",
    "HPCGPU_BACKEND": "distributed.backend",
    "HPCGPU_PARTITION": "slurm.partition",
    "HPCGPU_ACCOUNT": "slurm.account",
    "HPCGPU_QOS": "slurm.qos",
    "HPCGPU_LOG_DIR": "logging.dir",
}


#: list keys an override adds to rather than replaces: HPCGPU_SECRET_ENV=A on top of a spec's
#: `secret_env: [B]` must not unmark B (its value would then be written)
ADDITIVE_KEYS = frozenset({"secret_env"})


class _EnvOverrides(dict):
    """Overrides read from HPCGPU_* variables: errors name the variables, not "command-line options"."""

    variables: tuple[str, ...] = ()


def env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """The spec overrides given by HPCGPU_* variables (values are coerced by validation);
    HPCGPU_SECRET_ENV's names are added to the spec's secret_env."""
    found = _EnvOverrides({key: environ[name] for name, key in ENV_OVERRIDES.items() if environ.get(name)})
    found.variables = tuple(name for name in ENV_OVERRIDES if environ.get(name))
    if marked_names(environ):
        found["secret_env"] = list(marked_names(environ))
        found.variables += (SECRET_ENV_VARIABLE,)
    return found


#: the longest `--set KEY=VALUE` value read (a value, not a data file)
MAX_SET_VALUE = 4096


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--set train.lr=3e-4 --set entry.args=[--x,1]` -> {"train.lr": 3e-4, ...}: the value is read
    as a YAML scalar or flow list/mapping (safely), and validated with the whole spec afterwards, so
    an unknown key or a wrong type is named there. Raises UserError for a malformed item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with a dotted spec key, e.g. --set train.lr=3e-4",
                            hint="the keys are listed in docs/spec.md (`hpcgpu spec show` prints every one)")
        if len(text) > MAX_SET_VALUE:
            raise UserError(f"--set {key}: the value has {len(text)} characters, more than {MAX_SET_VALUE}")
        try:
            value = yaml.load(text, Loader=_SafeLineLoader) if text.strip() else ""  # no aliases: bounded
        except yaml.YAMLError as e:
            raise UserError(f"--set {key}: {text!r} is not a YAML value ({str(e).splitlines()[0]})",
                            hint="quote it for your shell, e.g. --set 'entry.args=[--lr, \"3\"]'") from None
        out[key] = value
    return out


def apply_overrides(spec: Spec, overrides: dict[str, Any]) -> Spec:
    """Return a new validated spec with dotted-key overrides (e.g. {'resources.nodes': 2}) applied."""
    data = spec.model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if dotted in ADDITIVE_KEYS and isinstance(node.get(last), list) and isinstance(value, list):
            value = node[last] + [v for v in value if v not in node[last]]
        node[last] = value
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        source = "command-line options"
        if isinstance(overrides, _EnvOverrides):
            source = f"environment variables ({', '.join(overrides.variables)})"
        raise UserError(_format_errors(e, source, {})) from None
