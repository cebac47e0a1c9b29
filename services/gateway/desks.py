"""Signing in to the pages of the people who work on the programme (the office, the coaches):
one set of steps, each desk under its own path with its own cookie.

The steps are the portal's: the sign-in form asks for an address and always answers the same;
the mailed link opens a page whose button (a POST, so a mail scanner that follows the link
does not use it up) signs in; the session id travels in a signed HttpOnly cookie sent only to
the desk's path; every form carries a CSRF token. The enrolment service keeps the sessions
(``<rpc>_request_sign_in``, ``<rpc>_sign_in``, ``<rpc>_session``, ``<rpc>_sign_out``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from werkzeug.wrappers import Response

from services.common.errors import LotsenError
from services.gateway import portal_auth as auth
from services.gateway.portal import PageError, PageRedirect, Visit, _form, _nul_free


@dataclass(frozen=True)
class Desk:
    path: str  # "/buero"
    cookie: str
    rpc: str  # the prefix of the enrolment service's methods
    home: str  # where a signed-in person lands
    visit: type  # a Visit for this desk (its path, notices and layout)
    sign_in_template: str

    def person(self, gateway, request) -> dict | None:
        session_id = auth.session_id_from(gateway.portal.key, request.cookies.get(self.cookie))
        if session_id is None:
            return None
        try:
            person = gateway._call(f"{self.rpc}_session", session_id)
        except LotsenError as exc:
            if exc.status in (401, 422):
                return None
            raise
        return dict(person, session_id=session_id)

    def open(self, gateway, request, signed_in: bool = True) -> Visit:
        """This request's visit; to the sign-in form if it needs a session and has none."""
        person = self.person(gateway, request)
        if signed_in and person is None:
            expired = request.cookies.get(self.cookie)
            raise PageRedirect(f"{self.path}/anmelden" + ("?hinweis=abgelaufen" if expired
                                                           else ""),
                               [self._forget] if expired else [])
        return self.visit(gateway.portal, request, person)

    def posted(self, gateway, request, signed_in: bool = True) -> Visit:
        """A form sent to this desk: only one of its own pages made."""
        visit = self.open(gateway, request, signed_in)
        if not visit.form_is_ours():
            raise PageError(403, "Formular abgelaufen", "Dieses Formular ist abgelaufen oder "
                            "kam nicht von dieser Seite. Bitte laden Sie die Seite neu.")
        return visit

    def _forget(self, response: Response):
        response.delete_cookie(self.cookie, path=self.path)

    # --- the steps ------------------------------------------------------------------------

    def home_page(self, gateway, request):
        raise PageRedirect(self.home if self.person(gateway, request)
                           else f"{self.path}/anmelden")

    def sign_in_form(self, gateway, request):
        visit = self.open(gateway, request, signed_in=False)
        if visit.person is not None:
            raise PageRedirect(self.home)
        return visit.render(self.sign_in_template, title="Anmelden", values={"email": ""},
                            menu=[])

    def sign_in_request(self, gateway, request):
        visit = self.open(gateway, request, signed_in=False)
        values = _nul_free(_form(request, "email"))

        def again(status, message, field="email"):
            return visit.render(self.sign_in_template, status, title="Anmelden",
                                values=values, menu=[], errors={field: message})
        if not visit.form_is_ours():
            return again(400, "Das Formular war abgelaufen. Bitte senden Sie es noch einmal.",
                         "_form")
        if not values["email"]:
            return again(422, "Bitte geben Sie Ihre E-Mail-Adresse ein.")
        try:
            gateway._call(f"{self.rpc}_request_sign_in", values["email"],
                          gateway.portal.public_url + f"{self.path}/link/")
        except LotsenError as exc:
            if exc.status != 422:
                raise
            return again(422, "Bitte geben Sie eine gültige E-Mail-Adresse an.")
        raise PageRedirect(f"{self.path}/anmelden?hinweis=link", visit.cookies)

    def link_page(self, gateway, request, token):
        visit = self.open(gateway, request, signed_in=False)
        return visit.render("link.html", title="Anmeldung bestätigen", token=token[:100],
                            action=f"{self.path}/link", menu=[])

    def link_use(self, gateway, request):
        visit = self.posted(gateway, request, signed_in=False)
        try:
            person = gateway._call(f"{self.rpc}_sign_in", request.form.get("token", "")[:200])
        except LotsenError as exc:
            if exc.status not in (401, 422):
                raise
            return visit.render("link_invalid.html", 400, title="Link ungültig", menu=[],
                                again=f"{self.path}/anmelden")
        value = auth.session_cookie(gateway.portal.key, person["session_id"])
        seconds = int((datetime.fromisoformat(person["expires_at"])
                       - datetime.now(timezone.utc)).total_seconds())
        raise PageRedirect(self.home, [lambda r: r.set_cookie(
            self.cookie, value, max_age=max(seconds, 0), httponly=True,
            secure=gateway.portal.secure, samesite="Lax", path=self.path)])

    def sign_out(self, gateway, request):
        visit = self.posted(gateway, request)
        gateway._call(f"{self.rpc}_sign_out", visit.person["session_id"])
        raise PageRedirect(f"{self.path}/anmelden?hinweis=abgemeldet", [self._forget])
