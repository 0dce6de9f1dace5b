"""The base every config section builds on, and the field rules more than one section shares.

:class:`Section` keeps the keys it does not declare (StableNew configs carry many) and takes declared
scalars as written (see :func:`~stablenew.pipeline._limits.strict_scalar`); :func:`unset_vae` reads a VAE
name the way both generation stages and the ADetailer main pass do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from stablenew.pipeline._limits import scalar_kinds, strict_scalar
from stablenew.pipeline._samplers import UNSET_NAMES


class Section(BaseModel):
    """Base for stage sections: keys that are not fields are kept, never sent (StableNew configs carry many;
    :func:`~stablenew.pipeline.parse_config` lets through only the known ones, see ``_keys``).

    Declared scalar fields take their type as written (see :func:`~stablenew.pipeline._limits.strict_scalar`)."""

    model_config = ConfigDict(extra="allow", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _typed_as_written(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        return strict_scalar(scalar_kinds(field.annotation), value)

    def known(self) -> dict[str, Any]:
        """The declared fields only, without the kept-but-unused extras.

        Pydantic keeps declared fields in ``__dict__`` and extras apart (``__pydantic_extra__``), so this
        is a plain copy: it runs several times per submitted config."""
        return dict(self.__dict__)


def unset_vae(value: Any) -> Any:
    """Unset ("Automatic", empty) becomes None, sent as "Automatic"; "None" (no external VAE) stays "None"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return "None"
        if text in UNSET_NAMES:
            return None
    return value
