"""The Person API's request and response bodies, and the rules of a person record."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from housing_contracts import full_name
from tidings.web import ApiModel

Name = Field(min_length=1, max_length=100)


class Title(StrEnum):
    MR = "Mr"
    MRS = "Mrs"
    MS = "Ms"
    MISS = "Miss"
    DR = "Dr"
    REV = "Rev"
    MX = "Mx"
    OTHER = "Other"


class PersonType(StrEnum):
    TENANT = "Tenant"
    HOUSEHOLD_MEMBER = "HouseholdMember"
    LEASEHOLDER = "Leaseholder"
    FREEHOLDER = "Freeholder"
    OCCUPANT = "Occupant"


class PersonCreate(ApiModel):
    title: Title | None = None
    first_name: str = Name
    middle_name: str | None = Field(default=None, max_length=100)
    surname: str = Name
    date_of_birth: date | None = None
    place_of_birth: str | None = Field(default=None, max_length=200)
    person_types: list[PersonType] = Field(default_factory=list, max_length=10)

    @field_validator("date_of_birth")
    @classmethod
    def _not_in_future(cls, value: date | None) -> date | None:
        if value is not None and value > date.today():
            raise ValueError("dateOfBirth cannot be in the future")
        return value


class PersonPatch(PersonCreate):
    """Only the keys present are applied; a present key may not null a required field."""

    first_name: str | None = Field(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    surname: str | None = Field(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    person_types: list[PersonType] | None = Field(default=None, max_length=10)  # type: ignore[assignment]


class TenureSummary(ApiModel):
    id: str
    type: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    asset_full_address: str | None = None
    asset_id: str | None = None
    uprn: str | None = None
    payment_reference: str | None = None
    property_reference: str | None = None
    is_active: bool


class PersonOut(ApiModel):
    id: str
    title: str | None
    first_name: str
    middle_name: str | None
    surname: str
    full_name: str
    date_of_birth: date | None
    place_of_birth: str | None
    person_types: list[str]
    tenures: list[TenureSummary]
    version_number: int


WIRE_FIELDS = {
    "title": "title",
    "first_name": "firstName",
    "middle_name": "middleName",
    "surname": "surname",
    "date_of_birth": "dateOfBirth",
    "place_of_birth": "placeOfBirth",
    "person_types": "personTypes",
}
"""Column name to camelCase event field, for the person's own fields."""


def event_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A person's own fields as events carry them (camelCase, JSON values, with fullName)."""
    data = {wire: _json(row[col]) for col, wire in WIRE_FIELDS.items()}
    data["fullName"] = full_name(
        row["title"], row["first_name"], row["middle_name"], row["surname"]
    )
    return data


def _json(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return value
