"""The ``schemacache node`` command line, generated from the node's settings model.

Each field of :class:`~schemacache.node.config.NodeConfig` becomes one option:
its flag (``--`` plus the name with dashes, or the field's ``cli`` hint), its
default, its help text and its environment variable (``envvar`` hint). Values
are validated once, by the model: a bad value exits 2 naming the flag.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import pydantic
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape


def flag_of(name: str, field: FieldInfo) -> str:
    """The command-line flag of a settings field."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("cli") or "--" + name.replace("_", "-"))


def _envvar(field: FieldInfo) -> str | None:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    value = extra.get("envvar")
    return str(value) if value else None


def option_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``model``, annotated as a typer option."""
    params = []
    for name, field in model.model_fields.items():
        option = typer.Option(flag_of(name, field), help=escape(field.description or ""),
                              envvar=_envvar(field), show_default=field.default is not None)
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
            annotation=Annotated[field.annotation, option]))
    return params


def invalid_value(model: type[BaseModel], exc: pydantic.ValidationError) -> str:
    """The first error of a settings validation, naming the flag."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    field = model.model_fields.get(name)
    where = flag_of(name, field) if field is not None else name
    return f"invalid value for {where}: {error['msg']}"


def command_from_settings(
    model: type[BaseModel],
    run: Callable[..., None],
    *,
    extra: list[inspect.Parameter] = (),  # type: ignore[assignment]
    doc: str = "",
) -> Callable[..., None]:
    """A typer command whose options are ``model``'s fields, followed by ``extra``.

    :param model: the settings model (every field needs a default).
    :param run: called with the field values as one dict, then each of ``extra``
        by name.
    :param extra: more options, not settings (default: none).
    :param doc: the command's help text (default: none).
    """
    fields = option_parameters(model)
    names = [p.name for p in fields]

    def command(**values: Any) -> None:
        settings = {name: values.pop(name) for name in names}
        run(settings, **values)

    parameters = [*fields, *extra]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = doc
    command.__name__ = run.__name__.lstrip("_")
    return command
