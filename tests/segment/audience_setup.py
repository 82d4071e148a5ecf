"""What the audience service, CLI and admin API tests share: definitions, a module that
processes audiences (and one that does not), outputs of every kind."""

from __future__ import annotations

from typing import Any

from patchbay.backends.abstract import Backend
from patchbay.backends.records import (
    FileDestination,
    ModuleDestination,
    Output,
    WebhookDestination,
)
from patchbay.firehose import (
    AudienceProcessingRegistration,
    BooleanSetting,
    EventProcessingRegistration,
    IntegerSetting,
    ModuleRegistrationResponse,
    Permissions,
    TextSetting,
    dumps,
)
from patchbay.partner.registration import module_record
from patchbay.partner.targets import HttpTarget

NOW = 1_700_000_000_000
#: The confidential subscription setting's value: never shown.
SECRET = "list-secret-7Hq2"


def definition(name: str, *refs: str, description: str = "", tier: str = "gold") -> dict[str, Any]:
    """An audience of users with ``tier`` who are also in each of ``refs``."""
    criteria: list[dict[str, Any]] = [{"user_attribute": "tier", "op": "eq", "value": tier}]
    criteria += [{"audience": ref} for ref in refs]
    return {"name": name, "description": description, "criteria": {"all": criteria}}


def audience_registration(
    *, attributes: bool = True, sdk: str = "3.2.0"
) -> ModuleRegistrationResponse:
    """A module that processes events and audiences, with subscription settings of each
    kind (``listId`` is what the partner answers; ``token`` is confidential)."""
    return ModuleRegistrationResponse(
        sdk_version=sdk,
        name="Audience Partner",
        version="1.0",
        permissions=Permissions(allow_audience_user_attributes=attributes),
        event_processing_registration=EventProcessingRegistration(
            account_settings=[TextSetting(id="apiKey", name="API key", confidential=True)],
            supported_event_types=["custom_event"],
            supported_runtime_environments=["ios"],
        ),
        audience_processing_registration=AudienceProcessingRegistration(
            audience_subscription_settings=[
                TextSetting(id="listName", name="List name", default_value="patchbay"),
                IntegerSetting(id="ttlDays", name="TTL", min_value=1, max_value=90),
                BooleanSetting(id="hashed", name="Hashed", default_value=True),
                TextSetting(id="token", name="List token", confidential=True),
                TextSetting(id="listId", name="List id", visible=False),
            ],
        ),
    )


def events_registration() -> ModuleRegistrationResponse:
    """A module that processes events only."""
    return ModuleRegistrationResponse(
        name="Events Partner",
        version="1.0",
        event_processing_registration=EventProcessingRegistration(
            supported_event_types=["custom_event"], supported_runtime_environments=["ios"]
        ),
    )


def register(backend: Backend, name: str, registration: ModuleRegistrationResponse) -> None:
    raw = dumps(registration)
    target = HttpTarget("http://127.0.0.1:9/firehose", "t0ken")
    backend.modules.put_module(module_record(name, target, registration, raw, NOW))


def add_output(backend: Backend, output: Output) -> None:
    backend.outputs.add_output(output)


def setup_outputs(backend: Backend) -> None:
    """Modules ``aud`` (audiences, attributes allowed), ``aud-noattr`` (audiences, no
    attributes) and ``events`` (events only); outputs ``crm`` (on ``aud``, with an account
    setting), ``crm2`` (on ``aud-noattr``), ``events-out`` (on ``events``), ``ghost`` (on a
    module that is not registered), ``hook`` (webhook) and ``lines`` (file)."""
    register(backend, "aud", audience_registration())
    register(backend, "aud-noattr", audience_registration(attributes=False))
    register(backend, "events", events_registration())
    outputs = [
        Output("crm", ModuleDestination("aud"), NOW, NOW, settings={"apiKey": "k-1"}),
        Output("crm2", ModuleDestination("aud-noattr"), NOW, NOW),
        Output("events-out", ModuleDestination("events"), NOW, NOW),
        Output("ghost", ModuleDestination("missing"), NOW, NOW),
        Output("hook", WebhookDestination("http://127.0.0.1:9/hook"), NOW, NOW),
        Output("lines", FileDestination("/tmp/lines.jsonl"), NOW, NOW),
    ]
    for output in outputs:
        add_output(backend, output)
