"""The event contracts of the reference deployment: one catalog that every service imports,
so the envelope and payloads are defined once (the council system copied them into each
repository, and the copies drifted).

Payload models ignore fields they do not know: a producer may add a field without breaking
a consumer. Dates are ISO 8601 strings on the wire (``1980-02-01``).
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidings.events import EventCatalog

__all__ = [
    "PERSON_TOPIC",
    "TENURE_TOPIC",
    "HouseholdMember",
    "MembersChange",
    "PersonChanges",
    "PersonData",
    "TenureChanges",
    "TenureData",
    "TenureType",
    "TenuredAsset",
    "catalog",
    "full_name",
]

PERSON_TOPIC = "person"
TENURE_TOPIC = "tenure"


class Contract(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def full_name(
    title: str | None, first_name: str | None, middle_name: str | None, surname: str | None
) -> str:
    """Title, first, middle and surname, those present, separated by single spaces."""
    return " ".join(p.strip() for p in (title, first_name, middle_name, surname) if p and p.strip())


class PersonData(Contract):
    """A whole person, as a create event carries it."""

    id: str
    title: str | None = None
    first_name: str
    middle_name: str | None = None
    surname: str
    full_name: str
    date_of_birth: date | None = None
    place_of_birth: str | None = None
    person_types: list[str] = Field(default_factory=list)


class PersonChanges(Contract):
    """The fields of a person an update changed (``fullName`` whenever a name part did)."""

    title: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    surname: str | None = None
    full_name: str | None = None
    date_of_birth: date | None = None
    place_of_birth: str | None = None
    person_types: list[str] | None = None


class TenureType(Contract):
    code: str
    description: str


class TenuredAsset(Contract):
    id: str
    type: str | None = None
    full_address: str | None = None
    uprn: str | None = None
    property_reference: str | None = None


class HouseholdMember(Contract):
    """A person as a tenure lists them: a copy of the person's name and date of birth, and
    the tenure's own facts about them."""

    id: str
    type: str = "Person"
    full_name: str
    date_of_birth: date | None = None
    is_responsible: bool = False
    person_tenure_type: str | None = None


class TenureData(Contract):
    """A whole tenure, as a create event carries it."""

    id: str
    payment_reference: str | None = None
    start_of_tenure_date: date | None = None
    end_of_tenure_date: date | None = None
    tenure_type: TenureType | None = None
    tenured_asset: TenuredAsset | None = None
    household_members: list[HouseholdMember] = Field(default_factory=list)


class TenureChanges(Contract):
    """The fields of a tenure an update changed."""

    payment_reference: str | None = None
    start_of_tenure_date: date | None = None
    end_of_tenure_date: date | None = None
    tenure_type: TenureType | None = None
    tenured_asset: TenuredAsset | None = None


class MembersChange(Contract):
    """The household before (oldData) or after (newData) a member was added or removed."""

    household_members: list[HouseholdMember]


catalog = EventCatalog()
catalog.register("PersonCreatedEvent", data=PersonData, source_domain="Person")
catalog.register("PersonUpdatedEvent", data=PersonChanges, source_domain="Person")
catalog.register("TenureCreatedEvent", data=TenureData, source_domain="Tenure")
catalog.register("TenureUpdatedEvent", data=TenureChanges, source_domain="Tenure")
catalog.register("PersonAddedToTenureEvent", data=MembersChange, source_domain="Tenure")
catalog.register("PersonRemovedFromTenureEvent", data=MembersChange, source_domain="Tenure")
