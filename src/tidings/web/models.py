"""The base of request and response models: snake_case in Python, camelCase in JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["ApiModel"]


class ApiModel(BaseModel):
    """A model read from camelCase JSON (snake_case names accepted too) and written as
    camelCase, by FastAPI and by ``model_dump``/``model_dump_json`` alike. Unknown fields are
    ignored, as pydantic does by default; set ``extra="forbid"`` in a subclass to refuse them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )
