"""Where the integration tests find RabbitMQ and PostgreSQL.

``FLEET_AMQP_URL`` / ``FLEET_PG_ADMIN_URL`` when set; otherwise containers, where a Docker
engine answers; otherwise the servers on localhost.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    amqp = os.environ.get("FLEET_AMQP_URL")
    pg = os.environ.get("FLEET_PG_ADMIN_URL")
    if amqp and pg:
        yield amqp, pg
        return
    if not _docker_answers():
        yield amqp or LOCAL_AMQP, pg or LOCAL_PG_ADMIN
        return
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13") as rabbit, PostgresContainer("postgres:15") as postgres:
        host = rabbit.get_container_host_ip()
        port = rabbit.get_exposed_port(5672)
        pg_url = postgres.get_connection_url(driver=None)
        yield amqp or f"amqp://guest:guest@{host}:{port}/", pg or pg_url
