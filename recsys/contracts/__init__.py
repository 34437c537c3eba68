"""Data contracts: table schemas, validation with quarantine, and PII handling.

- :mod:`recsys.contracts.schemas`: the contracts as data (``USERS``, ``ITEMS``, ... and the
  vocabularies ``CUISINES``, ``ITEM_CATEGORIES``, ``PLATFORMS``, ``SURFACES``);
- :mod:`recsys.contracts.validate`: :func:`validate_table`, :func:`validate_dataset`;
- :mod:`recsys.contracts.pii`: :func:`remove_pii`, :func:`check_forbidden`.
"""

from recsys.contracts.pii import check_forbidden, find_forbidden, remove_pii
from recsys.contracts.schemas import (
    CUISINES,
    ITEM_CATEGORIES,
    PLATFORMS,
    SCHEMAS,
    SURFACES,
    UNKNOWN,
    Column,
    Range,
    Rule,
    TableSchema,
)
from recsys.contracts.validate import (
    DatasetReport,
    TableReport,
    ValidationResult,
    validate_dataset,
    validate_table,
)

__all__ = [
    "CUISINES", "ITEM_CATEGORIES", "PLATFORMS", "SURFACES", "UNKNOWN", "SCHEMAS",
    "Column", "Range", "Rule", "TableSchema",
    "DatasetReport", "TableReport", "ValidationResult", "validate_dataset", "validate_table",
    "check_forbidden", "find_forbidden", "remove_pii",
]
