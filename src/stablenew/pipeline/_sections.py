"""The base every config section builds on, and the field rules more than one section shares.

:class:`Section` keeps the keys it does not declare (StableNew configs carry many) and takes declared
scalars as written (see :func:`~stablenew.pipeline._limits.strict_scalar`); :func:`unset_vae` reads a VAE
name the way both generation stages and the ADetailer main pass do.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from ._limits import scalar_kinds, strict_scalar
from ._samplers import UNSET_NAMES


class Section(BaseModel):
    """Base for stage sections: keys that are not fields are kept, never sent (StableNew configs carry many;
    :func:`~stablenew.pipeline.parse_config` lets through only the known ones, see ``_keys``).

    Declared scalar fields take their type as written (see :func:`~stablenew.pipeline._limits.strict_scalar`)."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _typed_as_written(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = _declared_kinds(cls, info.field_name or "")
        return strict_scalar(kinds, value) if kinds else value

    def known(self) -> dict[str, Any]:
        """The declared fields only, without the kept-but-unused extras.

        Pydantic keeps declared fields in ``__dict__`` and extras apart (``__pydantic_extra__``), so this
        is a plain copy: it runs several times per submitted config."""
        return dict(self.__dict__)


@cache
def _declared_kinds(section: type[Section], name: str) -> frozenset[type]:
    """The scalar types field ``name`` of ``section`` allows (none for an undeclared key, or a field
    that is no scalar), worked out once per field: every field of every section of every submitted
    config asks."""
    field = section.model_fields.get(name)
    return frozenset(scalar_kinds(field.annotation)) if field is not None else frozenset()


def unset_vae(value: Any) -> Any:
    """Unset ("Automatic", empty) becomes None, sent as "Automatic"; "None" (no external VAE) stays "None"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return "None"
        if text in UNSET_NAMES:
            return None
    return value
