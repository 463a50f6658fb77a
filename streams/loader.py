"""Finding the user's pipeline: ``--app module:attribute`` or ``--config file.yaml``.

    pipeline = load_pipeline(app="pipelines.orders:pipeline")
    settings = for_pipeline(settings, pipeline)    # names and topics: the pipeline's, or overridden
    names = pipeline_names(settings)               # those three as str (streams.settings)

Every failure is a ``PipelineError`` that names what was asked for and what was found, so
``streams`` commands can print it as it is. The current directory is importable, as with
other app servers' ``--app``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from streams.pipeline import Pipeline, PipelineError
from streams.settings import Settings


def load_pipeline(app: str | None = None, config: str | Path | None = None) -> Pipeline:
    """The pipeline named by ``app`` (``module:attribute``, or ``module`` holding one pipeline)
    or defined by the YAML file ``config``; its step graph checked."""
    if (app is None) == (config is None):
        raise PipelineError("name one pipeline: --app module:attribute (or STREAMS_APP), "
                            "or --config pipeline.yaml (or STREAMS_CONFIG)")
    if config is not None:
        from streams.config import ConfigError, load_config

        try:
            pipeline = load_config(config)
        except ConfigError as exc:
            raise PipelineError(str(exc)) from None
    else:
        assert app is not None
        pipeline = _from_module(app)
    pipeline.check()
    return pipeline


def _from_module(app: str) -> Pipeline:
    module_name, _, attribute = app.partition(":")
    if not module_name or app.count(":") > 1:
        raise PipelineError(f"--app {app!r}: expected module:attribute, e.g. pipelines.orders:pipeline")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise PipelineError(f"--app {app!r}: no module named {exc.name!r} (looked in {cwd} and the "
                                f"installed packages)") from None
        raise PipelineError(f"--app {app!r}: importing {module_name} failed: {exc}") from exc
    found = {name: value for name, value in vars(module).items() if isinstance(value, Pipeline)}
    if not attribute:
        if len(found) != 1:
            raise PipelineError(f"--app {app!r}: module {module_name} defines {len(found)} pipelines "
                                f"({', '.join(sorted(found)) or 'none'}); name one as {module_name}:<attribute>")
        return next(iter(found.values()))
    if not hasattr(module, attribute):
        raise PipelineError(f"--app {app!r}: module {module_name} has no attribute {attribute!r}"
                            f"{' (pipelines in it: ' + ', '.join(sorted(found)) + ')' if found else ''}")
    value = getattr(module, attribute)
    if not isinstance(value, Pipeline):
        raise PipelineError(f"--app {app!r}: {attribute} is a {type(value).__name__}, not a streams.Pipeline")
    return value


def for_pipeline(settings: Settings, pipeline: Pipeline) -> Settings:
    """The settings a worker of ``pipeline`` runs with: ``STREAMS_PIPELINE``, ``STREAMS_INPUT_TOPIC``
    and ``STREAMS_OUTPUT_TOPIC`` override the pipeline's own name and topics, which it then
    carries too (its output builder may name itself)."""
    pipeline.name = settings.pipeline or pipeline.name
    pipeline.source = settings.input_topic or pipeline.source
    pipeline.sink = settings.output_topic or pipeline.sink
    if settings.schemas_dir is not None:
        pipeline.schemas_dir = settings.schemas_dir
    return settings.model_copy(update={"pipeline": pipeline.name, "input_topic": pipeline.source,
                                       "output_topic": pipeline.sink, "schemas_dir": pipeline.schemas_dir})
