"""An embedding version of a pool as one typed value, its names checked once, on entry."""

from __future__ import annotations

from dataclasses import dataclass

from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.names import check_name


@dataclass(frozen=True)
class EmbeddingVersion:
    """Version `tag` ("v1", "v2", ..., as the encoder names them) of `pool`.

    Both names are checked when the value is built (InvalidArgumentError saying what to
    fix), so code that is handed an EmbeddingVersion never checks them again. Hashable: a
    cache key. `str()` gives "pool/tag", the form error messages use.
    """

    pool: str
    tag: str

    def __post_init__(self) -> None:
        check_name("pool", self.pool)
        if not self.tag:
            raise InvalidArgumentError(
                "embedding_version is empty: name a version; list them with "
                "EncoderService.ListVersions"
            )
        check_name("version", self.tag)

    def __str__(self) -> str:
        return f"{self.pool}/{self.tag}"
