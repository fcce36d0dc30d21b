"""The MariaDB adapter's pure parts as values: which errors are worth a retry, how a URL
becomes connection arguments, and how values cross to DATETIME(6) and back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from asyncmy.errors import IntegrityError, OperationalError, ProgrammingError

from db.engine import MARIADB, POSTGRESQL, engine_of, sqlalchemy_url
from db.mariadb import Location, aware, check_ids, placeholders, utc
from workers.runtime.errors import is_transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError(1213, "Deadlock found when trying to get lock"), True),
        (OperationalError(1205, "Lock wait timeout exceeded"), True),
        (OperationalError(2006, "MySQL server has gone away"), True),
        (OperationalError(4031, "idle connection killed"), True),
        (IntegrityError(1062, "Duplicate entry"), False),
        (ProgrammingError(1146, "Table doesn't exist"), False),
        (OperationalError(1406, "Data too long"), False),
    ],
)
def test_which_mariadb_errors_are_retried(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_an_error_raised_from_a_mariadb_error_is_judged_by_it() -> None:
    try:
        try:
            raise OperationalError(1213, "Deadlock")
        except OperationalError as cause:
            raise RuntimeError("the batch failed") from cause
    except RuntimeError as error:
        assert is_transient(error)


@pytest.mark.parametrize(
    ("url", "engine"),
    [
        ("postgresql://a@h/db", POSTGRESQL),
        ("postgres://a@h/db", POSTGRESQL),
        ("postgresql+asyncpg://a@h/db", POSTGRESQL),
        ("mysql://a@h/db", MARIADB),
        ("mariadb://a@h/db", MARIADB),
        ("mysql+asyncmy://a@h/db", MARIADB),
    ],
)
def test_a_urls_scheme_names_its_engine(url: str, engine: str) -> None:
    assert engine_of(url) == engine


def test_an_unknown_scheme_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="oracle://"):
        engine_of("oracle://a@h/db")


def test_sqlalchemy_gets_the_async_driver_of_each_engine() -> None:
    assert sqlalchemy_url("mysql://u@h:3306/d") == "mysql+asyncmy://u@h:3306/d"
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"


def test_a_url_becomes_connection_arguments_with_its_password_unquoted() -> None:
    location = Location.of("mysql://t1_payment:a%2Fb%40c@db.example:3307/t1_payment")
    assert (location.host, location.port, location.user) == ("db.example", 3307, "t1_payment")
    assert location.password == "a/b@c"
    assert location.database == "t1_payment"
    arguments = location.connect_arguments()
    assert arguments["autocommit"] is True
    assert "READ-COMMITTED" in arguments["init_command"]
    assert "time_zone = '+00:00'" in arguments["init_command"]


def test_the_relay_lock_is_named_for_its_database() -> None:
    # Named locks are the server's: two namespaces' payments must not share one.
    one = Location.of("mysql://u@h/t1_payment").relay_lock
    other = Location.of("mysql://u@h/t2_payment").relay_lock
    assert one != other
    assert len(one) <= 64  # MariaDB's limit for a lock name


def test_datetimes_cross_as_naive_utc_and_come_back_aware() -> None:
    local = datetime(2026, 12, 4, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    stored = utc(local)
    assert stored == datetime(2026, 12, 4, 12, 0)
    assert stored is not None and stored.tzinfo is None
    assert aware(stored) == local
    assert utc(None) is None


def test_placeholders_for_rows_and_lists() -> None:
    assert placeholders(2, 3) == "(%s, %s, %s), (%s, %s, %s)"
    assert placeholders(3, 0) == "%s, %s, %s"


def test_an_id_longer_than_mariadb_keeps_is_refused_not_truncated() -> None:
    check_ids("message id", ["x" * 255])
    with pytest.raises(ValueError, match="256 characters"):
        check_ids("message id", ["x" * 256])
