"""A service's database engine, with no server: which engine a service is on
(``FLEET_ENGINES``, or its URL's scheme), the URLs derived for a service on MariaDB, which
migrations it gets, and what is refused. (Provisioning on the real servers is
tests/integration/test_mariadb_provisioning.py.)"""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from db import migrate
from db.engine import MARIADB, POSTGRESQL
from db.provision_mariadb import native_password_hash
from workers.operations import InvalidRequest, namespace
from workers.runtime.settings import Settings

SECRETS = {"payment": "pay/ment", "order": "ord", "ops": "op"}


def test_a_service_is_on_postgresql_unless_named_in_engines() -> None:
    settings = Settings(engines={"payment": "mariadb"}, db_secrets=SECRETS)
    assert settings.engine("payment") == MARIADB
    assert settings.engine("order") == POSTGRESQL
    assert settings.engine("ops") == POSTGRESQL


def test_engines_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ENGINES", '{"payment": "mariadb"}')
    assert Settings().engines == {"payment": "mariadb"}


def test_a_db_urls_entry_s_scheme_says_the_engine_whatever_engines_says() -> None:
    settings = Settings(
        engines={"payment": "postgresql"},
        db_urls={"payment": "mysql://u:p@db:3307/pay", "order": "postgresql://u:p@pg/o"},
    )
    assert settings.engine("payment") == MARIADB
    assert settings.engine("order") == POSTGRESQL


def test_an_unknown_engine_is_a_validation_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="unknown engine 'oracle' for payment"):
        Settings(engines={"payment": "oracle"})


def test_an_engine_for_no_service_is_refused_before_anything_is_made() -> None:
    settings = Settings(engines={"nosuch": "mariadb"})
    with pytest.raises(InvalidRequest, match="FLEET_ENGINES names no service of the fleet: nosuch"):
        namespace.on_mariadb(settings)


def test_a_mariadb_service_s_url_is_derived_from_the_mariadb_admin_url() -> None:
    settings = Settings(
        namespace="staging",
        engines={"payment": "mariadb"},
        mariadb_admin_url="mysql://root:adminpw@maria.example:3307/",
        pg_admin_url="postgresql://postgres:pgpw@pg.example:5433/postgres?sslmode=require",
        db_secrets=SECRETS,
    )
    assert settings.database_url("payment") == (
        "mysql://staging_payment:pay%2Fment@maria.example:3307/staging_payment"
    )
    # The others stay on PostgreSQL, the admin's options kept.
    assert settings.database_url("order") == (
        "postgresql://staging_order:ord@pg.example:5433/staging_order?sslmode=require"
    )


def test_a_mariadb_service_appends_to_the_audit_log_on_postgresql_as_its_own_name() -> None:
    settings = Settings(
        namespace="staging",
        engines={"payment": "mariadb"},
        db_urls={"payment": "mysql://staging_payment@maria:3306/staging_payment?charset=utf8mb4"},
        pg_admin_url="postgresql://postgres@pg.example:5433/postgres?sslmode=require",
        db_secrets=SECRETS,
    )
    # Its secret, the operations database's server and options (not MariaDB's).
    assert settings.audit_url("payment") == (
        "postgresql://staging_payment:pay%2Fment@pg.example:5433/staging_ops?sslmode=require"
    )


def test_the_default_mariadb_admin_url_is_the_local_server_s_root() -> None:
    assert Settings().mariadb_admin_url == "mysql://root@127.0.0.1:3306/"
    settings = Settings(engines={"payment": "mariadb"}, db_secrets=SECRETS)
    assert settings.database_url("payment") == (
        "mysql://fleet_payment:pay%2Fment@127.0.0.1:3306/fleet_payment"
    )


def test_migrations_are_chosen_by_engine() -> None:
    assert migrate.script_location("payment").parts[-2:] == ("migrations", "payment")
    assert migrate.script_location("payment", MARIADB).parts[-3:] == (
        "migrations",
        "mariadb",
        "payment",
    )
    assert migrate.head("payment", MARIADB) == "0002"
    config = migrate.alembic_config("payment", "mysql://u:p@h:3306/d")
    assert config.get_main_option("script_location", "").endswith("mariadb/payment")
    # No other service has MariaDB migrations yet.
    with pytest.raises(ValueError, match="no mariadb migrations for service 'order'"):
        migrate.script_location("order", MARIADB)


def test_the_native_password_hash_is_mariadb_s_password_function() -> None:
    # PASSWORD('secret') on MariaDB 10.11.
    assert native_password_hash("secret") == "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    inner = hashlib.sha1(b"p").digest()
    assert native_password_hash("p") == "*" + hashlib.sha1(inner).hexdigest().upper()
