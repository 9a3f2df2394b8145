"""The Tenure API's request and response bodies."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field, model_validator

from tidings.web import ApiModel


class TenureTypeIn(ApiModel):
    code: str = Field(min_length=1, max_length=20)
    description: str = Field(min_length=1, max_length=100)


class TenuredAssetIn(ApiModel):
    id: str = Field(min_length=1, max_length=100)
    type: str | None = Field(default=None, max_length=50)
    full_address: str | None = Field(default=None, max_length=400)
    uprn: str | None = Field(default=None, max_length=20)
    property_reference: str | None = Field(default=None, max_length=50)


class MemberFields(ApiModel):
    type: str = Field(default="Person", max_length=30)
    full_name: str = Field(min_length=1, max_length=400)
    date_of_birth: date | None = None
    is_responsible: bool = False
    person_tenure_type: str | None = Field(default=None, max_length=50)


class HouseholdMemberIn(MemberFields):
    id: str = Field(min_length=1, max_length=36)


class TenureCreate(ApiModel):
    payment_reference: str | None = Field(default=None, max_length=50)
    start_of_tenure_date: date | None = None
    end_of_tenure_date: date | None = None
    tenure_type: TenureTypeIn | None = None
    tenured_asset: TenuredAssetIn | None = None
    household_members: list[HouseholdMemberIn] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _check(self) -> TenureCreate:
        check_dates(self.start_of_tenure_date, self.end_of_tenure_date)
        ids = [m.id for m in self.household_members]
        if len(ids) != len(set(ids)):
            raise ValueError("householdMembers: a person is listed twice")
        return self


class TenurePatch(ApiModel):
    payment_reference: str | None = Field(default=None, max_length=50)
    start_of_tenure_date: date | None = None
    end_of_tenure_date: date | None = None
    tenure_type: TenureTypeIn | None = None
    tenured_asset: TenuredAssetIn | None = None


class HouseholdMemberOut(ApiModel):
    id: str
    type: str
    full_name: str
    date_of_birth: date | None
    is_responsible: bool
    person_tenure_type: str | None


class TenureOut(ApiModel):
    id: str
    payment_reference: str | None
    start_of_tenure_date: date | None
    end_of_tenure_date: date | None
    tenure_type: dict[str, Any] | None
    tenured_asset: dict[str, Any] | None
    household_members: list[HouseholdMemberOut]
    is_active: bool
    version_number: int


def check_dates(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and end < start:
        raise ValueError("endOfTenureDate cannot be before startOfTenureDate")


def is_active(end: date | None) -> bool:
    """A tenure is active while it has no end date or its end date is in the future."""
    return end is None or end > date.today()
