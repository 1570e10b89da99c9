"""`service.secrets` entries: a name whose value is in the server's secret store, or a
name with a command the server runs at each deployment to get the value."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, Tag

from conveyor.config.base import Section, describe, invalid
from conveyor.config.values import NonEmptyStr, SecretName

_FORMS = (
    "expected a secret name like DATABASE_URL, or a name with the command that prints "
    'its value like {API_KEY: {command: "vault kv get -field=key secret/shop"}}'
)


class SecretCommand(Section):
    """Run on the server (sh -c) when a deployment starts; what it prints is the value."""

    command: NonEmptyStr


def _form(value: Any) -> str | None:
    if isinstance(value, str):
        return "secret:name"
    if isinstance(value, dict):
        return "secret:command"
    return None


def _one_name(value: dict[str, SecretCommand]) -> dict[str, SecretCommand]:
    if len(value) != 1:
        raise invalid(
            [((), f"expected one secret name with its command, got {describe(value)}", value)]
        )
    return value


SecretEntry = Annotated[
    Annotated[SecretName, Tag("secret:name")]
    | Annotated[dict[SecretName, SecretCommand], AfterValidator(_one_name), Tag("secret:command")],
    Discriminator(_form, custom_error_type="conveyor_secret", custom_error_message=_FORMS),
]
"""DATABASE_URL, or {API_KEY: {command: ...}}."""


def entry_name(entry: str | dict[str, SecretCommand]) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))
