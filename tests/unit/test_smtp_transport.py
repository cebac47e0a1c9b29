"""The SMTP transport keeps one connection while mail keeps coming (across delivery rounds),
closes it once it sat unused, and starts afresh when the server has dropped it."""
import socket
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from services.notifications.delivery import SmtpTransport


class Sessions:
    def __init__(self):
        self.greetings = 0
        self.accepted = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        self.accepted.append(envelope.content)
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(n):
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@lotsen.example", f"t{n}@x.example", f"n{n}"
    mail.set_content("Hallo")
    return mail


def test_one_connection_across_rounds_and_a_new_one_after_the_server_dropped_it():
    sessions = Sessions()
    port = free_port()
    server = Controller(sessions, hostname="127.0.0.1", port=port)
    server.start()
    transport = SmtpTransport("127.0.0.1", port, keep_open_s=3600)
    try:
        for n in range(5):
            transport.send(n, message(n))
        transport.end_round()  # used a moment ago: kept open for the next round
        transport.send(5, message(5))
        transport.end_round()
        assert (sessions.greetings, len(sessions.accepted)) == (1, 6)

        server.stop()  # the server goes away with our connection open ...
        server = Controller(sessions, hostname="127.0.0.1", port=port)
        server.start()
        transport.send(6, message(6))  # ... the next round's NOOP sees it: a new connection
        transport.close()
        assert (sessions.greetings, len(sessions.accepted)) == (2, 7)

        idle = SmtpTransport("127.0.0.1", port, keep_open_s=0)
        idle.send(7, message(7))
        idle.end_round()  # not used within keep_open_s: closed, the next mail greets anew
        idle.send(8, message(8))
        idle.close()
        assert (sessions.greetings, len(sessions.accepted)) == (4, 9)
    finally:
        server.stop()
