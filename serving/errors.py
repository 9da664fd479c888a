"""Errors raised by the serving package.

Each one says which input was wrong and how to put it right; the query
script prints the message, the HTTP server returns it as `detail`.
"""


class ServingError(Exception):
    """Base class of the errors a caller can fix."""


class UnknownUserError(ServingError, KeyError):
    """A user id that the export holds no embedding for."""

    def __str__(self) -> str:
        # KeyError would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class UnknownItemError(ServingError, KeyError):
    """An item id missing from the export's catalogue."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidKError(ServingError, ValueError):
    """`k` outside 1..max_k."""


class InvalidFilterError(ServingError, ValueError):
    """A filter on a field the catalogue lacks, or a malformed condition."""


class InvalidArgumentError(ServingError, ValueError):
    """Any other argument out of range (diversity, exclude lists)."""


class ExportFormatError(ServingError, ValueError):
    """An export directory that does not follow docs/export-format.md."""
