"""One error type for everything a user can get wrong, naming where it happened."""
from __future__ import annotations


class ConversionError(Exception):
    """A user-facing error: says what went wrong and where (file, row, field, spec line).

    >>> str(ConversionError("unparseable date '32 JAN 2024'", source="ae.csv:4", field="AESTDAT",
    ...                     spec="ae.yaml:21"))
    "unparseable date '32 JAN 2024' [source ae.csv:4; field AESTDAT; spec ae.yaml:21]"
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 spec: str | None = None, dataset: str | None = None, record: str | None = None):
        self.message, self.source, self.field, self.spec = message, source, field, spec
        self.dataset, self.record = dataset, record
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"{name} {value}" for name, value in (
            ("dataset", self.dataset), ("record", self.record), ("source", self.source),
            ("field", self.field), ("spec", self.spec)) if value]
        return f"{self.message} [{'; '.join(where)}]" if where else self.message
