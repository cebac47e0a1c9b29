"""Log lines: JSON with the worker's identity, and no e-mail addresses."""
import json
import logging

from services.common import logs


def record(message, *args):
    return logging.LogRecord("services.x", logging.WARNING, __file__, 1, message, args, None)


def test_json_line_carries_worker_identity_and_masks_addresses():
    tokens = [logs._service.set("enrolment"), logs._entrypoint.set("enrol"),
              logs._call_id.set("enrolment.enrol.1"), logs._correlation_id.set("gateway.enrol.0")]
    try:
        line = json.loads(logs.JsonFormatter().format(
            record("refused %s for %s", "j.weiss@wiesloch.example", "08226098")))
    finally:
        for var, token in zip((logs._service, logs._entrypoint, logs._call_id,
                               logs._correlation_id), tokens):
            var.reset(token)
    assert line["message"] == "refused <e-mail> for 08226098"
    assert (line["service"], line["entrypoint"], line["call_id"], line["correlation_id"]) == (
        "enrolment", "enrol", "enrolment.enrol.1", "gateway.enrol.0")
    assert line["level"] == "WARNING"


def test_plain_format_masks_too():
    formatter = logs.PlainFormatter("%(message)s")
    assert formatter.format(record("to anna.gross+x@example.org")) == "to <e-mail>"
