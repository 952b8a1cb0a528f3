"""Shared pieces of the policy spec: the base model, the shorthand marker for editors, the URL
and candidate-key validators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from edgeproxy.policy.shown import (
    quoted_name,
)
from edgeproxy.policy.urls import url_problem


@dataclass(frozen=True)
class _AlsoAccepts:
    """JSON Schema only: the field also accepts this shorthand (a validator turns it into the
    model). Without it, editors would flag ``alpha/us-east/gpt-4o`` or ``gpt-4o-mini:`` as wrong."""

    alternative: dict[str, Any]

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [self.alternative, handler(core_schema)]}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# A task's name (docs/tasks.md): also what the x-edgeproxy-task header may say.
TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TASK_NAME_SCHEMA = {"pattern": TASK_NAME}


# A candidate named outside a chain (an eval's judge, a route's summariser): an explicit region.
_CANDIDATE_KEY = r"^[^/\s]+/[^/\s*]+/\S+$"


def _candidate_key(value: str) -> str:
    parts = value.split("/", 2)
    if len(parts) != 3 or not all(parts) or parts[1] == "*":
        raise ValueError(
            f"write a candidate as provider/region/model with an explicit region, got "
            f"{quoted_name(value)}"
        )
    return value


CandidateKey = Annotated[str, AfterValidator(_candidate_key)]
