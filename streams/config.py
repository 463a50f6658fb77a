"""A pipeline written in YAML, compiled into the same ``Pipeline`` a Python module defines.

    pipeline = load_config("pipeline.yaml")

The YAML form covers the common case: call HTTP APIs with values of the event, keep parts of
their answers, write ``{**event, <step results>, <constant fields>}``. Anything else is a Python
function named ``module:function`` (a ``transform``), or a pipeline written in Python. A
complete example, every key shown::

    pipeline: signups-checker              # the name: the consumer group, retry tiers, DLQ
    source: signups                        # the input topic
    sink: signups.checked                  # the output topic
    input_schema: com.example.Signup
    output_schema: com.example.CheckedSignup
    schemas: schemas                       # optional: the schemas folder, relative to this file
                                           # (default: its "schemas" folder when it has one)
    key: record                            # optional: record (events of a Kafka key in order,
                                           # the default) or none (no order kept)
    apis:                                  # optional: the APIs the steps call, by name
      accounts:
        base_url: http://127.0.0.1:8080    # optional: STREAMS_API_ACCOUNTS_URL overrides it
        rate_limit: 200                    # optional: requests/s for the whole consumer group
        timeout: 5                         # optional: seconds per attempt (default 5)
        retries: 3                         # optional: attempts per call, the first included
        max_connections: 256               # optional
        cache: {ttl: 60, max_entries: 10000, stale_if_error: 600, max_ttl: 3600}   # GET answers
        breaker: {failure_rate: 0.5, slow_call_rate: 1.0, slow_call_seconds: 2, window: 100,
                  minimum_calls: 20, open_seconds: 5}
        auth: {oauth2: {client_id: checker, token_url: http://127.0.0.1:8080/oauth/token, scope: read}}
                                           # or {api_key: {header: X-API-Key}}; secrets come from
                                           # STREAMS_API_<NAME>_CLIENT_SECRET / _API_KEY only
        tls: {ca_file: ca.pem, cert_file: client.pem, key_file: client.key}   # relative to this file
        probe: /health                     # optional: what the breaker GETs to learn it is back
      geo: {base_url: http://127.0.0.1:8080, cache: {ttl: 300}}
      scoring: {base_url: http://127.0.0.1:8080}
    steps:                                 # run concurrently unless one refers to another
      account:
        api: accounts
        get: /v1/accounts/{account_id}     # {account_id}: a field of the event (percent-encoded)
        pick: [holder, country, status]    # optional: keep only these fields of the JSON answer
        into: account                      # optional: the output field (default: the step name)
        permanent_on: [409]                # optional: these statuses fail the event at once
      location:
        api: geo
        get: /v1/geo/{ip}
        pick: [country, city, asn]
        into: geo
        required: false                    # optional step: a transient failure (outage, timeout,
        fallback: null                     # open circuit) gives the fallback, output degraded
      score:
        api: scoring
        post: /v1/scores/batch
        body: {signup_id: "{signup_id}", plan: "{plan}", seats: "{seats}",
               country: "{account.country}"}     # {account.country}: waits for step account
        batch: {max_size: 50, linger: 0.01, max_concurrent: 4, items: items, results: results}
        pick: [score, decision]
      checked_at:
        transform: mypackage.stamps:checked_at
    output:                                # optional
      fields: {pipeline: signups-checker}  # constant fields added to every output record
      transform: mypackage.checks:finish   # optional: fn(record, event, results) -> record | None

Keys:

* ``pipeline``, ``source``, ``sink``, ``input_schema``, ``output_schema`` and ``steps`` are
  required. ``apis`` and ``output`` may be left out.
* A step is one of: ``get: <path>`` or ``post: <path>`` (with ``api``, and for ``post`` an
  optional ``body``), or ``transform: module:function``. Every step may have ``into``,
  ``required`` (default true) and, when not required, ``fallback`` (default null). API steps
  may have ``pick`` and ``permanent_on``; ``post`` steps ``batch``.
* Placeholders: ``{name}`` is a field of the event, ``{step.field}`` (or ``{step.a.b}``) a
  field of step ``step``'s result: the step then waits for that one (a field of a null result,
  e.g. an optional step's null fallback, is null). A string that is exactly one placeholder
  keeps the value's type (an int stays an int); inside a longer string a value is written as
  text (null as nothing, booleans as true/false). ``{{`` and ``}}`` are literal braces. Path
  placeholders are percent-encoded; a null one fails the event (permanent). A field the event
  or a result does not have fails the event (permanent).
* ``pick`` keeps those fields of the answer (a JSON object, else the event fails permanently);
  without it the whole answer is kept.
* The API's errors classify as in Python: a 4xx other than 408/429 fails the event at once
  (DLQ), a 5xx, 408, 429, timeout or open circuit is transient (in-call retries, then the
  retry tiers). ``permanent_on`` lists statuses that are transient otherwise but that this step
  treats as permanent (e.g. ``[503]`` for an API that answers 503 to a request it will never
  take); it never makes a permanent status transient.
* ``batch`` (``post`` only; the path has no placeholders) sends up to ``max_size`` events in one
  call after at most ``linger`` seconds, the body being ``{<items>: [{"id": "0", **body}, ...]}``.
  The answer's ``<results>`` list is matched back by ``id``; an entry ``{"id": ..., "error":
  {"status": N}}`` fails only its event (transient for 5xx/408/429 unless in
  ``permanent_on``, else permanent), an item without an entry fails permanently. A result is
  the entry without its ``id`` (then ``pick``).
* ``transform: module:function`` is imported when the file is loaded (from the worker's
  ``sys.path``, e.g. the repository root) and called as ``fn(event, results)``, sync or async,
  ``results`` being the results of the steps above it in the file, by step name (it waits for
  all of them). It may raise ``streams.Permanent`` or ``streams.Transient``.
* The output record is ``{**event, <into of each step>: <its result>, **output.fields}``; then
  ``degraded`` (bool) and ``degraded_reasons`` (list of text) when the output schema in the
  schemas folder has those fields; then ``output.transform`` if given, called as ``fn(record,
  event, results)`` (sync or async): its return value is the record, None drops the event.

Any mistake (an unknown or missing key, a wrong type, an unknown API or step, a transform that
does not import) raises ``ConfigError`` naming the file, the line and the key:
``pipeline.yaml:12: steps.account.gett: unknown key (did you mean 'get'?)``. The step graph
(cycles) is checked by ``Pipeline.check``.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import json
import keyword
import re
import string
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor

from connectors.errors import ConnectorError, TransientError
from streams.api import Api, ApiKey, Breaker, Cache, OAuth2, Permanent, Tls, Transient
from streams.pipeline import RECORD_KEY, Batch, Pipeline, PipelineError

__all__ = ["ConfigError", "compile_config", "load_config"]


class ConfigError(ValueError):
    """A YAML pipeline that cannot run: ``<file>:<line>: <key path>: <what is wrong>``."""


_TOP_KEYS: Final = ("pipeline", "source", "sink", "input_schema", "output_schema", "schemas", "key", "apis",
                    "steps", "output")
_REQUIRED_TOP_KEYS: Final = ("pipeline", "source", "sink", "input_schema", "output_schema", "steps")
_API_KEYS: Final = ("base_url", "rate_limit", "timeout", "retries", "max_connections", "cache", "breaker", "auth",
                    "tls", "probe")
_STEP_KEYS: Final = ("api", "get", "post", "body", "transform", "pick", "into", "permanent_on", "required",
                     "fallback", "batch")
_BATCH_KEYS: Final = ("max_size", "linger", "max_concurrent", "items", "results")
_OUTPUT_KEYS: Final = ("fields", "transform")
_RESERVED_STEPS: Final = frozenset({"event", "degraded"})
# Keyword parameters of Api.get / Api.post that a path parameter must not shadow.
_API_KEYWORDS: Final = frozenset({"self", "path", "query", "json", "idempotency_key"})
_FIELD: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def load_config(path: str | Path) -> Pipeline:
    """The pipeline defined by the YAML file at ``path``; raises ``ConfigError``."""
    source_path = Path(path)
    try:
        text = source_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source_path}: cannot read the pipeline file: {exc}") from exc
    return compile_config(text, source_path)


def compile_config(text: str, source_path: Path) -> Pipeline:
    """The pipeline defined by YAML ``text``, read from ``source_path`` (which names it in errors
    and anchors the relative paths); raises ``ConfigError``."""
    doc = _Document(str(source_path), source_path.resolve().parent)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{doc.name}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{doc.name}: not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{doc.name}:1: the file is empty: a pipeline needs {', '.join(_REQUIRED_TOP_KEYS)}")
    return _Compiler(doc, _At(doc, root, "")).compile()


# -- the YAML tree, with lines ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Document:
    name: str  # the file, as it names itself in errors
    base: Path  # relative paths start here


@dataclass(frozen=True, slots=True)
class _At:
    """A node of the YAML tree and the key path that leads to it."""

    doc: _Document
    node: Any  # yaml.Node
    path: str
    key: Any = None  # the key's yaml.Node, when this is the value of a mapping entry

    @property
    def line(self) -> int:
        """The line to name: a mapping's or list's is that of its key, a value's its own."""
        if self.key is not None and isinstance(self.node, yaml.MappingNode | yaml.SequenceNode):
            return int(self.key.start_mark.line) + 1
        return int(self.node.start_mark.line) + 1

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.doc.name}:{self.line}: {self.path or '(top)'}: {message}")

    def value(self) -> Any:
        """The Python value of this node and everything under it."""
        return SafeConstructor().construct_object(self.node, deep=True)

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.value() is None

    def entries(self, *, null_is_empty: bool = False) -> dict[str, _At]:
        """A mapping with keys of the author's choosing (API names, step names, fields)."""
        if null_is_empty and self.is_null:
            return {}
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping, got {_kind(self)}")
        entries: dict[str, _At] = {}
        for key_node, value_node in self.node.value:
            key = _At(self.doc, key_node, self.path)
            name = key.value() if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(name, str):
                raise key.error(f"a key must be text, got {_kind(key)}")
            path = f"{self.path}.{name}" if self.path else name
            if name in entries:
                raise _At(self.doc, key_node, path).error(f"duplicate key (first on line {entries[name].line})")
            entries[name] = _At(self.doc, value_node, path, key_node)
        return entries

    def mapping(self, allowed: Collection[str], required: Collection[str] = (), *,
                null_is_empty: bool = False) -> dict[str, _At]:
        """A mapping with the keys this format defines: an unknown key is named with its line."""
        entries = self.entries(null_is_empty=null_is_empty)
        for name, entry in entries.items():
            if name not in allowed:
                close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(allowed)}"
                raise _At(self.doc, entry.key, entry.path).error(f"unknown key ({hint})")
        for name in required:
            if name not in entries:
                path = f"{self.path}.{name}" if self.path else name
                raise _At(self.doc, self.node, path, self.key).error("missing (required)")
        return entries

    def text(self) -> str:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value:
            raise self.error(f"expected text, got {_kind(self)}")
        return value

    def number(self, *, minimum: float | None = None, above: float | None = None, at_most: float | None = None,
               integer: bool = False) -> Any:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise self.error(f"expected {'a whole number' if integer else 'a number'}, got {_kind(self)}")
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum}, not {value}")
        if above is not None and value <= above:
            raise self.error(f"must be greater than {above}, not {value}")
        if at_most is not None and value > at_most:
            raise self.error(f"must be at most {at_most}, not {value}")
        return value

    def boolean(self) -> bool:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {_kind(self)}")
        return value

    def items(self) -> list[_At]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"expected a list, got {_kind(self)}")
        return [_At(self.doc, node, f"{self.path}[{index}]") for index, node in enumerate(self.node.value)]

    def texts(self) -> list[str]:
        values = [item.text() for item in self.items()]
        if not values:
            raise self.error("must not be empty")
        return values


def _kind(at: _At) -> str:
    if isinstance(at.node, yaml.MappingNode):
        return "a mapping"
    if isinstance(at.node, yaml.SequenceNode):
        return "a list"
    value = at.value()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}" if value else "empty text"
    return type(value).__name__


def _suggest(name: str, known: Collection[str], what: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{what}: {', '.join(known)}" if known else f"no {what} defined"


# -- templates: "{field}" and "{step.field}" --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    """A placeholder: a field path into the event (``step`` None) or into a step's result."""

    text: str
    step: str | None
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Template:
    """A string with placeholders; ``parts`` alternate literal text and references."""

    parts: tuple[str | _Ref, ...]

    @property
    def refs(self) -> list[_Ref]:
        return [part for part in self.parts if isinstance(part, _Ref)]

    def render(self, args: Mapping[str, Any], where: str, api: str | None) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], _Ref):
            return _resolve(self.parts[0], args, where, api)  # exactly "{x}": the value, its type kept
        return "".join(part if isinstance(part, str) else _as_text(_resolve(part, args, where, api))
                       for part in self.parts)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve(ref: _Ref, args: Mapping[str, Any], where: str, api: str | None) -> Any:
    value = args["event"] if ref.step is None else args[ref.step]
    owner = "the event" if ref.step is None else f"the result of step {ref.step!r}"
    for key in ref.path:
        if value is None:
            return None  # a field of a null result (an optional step's fallback) is null
        if not isinstance(value, Mapping) or key not in value:
            raise Permanent(f"{where}: {{{ref.text}}}: {owner} has no field {key!r}", api=api)
        value = value[key]
    return value


# A compiled body: literal values with templates in place of strings.
_Value = Any


def _fill(value: _Value, args: Mapping[str, Any], where: str, api: str | None) -> Any:
    if isinstance(value, _Template):
        return value.render(args, where, api)
    if isinstance(value, dict):
        return {key: _fill(item, args, where, api) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, args, where, api) for item in value]
    return value


# -- compiling --------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, doc: _Document, root: _At) -> None:
        self.doc = doc
        self.root = root
        self.input_fields: list[str] | None = None

    def compile(self) -> Pipeline:
        top = self.root.mapping(_TOP_KEYS, _REQUIRED_TOP_KEYS)
        name = top["pipeline"].text()
        schemas = self._schemas(top.get("schemas"))
        key: str | None = RECORD_KEY
        if "key" in top and not top["key"].is_null:
            key_text = top["key"].text()
            if key_text not in ("record", "none"):
                raise top["key"].error(f"expected record or none, got {key_text!r}")
            key = RECORD_KEY if key_text == "record" else None
        elif "key" in top:
            key = None
        input_subject, output_subject = top["input_schema"].text(), top["output_schema"].text()
        pipeline = Pipeline(name, source=top["source"].text(), sink=top["sink"].text(), input_schema=input_subject,
                            output_schema=output_subject, key=key, schemas=schemas)
        pipeline.schemas_dir = schemas  # relative to the YAML file, not to this module
        self.input_fields = _schema_fields(schemas, input_subject)
        output_fields = _schema_fields(schemas, output_subject)
        if output_fields is not None:
            pipeline.set_output_fields(output_fields)

        apis = {api_name: self._api(api_name, at) for api_name, at in
                top["apis"].entries(null_is_empty=True).items()} if "apis" in top else {}
        steps_at = top["steps"]
        step_entries = steps_at.entries()
        if not step_entries:
            raise steps_at.error("a pipeline needs at least one step")
        into: dict[str, str] = {}
        for step_name, at in step_entries.items():
            if not step_name.isidentifier() or keyword.iskeyword(step_name) or step_name in _RESERVED_STEPS:
                raise at.error("a step name must be a Python identifier other than event and degraded "
                               "(letters, digits and _)")
            fields = at.mapping(_STEP_KEYS)
            target = fields["into"].text() if "into" in fields else step_name
            if target in into:
                raise (fields.get("into") or at).error(f"step {into[target]!r} already writes output field {target!r}")
            into[target] = step_name
            self._step(pipeline, step_name, at, fields, apis, list(step_entries))
        self._output(pipeline, top.get("output"), into, output_fields)
        try:
            pipeline.check()
        except PipelineError as exc:
            raise steps_at.error(str(exc)) from None
        return pipeline

    # -- top level

    def _schemas(self, at: _At | None) -> Path | None:
        if at is None:
            default = self.doc.base / "schemas"
            return default if (default / "registry.json").is_file() else None
        path = Path(at.text())
        return path if path.is_absolute() else self.doc.base / path

    def _api(self, name: str, at: _At) -> Api:
        fields = at.mapping(_API_KEYS, null_is_empty=True)
        options: dict[str, Any] = {}
        if "base_url" in fields:
            url = fields["base_url"].text()
            if not re.match(r"^https?://[^/\s]+", url):
                raise fields["base_url"].error(f"expected an http(s):// URL, got {url!r}")
            options["base_url"] = url
        if "rate_limit" in fields:
            options["rate_limit"] = float(fields["rate_limit"].number(above=0))
        if "timeout" in fields:
            options["timeout"] = float(fields["timeout"].number(above=0))
        if "retries" in fields:
            options["retries"] = fields["retries"].number(minimum=1, integer=True)
        if "max_connections" in fields:
            options["max_connections"] = fields["max_connections"].number(minimum=1, integer=True)
        if "probe" in fields:
            probe = fields["probe"].text()
            if not probe.startswith("/"):
                raise fields["probe"].error(f"expected a path starting with /, got {probe!r}")
            options["probe"] = probe
        if "cache" in fields:
            cache = fields["cache"].mapping(("ttl", "max_entries", "stale_if_error", "max_ttl"), null_is_empty=True)
            cache_options: dict[str, Any] = {
                key: value.number(minimum=1, integer=True) if key == "max_entries" else float(value.number(minimum=0))
                for key, value in cache.items()}
            options["cache"] = Cache(**cache_options)
        if "breaker" in fields:
            breaker = fields["breaker"].mapping(("failure_rate", "slow_call_rate", "slow_call_seconds", "window",
                                                 "minimum_calls", "open_seconds"), null_is_empty=True)
            breaker_options: dict[str, Any] = {
                key: (value.number(minimum=1, integer=True) if key in ("window", "minimum_calls") else
                      float(value.number(above=0, at_most=1)) if key.endswith("_rate") else
                      float(value.number(above=0))) for key, value in breaker.items()}
            options["breaker"] = Breaker(**breaker_options)
        if "auth" in fields:
            options["auth"] = self._auth(fields["auth"])
        if "tls" in fields:
            tls = fields["tls"].mapping(("ca_file", "cert_file", "key_file"))
            files = {key: str(self._file(value)) for key, value in tls.items()}
            if "key_file" in files and "cert_file" not in files:
                raise fields["tls"].error("key_file needs cert_file")
            options["tls"] = Tls(**files)
        try:
            return Api(name, **options)
        except ValueError as exc:
            raise at.error(str(exc)) from None

    def _auth(self, at: _At) -> OAuth2 | ApiKey:
        kinds = at.mapping(("oauth2", "api_key"))
        if len(kinds) != 1:
            raise at.error("expected one of oauth2 or api_key")
        (kind, value), = kinds.items()
        if kind == "oauth2":
            oauth2 = value.mapping(("client_id", "token_url", "scope"), null_is_empty=True)
            return OAuth2(**{key: item.text() for key, item in oauth2.items()})
        api_key = value.mapping(("header",), null_is_empty=True)
        return ApiKey(header=api_key["header"].text()) if "header" in api_key else ApiKey()

    def _file(self, at: _At) -> Path:
        path = Path(at.text())
        return path if path.is_absolute() else self.doc.base / path

    # -- steps

    def _step(self, pipeline: Pipeline, name: str, at: _At, fields: dict[str, _At], apis: Mapping[str, Api],
              step_names: list[str]) -> None:
        kinds = [kind for kind in ("get", "post", "transform") if kind in fields]
        if len(kinds) != 1:
            both = f", not {' and '.join(kinds)}" if kinds else ""
            raise at.error(f"a step has one of get, post or transform{both}")
        kind = kinds[0]
        required = fields["required"].boolean() if "required" in fields else True
        step_options: dict[str, Any] = {"required": required, "name": name}
        if "fallback" in fields:
            if required:
                raise fields["fallback"].error("a fallback is for optional steps: add required: false")
            fallback = fields["fallback"].value()
            if isinstance(fallback, dict | list):  # copied for each event: none sees another's changes
                step_options["fallback"] = lambda event: copy.deepcopy(fallback)
            else:
                step_options["fallback"] = fallback
        if kind == "transform":
            for key in ("api", "body", "pick", "permanent_on", "batch"):
                if key in fields:
                    raise fields[key].error(f"{key} is for get and post steps, not a transform")
            function = _import(fields["transform"])
            earlier = step_names[:step_names.index(name)]
            pipeline.step(**step_options)(_transform_step(name, function, earlier))
            return

        if "api" not in fields:
            raise at.error(f"a {kind} step needs api (the name of one of apis)")
        api_name = fields["api"].text()
        if api_name not in apis:
            raise fields["api"].error(f"unknown api {api_name!r} ({_suggest(api_name, apis, 'apis')})")
        api = apis[api_name]
        if kind == "get":
            for key in ("body", "batch"):
                if key in fields:
                    raise fields[key].error(f"{key} is for post steps")
        pick = tuple(fields["pick"].texts()) if "pick" in fields else None
        permanent_on = frozenset(self._statuses(fields["permanent_on"])) if "permanent_on" in fields else frozenset()
        path_at = fields[kind]
        path = self._template(path_at.text(), path_at, step_names, name)
        body = self._value(fields["body"], step_names, name) if "body" in fields else None
        refs = path.refs + _refs_in(body)
        deps = list(dict.fromkeys(ref.step for ref in refs if ref.step is not None))
        call = _ApiCall(name, api, kind, _path_params(path), body, pick, permanent_on)
        if "batch" in fields:
            batch_at = fields["batch"]
            if path.refs:
                raise path_at.error("a batch step calls one path for many events: it cannot have placeholders")
            if body is not None and not isinstance(body, dict):
                raise fields["body"].error("the body of a batch step is a mapping (one item of the batch)")
            batch = batch_at.mapping(_BATCH_KEYS, null_is_empty=True)
            settings = Batch(
                max_size=batch["max_size"].number(minimum=1, integer=True) if "max_size" in batch else 50,
                linger=float(batch["linger"].number(minimum=0)) if "linger" in batch else 0.01,
                max_concurrent=batch["max_concurrent"].number(minimum=1, integer=True)
                if "max_concurrent" in batch else 4)
            items = batch["items"].text() if "items" in batch else "items"
            results = batch["results"].text() if "results" in batch else "results"
            function = _batch_step(call, items, results, ["event", *deps])
            pipeline.step(api, batch=settings, **step_options)(function)
        else:
            pipeline.step(api, **step_options)(_function(name, ["event", *deps], call.run))

    def _statuses(self, at: _At) -> list[int]:
        statuses = [item.number(minimum=100, at_most=599, integer=True) for item in at.items()]
        if not statuses:
            raise at.error("must not be empty")
        return statuses

    def _value(self, at: _At, step_names: list[str], owner: str) -> _Value:
        """A body: its strings become templates, the rest stays as written."""
        if isinstance(at.node, yaml.MappingNode):
            return {key: self._value(item, step_names, owner) for key, item in at.entries().items()}
        if isinstance(at.node, yaml.SequenceNode):
            return [self._value(item, step_names, owner) for item in at.items()]
        value = at.value()
        return self._template(value, at, step_names, owner) if isinstance(value, str) else value

    def _template(self, text: str, at: _At, step_names: list[str], owner: str) -> _Template:
        parts: list[str | _Ref] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise at.error(f"{exc} in {text!r} (write {{{{ and }}}} for literal braces)") from None
        for literal, field, spec, conversion in parsed:
            if literal:
                parts.append(literal)
            if field is None:
                continue
            if spec or conversion or not _FIELD.match(field):
                raise at.error(f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                               f"in {text!r}: a placeholder is {{field}} or {{step.field}}")
            parts.append(self._ref(field, at, step_names, owner))
        return _Template(tuple(parts))

    def _ref(self, field: str, at: _At, step_names: list[str], owner: str) -> _Ref:
        head, *rest = field.split(".")
        if not rest or head == "event":
            path = tuple(rest) if head == "event" else (head,)
            if not path:
                raise at.error("{event} is the whole event: name a field of it, e.g. {event.id} or {id}")
            if self.input_fields is not None and path[0] not in self.input_fields:
                hint = (f"for a field of step {head!r}'s result, write {{{head}.<field>}}" if head in step_names
                        else _suggest(path[0], self.input_fields, "its fields"))
                raise at.error(f"{{{field}}}: the input schema has no field {path[0]!r} ({hint})")
            return _Ref(field, None, path)
        if head not in step_names:
            raise at.error(f"{{{field}}}: unknown step {head!r} ({_suggest(head, step_names, 'steps')})")
        if head == owner:
            raise at.error(f"{{{field}}}: step {owner!r} cannot use its own result")
        return _Ref(field, head, tuple(rest))

    # -- output

    def _output(self, pipeline: Pipeline, at: _At | None, into: Mapping[str, str],
                output_fields: Sequence[str] | None) -> None:
        spec = at.mapping(_OUTPUT_KEYS, null_is_empty=True) if at is not None else {}
        constants: dict[str, Any] = {}
        if "fields" in spec:
            for name, value in spec["fields"].entries().items():
                if name in into:
                    raise value.error(f"step {into[name]!r} already writes output field {name!r}")
                constants[name] = value.value()
        transform = _import(spec["transform"]) if "transform" in spec else None
        steps = list(pipeline.steps)
        targets = {step: target for target, step in into.items()}
        status_fields = set(output_fields or ()) & {"degraded", "degraded_reasons"}

        async def build(args: dict[str, Any]) -> Any:
            event = args["event"]
            results = {step: args[step] for step in steps}
            record = dict(event)
            for step in steps:
                record[targets[step]] = results[step]
            record.update(copy.deepcopy(constants))
            if "degraded" in status_fields:
                record["degraded"] = bool(args["degraded"])
            if "degraded_reasons" in status_fields:
                record["degraded_reasons"] = list(args["degraded"])
            if transform is None:
                return record
            value = transform(record, event, results)
            return await value if inspect.isawaitable(value) else value

        pipeline.output(_function(f"{pipeline.name}.output", ["event", *steps, "degraded"], build))


# -- what the steps run -----------------------------------------------------------------------------


def _refs_in(value: _Value) -> list[_Ref]:
    if isinstance(value, _Template):
        return value.refs
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _refs_in(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs_in(item)]
    return []


@dataclass(frozen=True, slots=True)
class _PathParams:
    template: str  # the path with each placeholder renamed to a safe parameter name
    params: tuple[tuple[str, _Ref], ...]


def _path_params(path: _Template) -> _PathParams:
    """The path as an ``Api`` template: placeholders renamed to parameter names (percent-encoded
    by the Api), literal braces escaped again."""
    template: list[str] = []
    params: dict[str, _Ref] = {}
    for part in path.parts:
        if isinstance(part, str):
            template.append(part.replace("{", "{{").replace("}", "}}"))
            continue
        existing = next((name for name, ref in params.items() if ref == part), None)
        name = existing or re.sub(r"\W", "_", part.text)
        while existing is None and (name in params or name in _API_KEYWORDS):
            name += "_"
        params[name] = part
        template.append(f"{{{name}}}")
    return _PathParams("".join(template), tuple(params.items()))


@dataclass(frozen=True, slots=True)
class _ApiCall:
    step: str
    api: Api
    method: str
    path: _PathParams
    body: _Value
    pick: tuple[str, ...] | None
    permanent_on: frozenset[int]

    @property
    def where(self) -> str:
        return f"step {self.step!r}"

    def params(self, args: Mapping[str, Any]) -> dict[str, Any]:
        params = {}
        for name, ref in self.path.params:
            value = _resolve(ref, args, self.where, self.api.name)
            if value is None:
                raise Permanent(f"{self.where}: {{{ref.text}}} is null: the path cannot be built", api=self.api.name)
            params[name] = value
        return params

    async def run(self, args: dict[str, Any]) -> Any:
        params = self.params(args)
        try:
            if self.method == "get":
                answer = await self.api.get(self.path.template, **params)
            else:
                body = _fill(self.body, args, self.where, self.api.name)
                answer = await self.api.post(self.path.template, body, **params)
        except TransientError as exc:
            permanent = self.permanent(exc)
            if permanent is None:
                raise
            raise permanent from exc
        return self.picked(answer)

    def permanent(self, exc: TransientError) -> Permanent | None:
        """A transient failure this step treats as permanent (``permanent_on``), else None."""
        if exc.status is None or exc.status not in self.permanent_on:
            return None
        return Permanent(f"{self.where}: HTTP {exc.status} is permanent here (permanent_on): {exc}",
                         status=exc.status, api=self.api.name)

    def picked(self, answer: Any) -> Any:
        if self.pick is None:
            return answer
        if not isinstance(answer, dict):
            raise Permanent(f"{self.where}: the answer is {type(answer).__name__}, not a JSON object to pick from",
                            api=self.api.name)
        missing = [field for field in self.pick if field not in answer]
        if missing:
            raise Permanent(f"{self.where}: the answer has no field {missing[0]!r}", api=self.api.name)
        return {field: answer[field] for field in self.pick}


def _batch_step(call: _ApiCall, items_key: str, results_key: str,
                params: Sequence[str]) -> Callable[..., Awaitable[Any]]:
    """A batch step: one POST for many events, each answered (or failed) by its own entry."""
    api = call.api.name

    async def run(columns: dict[str, Any]) -> list[Any]:
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        outcomes: list[Any] = [None] * len(rows)
        items: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            try:
                body = _fill(call.body, row, call.where, api) if call.body is not None else {}
            except ConnectorError as exc:  # a field this event lacks: it fails alone
                outcomes[index] = exc
                continue
            items.append({"id": str(index), **body})
        if not items:
            return outcomes
        try:
            answer = await call.api.post(call.path.template, {items_key: items})
        except TransientError as exc:
            permanent = call.permanent(exc)
            if permanent is None:
                raise
            raise permanent from exc
        entries = answer.get(results_key) if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise Permanent(f"{call.where}: the answer has no {results_key!r} list", api=api)
        by_id = {str(entry.get("id")): entry for entry in entries if isinstance(entry, dict)}
        for item in items:
            index = int(item["id"])
            entry = by_id.get(item["id"])
            if entry is None:
                outcomes[index] = Permanent(f"{call.where}: the answer has no result for item {item['id']}", api=api)
            elif "error" in entry:
                outcomes[index] = _item_error(call, entry["error"])
            else:
                try:
                    outcomes[index] = call.picked({key: value for key, value in entry.items() if key != "id"})
                except Permanent as exc:
                    outcomes[index] = exc
        return outcomes

    return _function(call.step, params, run)


def _item_error(call: _ApiCall, error: Any) -> Exception:
    status = error.get("status") if isinstance(error, dict) else None
    detail = error.get("message") or error.get("detail") if isinstance(error, dict) else None
    message = f"{call.where}: item failed: HTTP {status}" + (f": {detail}" if detail else "")
    if (isinstance(status, int) and not isinstance(status, bool) and (status >= 500 or status in (408, 429))
            and status not in call.permanent_on):
        return Transient(message, status=status, api=call.api.name)
    return Permanent(message, status=status if isinstance(status, int) else None, api=call.api.name)


def _transform_step(name: str, function: Callable[..., Any], earlier: Sequence[str]) -> Callable[..., Awaitable[Any]]:
    async def run(args: dict[str, Any]) -> Any:
        value = function(args["event"], {step: args[step] for step in earlier})
        return await value if inspect.isawaitable(value) else value

    return _function(name, ["event", *earlier], run)


def _function(name: str, params: Sequence[str],
              body: Callable[[dict[str, Any]], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An async function whose parameters are ``params`` (what ``Pipeline`` reads to wire the
    steps); it calls ``body`` with them as a dict."""
    names = tuple(params)

    async def function(*args: Any) -> Any:
        return await body(dict(zip(names, args, strict=True)))

    function.__name__ = function.__qualname__ = name
    function.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(param, inspect.Parameter.POSITIONAL_OR_KEYWORD) for param in names])
    return function


def _import(at: _At) -> Callable[..., Any]:
    reference = at.text()
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise at.error(f"expected module:function, got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the module raises, the file names it
        raise at.error(f"cannot import {module_name!r} for {reference!r}: {type(exc).__name__}: {exc}") from None
    function: Any = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise at.error(f"{reference!r}: module {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise at.error(f"{reference!r} is not a function")
    found: Callable[..., Any] = function
    return found


def _schema_fields(schemas: Path | None, subject: str) -> list[str] | None:
    """The field names of the latest version of ``subject`` in the schemas folder, if it is there."""
    if schemas is None:
        return None
    try:
        index = json.loads((schemas / "registry.json").read_text(encoding="utf-8"))
        entry = index["subjects"][subject]
        version = max(int(v) for v in entry["versions"])
        definition = json.loads((schemas / entry["directory"] / f"v{version}.avsc").read_text(encoding="utf-8"))
        return [str(field["name"]) for field in definition["fields"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not there (a Schema Registry has it) or broken: the worker's serde says so
