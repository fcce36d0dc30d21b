"""The pure parts of least privilege: how the API's read-only role connects, and which
databases have one. (The CLI's one-line errors, which name the right server and show no
password, are tried on real commands: tests/integration/test_no_passwords.py.)"""

from __future__ import annotations

from workers.operations import namespace
from workers.runtime.settings import Settings


def test_the_reader_connects_to_the_view_s_database_as_its_own_role() -> None:
    settings = Settings(namespace="staging", db_secrets={"order_view_reader": "p@ss"})
    assert settings.reader_url("order_view") == (
        "postgresql://staging_order_view_reader:p%40ss@127.0.0.1:5432/staging_order_view"
    )
    assert namespace.reader_role(settings) == "staging_order_view_reader"


def test_the_reader_follows_the_view_s_own_url_to_its_server_with_its_own_secret() -> None:
    settings = Settings(
        namespace="staging",
        db_secrets={"order_view_reader": "secret"},
        db_urls={"order_view": "postgresql://staging_order_view:other@view-db:6432/views?x=1"},
    )
    assert settings.reader_url("order_view") == (
        "postgresql://staging_order_view_reader:secret@view-db:6432/views?x=1"
    )


def test_a_url_set_for_the_reader_wins() -> None:
    url = "postgresql://ro:pw@replica:5432/staging_order_view"
    settings = Settings(namespace="staging", db_urls={"order_view_reader": url})
    assert settings.reader_url("order_view") == url


def test_only_the_view_s_database_has_a_read_only_role() -> None:
    settings = Settings(namespace="staging")
    readers = {db.name: db.readers for db in namespace.database_roles(settings)}
    assert readers.pop("staging_order_view") == ("staging_order_view_reader",)
    assert "staging_ops" in readers
    assert set(readers.values()) == {()}
