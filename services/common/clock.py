"""Moments are stored in UTC; days are German calendar days.

Every rule that speaks of a day (a module's date, the enrolment window, the reserve deadline,
a milestone's due day, a retention period, the date on a certificate) counts in the calendar
of the programmes, Europe/Berlin, whatever zone the server runs in. Between midnight in Berlin
and midnight UTC the two dates differ; reading ``datetime.date()`` off a UTC moment would put
those hours on the day before."""
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

PROGRAMME_TIMEZONE = ZoneInfo("Europe/Berlin")


def calendar_day(moment: datetime) -> date:
    """The day in Germany at ``moment`` (an aware datetime)."""
    return moment.astimezone(PROGRAMME_TIMEZONE).date()


def calendar_today() -> date:
    return calendar_day(datetime.now(timezone.utc))
