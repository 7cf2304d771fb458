"""How to reach the brokers: addresses, authentication and TLS from the settings, for the
worker and the command-line clients.

Secrets come from the environment or a file (STREAMAPP_SASL_PASSWORD_FILE, e.g. a mounted
Kubernetes secret) and are held as pydantic SecretStr, so they never appear in a repr or log.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from streamapp.settings import Settings


def bootstrap_servers(broker: str) -> str:
    """`kafka://h1:9092,h2:9092` (STREAMAPP_BROKER's form) to aiokafka's `h1:9092,h2:9092`."""
    hosts = [h.strip().split("://", 1)[-1] for h in broker.split(",") if h.strip()]
    return ",".join(hosts)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    )
    context.check_hostname = settings.ssl_check_hostname
    return context


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """What Faust's `broker_credentials` setting takes."""
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        return SASLCredentials(username=settings.sasl_username,
                               password=settings.sasl_password_value(),
                               mechanism=settings.sasl_mechanism, ssl_context=context)
    if context is not None:
        return SSLCredentials(context)
    return None


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The same, as keyword arguments of aiokafka's producer, consumer and admin client."""
    return dict(credentials_to_aiokafka_auth(broker_credentials(settings)))
