"""TLS and credentials come from the broker URL: ``amqps://`` (with the AMQP client's TLS
options) and NATS ``tls://`` are accepted and keep their TLS settings, and what is shown of
them carries no password."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tidings.brokers.nats.url import parse_url as nats_url
from tidings.brokers.rabbitmq.url import parse_url as amqp_url
from tidings.errors import ConfigurationError


def test_amqps_keeps_its_scheme_credentials_and_tls_files_for_the_client() -> None:
    options = amqp_url(
        "amqps://svc:pw@rabbit.example:5671/prod?namespace=blue&cafile=/etc/ca.pem"
        "&certfile=/etc/client.pem&keyfile=/etc/client.key&queue_type=quorum"
    )
    client = urlsplit(options.client_url)
    assert client.scheme == "amqps"
    assert (client.username, client.password, client.port) == ("svc", "pw", 5671)
    assert parse_qs(client.query) == {
        "cafile": ["/etc/ca.pem"],
        "certfile": ["/etc/client.pem"],
        "keyfile": ["/etc/client.key"],
    }
    assert options.namespace == "blue"
    assert options.display_url == "amqps://rabbit.example:5671/prod"


def test_amqps_refuses_options_it_does_not_know() -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'verify'"):
        amqp_url("amqps://svc:pw@h/?verify=no")


def test_nats_tls_keeps_its_scheme_and_credentials_on_every_server() -> None:
    options = nats_url("tls://svc:pw@n1.example:4222,n2.example:4222?namespace=blue&replicas=3")
    assert options.servers == ("tls://svc:pw@n1.example:4222", "tls://svc:pw@n2.example:4222")
    assert (options.namespace, options.replicas) == ("blue", 3)
    assert "pw" not in repr(options)
    assert repr(options).startswith("NatsOptions(tls://svc:***@n1.example:4222")


@pytest.mark.parametrize("url", ["http://h:4222", "nats+tls://h:4222", "wss://h"])
def test_nats_refuses_other_schemes(url: str) -> None:
    with pytest.raises(ConfigurationError):
        nats_url(url)
