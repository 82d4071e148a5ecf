"""Partners for the partner tests: a well-behaved one built on ``MessageProcessor``, and a
scripted plain-ASGI partner whose answers each test can break on purpose."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from patchbay.firehose import (
    AudienceProcessingRegistration,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BooleanSetting,
    CustomEvent,
    DeviceIdentityPermission,
    DsrProcessingRegistration,
    EventProcessingRegistration,
    IntegerSetting,
    ModuleRegistrationResponse,
    PartnerIdentityPermission,
    Permissions,
    TextSetting,
    UserIdentityPermission,
    to_dict,
)
from patchbay.firehose.processor import MessageProcessor
from patchbay.partner.lambda_local import BackgroundServer

TOKEN = "s3cr3t-partner-token-7QzX"


def demo_registration() -> ModuleRegistrationResponse:
    """A registration using most features: identities, settings of each type, every kind."""
    return ModuleRegistrationResponse(
        name="Demo Partner",
        version="2.1.0",
        description="Sends <b>events</b> and audiences to Demo.",
        permissions=Permissions(
            user_identities=[
                UserIdentityPermission(type="email", encoding="sha256", required=True),
                UserIdentityPermission(type="customer", encoding="raw"),
            ],
            device_identities=[DeviceIdentityPermission(type="ios_advertising_id", encoding="raw")],
            partner_identities=[PartnerIdentityPermission(type="Demo_user_id", encoding="raw")],
            allow_user_attributes=True,
            allow_device_info=True,
            allow_access_mpid=True,
            allow_audience_user_attributes=True,
        ),
        event_processing_registration=EventProcessingRegistration(
            account_settings=[
                TextSetting(id="apiKey", name="API Key", required=True, confidential=True),
                BooleanSetting(id="sandbox", name="Sandbox", default_value=True),
            ],
            event_connection_settings=[
                IntegerSetting(id="batchSize", name="Batch size", min_value=10, max_value=500),
            ],
            supported_event_types=[
                "session_start",
                "custom_event",
                "screen_view",
                "product_action",
                "push_message_receipt",
                "user_attribute_change",
            ],
            supported_runtime_environments=["ios", "android", "mobileweb"],
            supported_system_notification_types=["gdpr_consent_state"],
            push_messaging_provider_id="demo",
        ),
        audience_processing_registration=AudienceProcessingRegistration(
            account_settings=[TextSetting(id="apiKey", name="API Key", required=True)],
            audience_subscription_settings=[
                TextSetting(id="listName", name="List name"),
                TextSetting(id="listId", name="List id", visible=False),
            ],
        ),
        dsr_processing_registration=DsrProcessingRegistration(supported_dsr_types=["erasure"]),
    )


class DemoPartner(MessageProcessor):
    """A correct partner: reads its settings, returns a list id for audiences."""

    def __init__(self, registration: ModuleRegistrationResponse | None = None) -> None:
        self._registration = registration or demo_registration()

    def registration(self) -> ModuleRegistrationResponse:
        return self._registration

    def process_custom_event(self, event: CustomEvent) -> None:
        assert self.settings.text("apiKey")
        assert 10 <= (self.settings.integer("batchSize") or 10) <= 500

    def process_audience_subscription_request(
        self, request: AudienceSubscriptionRequest
    ) -> AudienceSubscriptionResponse:
        return AudienceSubscriptionResponse(audience_subscription_settings={"listId": "L-77"})


@dataclass
class Answer:
    """What the scripted partner sends back."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


#: Given the request's JSON and headers, the answer.
Script = Callable[[dict[str, Any], dict[str, str]], Answer]


def processed(processor: MessageProcessor, request: dict[str, Any]) -> dict[str, Any]:
    """The processor's answer to ``request`` as a JSON object."""
    return to_dict(processor.process(request))


def answer_json(value: Any, status: int = 200, delay_s: float = 0.0) -> Answer:
    """An answer with a JSON body."""
    return Answer(status, json.dumps(value).encode(), {}, delay_s)


class ScriptedPartner:
    """A plain ASGI partner: every POST goes through ``script``; requests are recorded."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body", False):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = json.loads(body) if body else {}
        self.requests.append((headers, request))
        answer = self.script(request, headers)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": answer.body})


def demo_script(
    processor: MessageProcessor | None = None,
    *,
    registration: dict[str, Any] | None = None,
    change: Callable[[dict[str, Any], dict[str, Any]], Answer | None] | None = None,
) -> Script:
    """The demo partner's answers, with ``registration`` as its registration JSON if given,
    and ``change(request, normal_answer)`` overriding any answer it returns."""
    partner = processor or DemoPartner()

    def script(request: dict[str, Any], headers: dict[str, str]) -> Answer:
        if request.get("type") == "module_registration_request" and registration is not None:
            normal = copy.deepcopy(registration)
        else:
            normal = processed(partner, request)
        if change is not None:
            changed = change(request, normal)
            if changed is not None:
                return changed
        return answer_json(normal)

    return script


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 with uvicorn in a thread; yields its URL."""
    server = BackgroundServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()
