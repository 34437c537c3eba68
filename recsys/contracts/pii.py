"""Personal data: remove raw identifiers at validation, and keep forbidden attributes out of models.

Raw PII (``name``, ``email``, ``phone`` by default) may arrive in the users table and must get
no further than validation. :func:`remove_pii` either drops those columns (``drop``, default) or
replaces each hashable one by a salted SHA-256 hex digest (``hash``: ``email`` -> ``email_hash``,
usable as a join key), dropping the rest.

:func:`check_forbidden` is the guard used by feature definitions and training: no feature or
model input may be a forbidden attribute (``age``, ``sex``, ...), by name or as a whole word of a
snake_case name (``user_age`` is caught, ``page_views`` and ``storage`` are not).
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Literal, TypeVar

import polars as pl

from recsys.errors import ForbiddenAttributeError

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

#: PII columns kept (as a salted hash) in ``hash`` mode; other PII columns are always dropped.
HASHABLE_PII: tuple[str, ...] = ("email", "phone")
HASH_SUFFIX = "_hash"


def _normalise(column: str, value: str) -> str:
    """Canonical form before hashing, so the same person hashes the same way."""
    if column == "email":
        return value.strip().lower()
    if column == "phone":
        return re.sub(r"[^0-9+]", "", value)
    return value


def _hasher(column: str, salt: str):
    def digest(values: pl.Series) -> pl.Series:
        out = [
            None if v is None
            else hashlib.sha256(f"{salt}{_normalise(column, v)}".encode()).hexdigest()
            for v in values.to_list()
        ]
        return pl.Series(values.name, out, dtype=pl.Utf8)

    return digest


def remove_pii(
    frame: Frame,
    columns: Iterable[str] = ("name", "email", "phone"),
    *,
    mode: Literal["drop", "hash"] = "drop",
    salt: str = "",
    hashable: Iterable[str] = HASHABLE_PII,
) -> Frame:
    """Remove raw personal identifiers from a frame.

    Parameters
    ----------
    frame : polars.DataFrame or polars.LazyFrame
        The table, typically raw users. Absent PII columns are ignored.
    columns : iterable of str
        The PII columns (``config.validation.pii_columns``).
    mode : {"drop", "hash"}
        ``drop`` removes them; ``hash`` replaces each ``hashable`` one by ``<name>_hash``, the
        hex SHA-256 of ``salt + normalised value`` (nulls stay null), and drops the others.
    salt : str
        Salt prepended before hashing (``config.validation.pii_salt``).

    Returns
    -------
    The same kind of frame without any raw PII column.
    """
    if mode not in ("drop", "hash"):
        raise ValueError(f"pii mode={mode!r}: expected 'drop' or 'hash'")
    present = set(frame.collect_schema().names())
    pii = [c for c in columns if c in present]
    if mode == "hash":
        hashed = [c for c in pii if c in set(hashable)]
        frame = frame.with_columns(
            pl.col(c).cast(pl.Utf8)
            .map_batches(_hasher(c, salt), return_dtype=pl.Utf8, is_elementwise=True)
            .alias(c + HASH_SUFFIX)
            for c in hashed
        )
    return frame.drop(pii)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z]+", name.lower()) if w]


def find_forbidden(names: Iterable[str], forbidden: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(name, attribute)`` where ``name`` is, or contains as whole words, ``attribute``.

    Matching is case-insensitive on the words of snake_case (or otherwise delimited) names:
    ``user_age`` and ``AGE`` match ``age``; ``page_views`` and ``storage`` do not. A multi-word
    attribute (``home_country``) matches as consecutive words.
    """
    found: list[tuple[str, str]] = []
    attributes = [(a, _words(a)) for a in forbidden]
    for name in names:
        words = _words(name)
        for attribute, attr_words in attributes:
            n = len(attr_words)
            if n and any(words[i:i + n] == attr_words for i in range(len(words) - n + 1)):
                found.append((name, attribute))
    return found


def check_forbidden(names: Iterable[str], forbidden: Iterable[str], where: str) -> None:
    """Raise :class:`ForbiddenAttributeError` if any name uses a forbidden attribute.

    Parameters
    ----------
    names : iterable of str
        Column, feature or input names to check.
    forbidden : iterable of str
        Forbidden attributes (``config.validation.forbidden_attributes``).
    where : str
        Where the names come from, for the message (e.g. ``"feature view user_daily_stats"``).
    """
    found = find_forbidden(names, forbidden)
    if found:
        listed = ", ".join(f"{name!r} (attribute {attr!r})" for name, attr in found)
        raise ForbiddenAttributeError(f"forbidden attribute in {where}: {listed}")
