"""`tls:` and `redirect_http:` of conveyor.yml (issue 14 point 2).

An app with domains may be served over HTTPS on its hosts' shared HTTPS port (the
agent's `--https-port`, default 443) with one of:

- `tls: {cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}`: PEM files on each host;
- `tls: {cert_secret: SHOP_TLS_CERT, key_secret: SHOP_TLS_KEY}`: PEM values in the
  server's secret store (`conveyor secret set`);
- `tls: acme` (or `tls: {acme: {directory: URL, email: ops@example.com}}`): certificates
  obtained and renewed by the server over ACME, once per environment, every host of it
  answering the HTTP-01 challenges (Let's Encrypt by default; deploy/certificates.py).

`redirect_http` (default true when tls is set) sends plain HTTP to HTTPS. Like domains,
both keys may be under `service:` or under an environment (which wins).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from conveyor.config.base import KEY, Loc, Section, invalid
from conveyor.config.values import SecretName

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(
            f"expected an absolute path on the host like /etc/ssl/shop.pem, got {value!r}"
        )
    return value


def _directory(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"expected an ACME directory URL like {LETS_ENCRYPT}, got {value!r}")
    return value


HostPath = Annotated[str, AfterValidator(_absolute)]


class Acme(Section):
    """Where the server gets certificates over ACME (HTTP-01 on the hosts' shared HTTP port)."""

    directory: Annotated[str, AfterValidator(_directory)] = Field(
        default=LETS_ENCRYPT, description="the ACME directory URL (Let's Encrypt by default)"
    )
    email: str | None = Field(default=None, description="the ACME account's contact address")


class Tls(Section):
    """One certificate for the app's domains: files on the host, secrets, or ACME."""

    cert: HostPath | None = Field(
        default=None, description="PEM certificate (and chain) on the host"
    )
    key: HostPath | None = Field(default=None, description="its unencrypted PEM key on the host")
    cert_secret: SecretName | None = Field(
        default=None, description="a secret holding the PEM certificate (and chain)"
    )
    key_secret: SecretName | None = Field(default=None, description="a secret holding its key")
    acme: Acme | None = Field(default=None, description="get the certificate over ACME")

    @model_validator(mode="after")
    def _one_source(self) -> Tls:
        problems: list[tuple[Loc, str, object]] = []
        pairs = (("cert", "key"), ("cert_secret", "key_secret"))
        given = [p for p in pairs if getattr(self, p[0]) or getattr(self, p[1])]
        for cert, key in given:
            if getattr(self, cert) is None:
                problems.append(((key,), f"{key} is given without {cert}; expected both", None))
            elif getattr(self, key) is None:
                problems.append(
                    ((cert, KEY), f"{cert} is given without {key}; expected both", None)
                )
        sources = len(given) + (self.acme is not None)
        if sources == 0:
            message = (
                "expected cert and key (files on the host), cert_secret and key_secret, or acme"
            )
            problems.append(((KEY,), message, None))
        elif sources > 1:
            problems.append(((KEY,), "expected one source of certificate, got several", None))
        if problems:
            raise invalid(problems)
        return self


_FORMS = "expected acme, or a mapping like {cert: /etc/ssl/shop.pem, key: /etc/ssl/shop.key}"


def _form(value: Any) -> str | None:
    if isinstance(value, str):
        return "tls:acme"
    if isinstance(value, dict | Tls):
        return "tls:mapping"
    return None


TlsSetting = Annotated[
    Annotated[Literal["acme"], Tag("tls:acme")] | Annotated[Tls, Tag("tls:mapping")],
    Discriminator(_form, custom_error_type="conveyor_tls", custom_error_message=_FORMS),
]
"""acme, or {cert, key}, {cert_secret, key_secret}, {acme: {directory, email}}."""


def as_tls(value: str | Tls | None) -> Tls | None:
    """The setting with its shorthand spelled out (`acme` -> Let's Encrypt, no email)."""
    if value is None:
        return None
    return Tls(acme=Acme()) if isinstance(value, str) else value


def tls_field() -> Any:
    return Field(
        default=None,
        description="HTTPS for the domains on the hosts' shared HTTPS port: acme, or "
        "{cert, key} files on the host, or {cert_secret, key_secret}",
        json_schema_extra={
            "examples": ["acme", {"cert": "/etc/ssl/shop.pem", "key": "/etc/ssl/shop.key"}]
        },
    )


def redirect_field() -> Any:
    return Field(
        default=None,
        description="Answer plain HTTP with a redirect to HTTPS (default true when tls is set).",
    )
