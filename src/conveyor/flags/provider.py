"""An OpenFeature provider for Python over conveyor's Unleash client API.

    pip install 'conveyor[openfeature]'

    from openfeature import api
    from conveyor.flags.provider import ConveyorProvider
    api.set_provider(ConveyorProvider(
        "https://conveyor.example.com/api/apps/shop/environments/production/unleash", TOKEN))
    api.get_client().get_boolean_value("new-checkout", False, EvaluationContext("user-42"))

It polls `/client/features` (with its ETag) and evaluates locally with conveyor's
evaluator, which the official SDKs agree with; when the server is unreachable it keeps
answering from the last flags it read. Booleans are a flag's on/off, strings its variant.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from ..protocol.unleash import ClientFeatures
from .context import Context
from .evaluate import FlagSet

_STANDARD = {
    "sessionId": "session_id",
    "remoteAddress": "remote_address",
    "environment": "environment",
    "appName": "app_name",
    "currentTime": "current_time",
}


def unleash_context(context: EvaluationContext | None) -> Context:
    """An OpenFeature context as Unleash's: the targeting key is the user id."""
    if context is None:
        return Context()
    standard: dict[str, str] = {}
    properties: dict[str, str | None] = {}
    for key, value in context.attributes.items():
        text = None if value is None else str(value)
        if key == "userId":
            standard["user_id"] = text or ""
        elif key in _STANDARD and text is not None:
            standard[_STANDARD[key]] = text
        else:
            properties[key] = text
    if context.targeting_key:
        standard["user_id"] = context.targeting_key
    return Context(**standard, properties=properties)


class ConveyorProvider(AbstractProvider):
    """Flags of one app and environment, read with a client token (`conveyor flag token`)."""

    def __init__(self, url: str, token: str, *, interval: float = 15.0) -> None:
        """`url`: `{server}/api`, or `{server}/api/apps/APP/environments/ENV/unleash`."""
        super().__init__()
        self.url = url.rstrip("/") + "/client/features"
        self.interval = interval
        self._http = httpx.Client(headers={"Authorization": token}, timeout=10)
        self._etag: str | None = None
        self._flags: FlagSet | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get_metadata(self) -> Metadata:
        return Metadata(name="conveyor")

    def refresh(self) -> bool:
        """Read the flags once (kept as they are on a 304); False when it failed."""
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            answer = self._http.get(self.url, headers=headers)
        except httpx.HTTPError:
            return False
        if answer.status_code == 304:
            return True
        if answer.status_code != 200:
            return False
        self._flags = FlagSet(ClientFeatures.model_validate_json(answer.content))
        self._etag = answer.headers.get("etag")
        return True

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if not self.refresh():
            raise RuntimeError(f"conveyor: cannot read flags from {self.url}")
        self._thread = threading.Thread(target=self._poll, name="conveyor-flags", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http.close()

    def _missing(self, key: str, default: Any) -> FlagResolutionDetails[Any] | None:
        if self._flags is None:
            return FlagResolutionDetails(
                default, ErrorCode.PROVIDER_NOT_READY, "no flags read yet", Reason.ERROR
            )
        if key not in self._flags.features:
            return FlagResolutionDetails(
                default, ErrorCode.FLAG_NOT_FOUND, f"unknown flag {key!r}", Reason.ERROR
            )
        return None

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        missing = self._missing(flag_key, default_value)
        if missing is not None:
            return missing
        assert self._flags is not None
        on = self._flags.is_enabled(flag_key, unleash_context(evaluation_context))
        return FlagResolutionDetails(on, reason=Reason.TARGETING_MATCH if on else Reason.DISABLED)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        missing = self._missing(flag_key, default_value)
        if missing is not None:
            return missing
        assert self._flags is not None
        variant = self._flags.variant(flag_key, unleash_context(evaluation_context))
        if not variant.enabled:
            return FlagResolutionDetails(default_value, reason=Reason.DISABLED)
        return FlagResolutionDetails(variant.name, reason=Reason.SPLIT, variant=variant.name)

    def _mismatch(self, default: Any, kind: str) -> FlagResolutionDetails[Any]:
        message = f"conveyor flags are booleans (on/off) and strings (variants), not {kind}"
        return FlagResolutionDetails(default, ErrorCode.TYPE_MISMATCH, message, Reason.ERROR)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._mismatch(default_value, "integers")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._mismatch(default_value, "floats")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._mismatch(default_value, "objects")
