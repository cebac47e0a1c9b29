"""A programme file (``deploy/programmes/*.yaml``) read, checked and made into a programme:
one way for the operator's CLI and the demo data.

The file holds the programme itself, optionally a ``funding:`` section (the policy the funding
service gets) and, for a coaching programme, a ``coaching:`` section with its milestones. A
coaching programme without a funding section funds nothing; a seminar programme without one
waits for its policy (``lotsen funding policy``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from services.common.errors import RuleViolation
from services.common.schemas import load


@dataclass(frozen=True)
class ProgrammeFile:
    programme: dict
    policy: dict | None
    milestones: list | None


def _jsonable(value):
    """YAML reads dates as dates; the schemas take the ISO strings an RPC caller sends."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat()
                                 if isinstance(v, date) else str(v)))


def read(path: Path) -> ProgrammeFile:
    """The file checked by the same schemas as the RPC (``ValidationFailed`` otherwise)."""
    from services.enrolment.schemas import CoachingSectionIn, ProgrammeIn
    from services.funding.schemas import FundingPolicyIn
    raw = _jsonable(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    funding_section = raw.pop("funding", None)
    coaching_section = raw.pop("coaching", None)
    programme = load(ProgrammeIn(), raw, "programme file")
    policy = (load(FundingPolicyIn(), funding_section, "funding section")
              if funding_section is not None else None)
    milestones = (load(CoachingSectionIn(), coaching_section, "coaching section")["milestones"]
                  if coaching_section is not None else None)
    programme["funded"] = funding_section is not None or coaching_section is None
    return ProgrammeFile(programme, policy, milestones)


def create(session, parsed: ProgrammeFile) -> dict:
    """The programme (and its coaching) in the enrolment database; refused if the budget
    does not cover the guaranteed seats of every eligible body."""
    from services.enrolment import coaching, domain
    programme = domain.create_programme(session, parsed.programme)
    if parsed.milestones is not None:
        coaching.define(session, programme, parsed.milestones)
    bodies = len(domain.eligible_bodies(session, programme))
    policy = parsed.policy
    if policy:
        needed = bodies * policy["guaranteed_per_body"] * policy["fee_cents"]
        if policy["budget_cents"] < needed:
            raise RuleViolation("the budget does not cover one guaranteed seat per body",
                                {"funding.budget_cents": [f"at least {needed} for {bodies} "
                                                          "eligible bodies"]})
    return {"id": programme.id, "code": programme.code, "bodies": bodies}
