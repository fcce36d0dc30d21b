"""Log lines about a message carry its ids and trace id; no log line shows a password."""

from __future__ import annotations

import json
import logging

from workers.runtime import log_context
from workers.runtime.log_context import JsonLogFormatter, PlainLogFormatter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("fleet.consumer", logging.ERROR, __file__, 1, message, args, None)


def test_a_json_line_about_a_message_carries_its_ids_and_its_trace_id() -> None:
    with log_context.about("m-1", "order-1", TRACEPARENT):
        line = json.loads(JsonLogFormatter().format(record("dead-lettered")))
    assert (line["message_id"], line["correlation_id"], line["trace_id"]) == (
        "m-1",
        "order-1",
        TRACE_ID,
    )
    assert "traceparent" not in line


def test_a_json_line_outside_a_message_carries_no_ids() -> None:
    line = json.loads(JsonLogFormatter().format(record("worker consuming")))
    assert not {"message_id", "correlation_id", "trace_id"} & set(line)


def test_the_ids_are_the_current_messages_only() -> None:
    token = log_context.enter("m-2", "order-2", None)
    log_context.leave(token)
    assert log_context.current() == {}
    with log_context.about("m-3", "order-3"):
        assert log_context.current() == {"message_id": "m-3", "correlation_id": "order-3"}


def test_a_malformed_traceparent_gives_no_trace_id() -> None:
    with log_context.about("m-4", "order-4", "not-a-traceparent"):
        assert "trace_id" not in log_context.current()


def test_passwords_in_urls_are_masked_in_plain_and_json_lines() -> None:
    text = "cannot connect to amqp://fleet:s3cr3t@rabbit:5672/ or postgresql://svc:pw@db/x"
    plain = PlainLogFormatter("%(message)s").format(record("%s", text))
    as_json = json.loads(JsonLogFormatter().format(record("%s", text)))["message"]
    for line in (plain, as_json):
        assert "s3cr3t" not in line and ":pw@" not in line
        assert "amqp://fleet:***@rabbit:5672/" in line and "postgresql://svc:***@db/x" in line


def test_a_url_without_a_password_is_left_alone() -> None:
    text = "listening on http://127.0.0.1:8000/docs and amqp://rabbit:5672/"
    assert log_context.without_passwords(text) == text


def test_a_password_with_an_unescaped_at_sign_is_masked_whole() -> None:
    text = 'amqp://fleet:p@ss@rabbit:5672/ and {"url": "postgresql://svc:a@b@db"}'
    masked = log_context.without_passwords(text)
    assert masked == 'amqp://fleet:***@rabbit:5672/ and {"url": "postgresql://svc:***@db"}'


def test_a_password_given_as_a_query_parameter_is_masked() -> None:
    text = "postgresql://svc@db/x?sslmode=require&password=s3cr3t&x=1"
    assert log_context.without_passwords(text) == (
        "postgresql://svc@db/x?sslmode=require&password=***&x=1"
    )
