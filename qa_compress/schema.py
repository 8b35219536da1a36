"""The base of every typed config section: unknown keys refused, values frozen once checked."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
