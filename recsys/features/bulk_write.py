"""Fast bulk writes of large tables (embeddings, top lists, candidates) into the online store.

Redis: writes Feast's own layout directly, so ``FeatureStore.get_online_features`` reads it
back unchanged (see ``feast/infra/online_stores/redis.py``):

- key: ``serialize_entity_key(entity_key, v3) + project`` (Feast's ``_redis_key``);
- hash field ``_mmh3(f"{view}:{feature}")`` -> serialized ``ValueProto``;
- hash field ``_ts:{view}`` -> serialized ``google.protobuf.Timestamp``;
- ``EXPIRE key_ttl_seconds`` when the store config sets it.

It is fast because it works column-wise (each column becomes a list of value bytes in one pass,
fixed-width float arrays with numpy), reuses each distinct value of low-cardinality columns,
and sends large non-transactional pipelines (``batch_size`` rows per round trip).

SQLite: no layout of our own; rows go through ``FeatureStore.write_to_online_store``.

Write semantics (both stores, by default ``only_newer=True``), the same as Feast's Redis store:
a row is written only if its event timestamp is strictly newer than the one stored for that
entity in that view; within ``df`` the latest row per entity wins (the first of equal ones).
So republishing older rows is a no-op: to roll back, write with a newer timestamp.
``only_newer=False`` overwrites unconditionally (Feast's ``skip_dedup``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import DataContractError, FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.value_type import ValueType

DEFAULT_BATCH_SIZE = 10_000
# A column whose distinct values are at most this share of its rows is encoded value by value
# only once (model_version, category, ...).
_DICTIONARY_SHARE = 0.25
# Rows of each column checked byte for byte against Feast's own conversion.
_CHECK_ROWS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class _View:
    name: str  # online (possibly versioned) name
    join_keys: tuple[str, ...]
    key_types: tuple["ValueType", ...]
    features: tuple[str, ...]
    feature_types: tuple["ValueType", ...]
    timestamp_field: str
    created_field: str | None


def _view(store: "FeatureStore", name: str) -> tuple["FeatureView", _View]:
    from feast.infra.online_stores.helpers import compute_versioned_name

    try:
        fv = store.get_feature_view(name)
    except Exception as exc:
        raise FeatureStoreError(f"feature view {name!r} is not registered (run `recsys features apply`): {exc}") from exc
    if fv.batch_source is None:
        raise FeatureStoreError(f"feature view {name!r} has no batch source: no timestamp field to write")
    versioned = compute_versioned_name(fv, store.config.registry.enable_online_feature_view_versioning)
    return fv, _View(
        name=versioned,
        join_keys=tuple(c.name for c in fv.entity_columns),
        key_types=tuple(c.dtype.to_value_type() for c in fv.entity_columns),
        features=tuple(f.name for f in fv.features),
        feature_types=tuple(f.dtype.to_value_type() for f in fv.features),
        timestamp_field=fv.batch_source.timestamp_field,
        created_field=fv.batch_source.created_timestamp_column or None,
    )


def _prepare(df: pl.DataFrame, view: _View, only_newer: bool) -> pl.DataFrame:
    """Check columns, normalise timestamps to UTC microseconds, keep the latest row per entity.

    The created timestamp (needed by Feast's own write path) defaults to the event timestamp.
    """
    needed = [*view.join_keys, *view.features, view.timestamp_field]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataContractError(f"write to {view.name!r}: missing columns {missing} (has {df.columns})")

    def utc(column: str) -> pl.Expr:
        dtype = df.schema[column]
        if not isinstance(dtype, pl.Datetime):
            raise DataContractError(f"write to {view.name!r}: column {column!r} is {dtype}, not Datetime")
        ts = pl.col(column)
        ts = ts.dt.replace_time_zone("UTC") if dtype.time_zone is None else ts.dt.convert_time_zone("UTC")
        return ts.dt.cast_time_unit("us")

    stamps = [utc(view.timestamp_field).alias(view.timestamp_field)]
    if view.created_field and view.created_field != view.timestamp_field:
        created = view.created_field if view.created_field in df.columns else view.timestamp_field
        stamps.append(utc(created).alias(view.created_field))
    out = df.select(*view.join_keys, *view.features, *stamps)
    nulls = [k for k in view.join_keys if out[k].null_count()]
    if nulls or out[view.timestamp_field].null_count():
        raise DataContractError(f"write to {view.name!r}: null entity key or timestamp in {nulls or view.timestamp_field}")
    if only_newer and out.height:
        # Latest row per entity; among equal timestamps the first (Feast skips a write whose
        # timestamp is not strictly newer than one already queued).
        out = (
            out.with_row_index("_row")
            .filter(pl.col(view.timestamp_field) == pl.col(view.timestamp_field).max().over(view.join_keys))
            .unique(subset=list(view.join_keys), keep="first", maintain_order=True)
            .drop("_row")
        )
    return out


# ---------------------------------------------------------------- value encoding (column-wise)

def _feast_values(values: Any, value_type: "ValueType") -> list[bytes]:
    """Feast's own conversion, exactly as materialization calls it (arrow -> numpy -> protos)."""
    from feast.type_map import python_values_to_proto_values

    return [v.SerializeToString() for v in python_values_to_proto_values(values, value_type)]


def _arrow(series: pl.Series) -> pa.Array:
    arr = series.to_arrow()
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fixed_width_list(arr: pa.Array, value_type: "ValueType") -> list[bytes] | None:
    """``float_list_val`` / ``double_list_val`` of equal-length arrays, encoded with numpy.

    Hand-written because the protobuf runtime has no vectorised encoder: a Value holding a
    packed FloatList is ``tag(field) len(inner) | 0x0a len(4*d) | d little-endian floats``, the
    same header for every row of a fixed dimension, so the whole column is one numpy copy. The
    caller checks the first rows against Feast's own conversion and falls back if they differ.
    """
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.value_type import ValueType

    field, np_type = {
        ValueType.FLOAT_LIST: ("float_list_val", np.dtype("<f4")),
        ValueType.DOUBLE_LIST: ("double_list_val", np.dtype("<f8")),
    }.get(value_type, (None, None))
    if field is None or arr.null_count or not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type) \
            and not pa.types.is_fixed_size_list(arr.type):
        return None
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if len(lengths) == 0 or lengths.min() != lengths.max() or lengths[0] == 0:
        return None
    flat = pc.list_flatten(arr)
    if flat.null_count:
        return None
    dim = int(lengths[0])
    payload = flat.to_numpy(zero_copy_only=False).astype(np_type, copy=False)
    n = len(arr)
    field_number = ValueProto.DESCRIPTOR.fields_by_name[field].number
    inner = b"\x0a" + _varint(dim * np_type.itemsize)  # FloatList/DoubleList.val = 1, packed
    header = _varint(field_number << 3 | 2) + _varint(len(inner) + dim * np_type.itemsize) + inner
    width = len(header) + dim * np_type.itemsize
    rows = np.empty((n, width), dtype=np.uint8)
    rows[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    rows[:, len(header):] = payload.reshape(n, dim).view(np.uint8)
    blob = rows.tobytes()
    return [blob[i : i + width] for i in range(0, n * width, width)]


def _direct(arr: pa.Array, value_type: "ValueType") -> list[bytes] | None:
    """One ValueProto per value through the protobuf class (no per-value type inference)."""
    from feast.protos.feast.types import Value_pb2 as V
    from feast.value_type import ValueType

    scalar = {
        ValueType.INT32: "int32_val", ValueType.INT64: "int64_val", ValueType.FLOAT: "float_val",
        ValueType.DOUBLE: "double_val", ValueType.STRING: "string_val", ValueType.BOOL: "bool_val",
    }
    lists = {
        ValueType.INT32_LIST: ("int32_list_val", V.Int32List), ValueType.INT64_LIST: ("int64_list_val", V.Int64List),
        ValueType.FLOAT_LIST: ("float_list_val", V.FloatList), ValueType.DOUBLE_LIST: ("double_list_val", V.DoubleList),
        ValueType.STRING_LIST: ("string_list_val", V.StringList), ValueType.BOOL_LIST: ("bool_list_val", V.BoolList),
    }
    if arr.null_count:
        return None
    make = V.Value
    if value_type in scalar:
        field = scalar[value_type]
        return [make(**{field: v}).SerializeToString() for v in arr.to_pylist()]
    if value_type in lists:
        field, cls = lists[value_type]
        if pc.list_flatten(arr).null_count:
            return None
        return [make(**{field: cls(val=v)}).SerializeToString() for v in arr.to_pylist()]
    return None


def encode_column(series: pl.Series, value_type: "ValueType") -> list[bytes]:
    """Serialized ``ValueProto`` of every value of ``series``, byte-identical to Feast's.

    Fast paths (fixed-width float arrays, repeated values, direct protobuf construction) are
    checked against Feast's conversion on the first rows; columns with nulls, or of a type
    without a fast path, use Feast's conversion throughout.
    """
    arr = _arrow(series)
    n = len(arr)
    if n == 0:
        return []
    expected = _feast_values(arr.slice(0, _CHECK_ROWS).to_numpy(zero_copy_only=False), value_type)
    candidates: list[Callable[[], list[bytes] | None]] = [lambda: _fixed_width_list(arr, value_type)]
    if not arr.null_count and (pa.types.is_primitive(arr.type) or pa.types.is_string(arr.type)
                               or pa.types.is_large_string(arr.type)):
        distinct = pc.count_distinct(arr).as_py()
        if distinct <= n * _DICTIONARY_SHARE:
            candidates.append(lambda: _dictionary(arr, value_type))
    candidates.append(lambda: _direct(arr, value_type))
    for encode in candidates:
        out = encode()
        if out is not None and out[: len(expected)] == expected:
            return out
    return _feast_values(arr.to_numpy(zero_copy_only=False), value_type)


def _dictionary(arr: pa.Array, value_type: "ValueType") -> list[bytes]:
    encoded = pc.dictionary_encode(arr)
    uniques = _feast_values(encoded.dictionary.to_numpy(zero_copy_only=False), value_type)
    return [uniques[i] for i in encoded.indices.to_numpy(zero_copy_only=False)]


def _timestamps(micros: np.ndarray) -> list[bytes]:
    """Serialized ``google.protobuf.Timestamp`` per row, each distinct instant built once."""
    from google.protobuf.timestamp_pb2 import Timestamp

    uniques, inverse = np.unique(micros, return_inverse=True)
    encoded = []
    for us in uniques.tolist():
        ts = Timestamp()
        ts.FromMicroseconds(us)
        encoded.append(ts.SerializeToString())
    return [encoded[i] for i in inverse.tolist()]


# ---------------------------------------------------------------- entity keys

def encode_entity_keys(frame: pl.DataFrame, view: _View, project: str, version: int = 3) -> list[bytes]:
    """Feast's Redis key of every row: ``serialize_entity_key(key, version) + project``.

    For the common single Int64 join key the serialized key is a constant prefix followed by
    the 8-byte little-endian id; the prefix is taken from Feast's ``serialize_entity_key`` and
    the layout checked on two ids, so a change in Feast's encoding fails loudly here.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    suffix = project.encode("utf-8")
    if view.key_types == (ValueType.INT64,):
        key = view.join_keys[0]

        def feast_key(v: int) -> bytes:
            proto = EntityKeyProto(join_keys=[key], entity_values=python_values_to_proto_values([v], ValueType.INT64))
            return serialize_entity_key(proto, entity_key_serialization_version=version)

        prefix = feast_key(0)[:-8]
        for probe in (0, -2, 2**40 + 7):
            if feast_key(probe) != prefix + struct.pack("<q", probe):
                raise FeatureStoreError("Feast's entity key layout changed: the Int64 fast path no longer applies")
        ids = frame[key].cast(pl.Int64).to_numpy()
        width = len(prefix) + 8 + len(suffix)
        rows = np.empty((len(ids), width), dtype=np.uint8)
        rows[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        rows[:, len(prefix) : len(prefix) + 8] = ids.astype("<i8").view(np.uint8).reshape(-1, 8)
        rows[:, len(prefix) + 8 :] = np.frombuffer(suffix, dtype=np.uint8)
        blob = rows.tobytes()
        return [blob[i : i + width] for i in range(0, len(ids) * width, width)]
    return [serialize_entity_key(p, entity_key_serialization_version=version) + suffix for p in _entity_protos(frame, view)]


def _entity_protos(frame: pl.DataFrame, view: _View) -> list[Any]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.type_map import python_values_to_proto_values

    columns = [
        python_values_to_proto_values(_arrow(frame[k]).to_numpy(zero_copy_only=False), t)
        for k, t in zip(view.join_keys, view.key_types)
    ]
    return [EntityKeyProto(join_keys=list(view.join_keys), entity_values=list(vals)) for vals in zip(*columns)]


# ---------------------------------------------------------------- writers

def write_online(
    store: "FeatureStore",
    feature_view_name: str,
    df: pl.DataFrame,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    only_newer: bool = True,
) -> int:
    """Write ``df`` (join keys, features, the view's timestamp column) to the online store.

    Parameters
    ----------
    store : feast.FeatureStore
        An opened store (:func:`recsys.features.store.open_store`) where the view is applied.
    feature_view_name : str
        The feature view; ``df`` needs its join keys, every feature and its batch source's
        timestamp field (naive timestamps are taken as UTC).
    batch_size : int
        Rows per Redis pipeline (one round trip each, no transaction).
    only_newer : bool
        Default True: skip rows not strictly newer than the stored row (Feast's semantics);
        False: overwrite.

    Returns
    -------
    int
        Rows written (after dropping older duplicates and not-newer rows).
    """
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size}: must be > 0")
    fv, view = _view(store, feature_view_name)
    frame = _prepare(df, view, only_newer)
    if frame.height == 0:
        return 0
    if isinstance(store.config.online_store, RedisOnlineStoreConfig):
        return _write_redis(store, view, frame, batch_size, only_newer)
    return _write_via_feast(store, fv, view, frame, batch_size, only_newer)


def _redis_client(store: "FeatureStore") -> Any:
    from feast.infra.online_stores.redis import RedisOnlineStore

    # Feast's own client factory, so connection strings (db=, password=, ssl=, cluster,
    # sentinel) mean exactly what they mean to Feast's reads.
    return RedisOnlineStore()._get_client(store.config.online_store)


def _ts_nanos(raw: bytes | None, cache: dict[bytes, int]) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    if not raw:
        return 0
    value = cache.get(raw)
    if value is None:
        ts = Timestamp()
        ts.ParseFromString(raw)
        value = cache[raw] = ts.seconds * 1_000_000_000 + ts.nanos
    return value


def _write_redis(store: "FeatureStore", view: _View, frame: pl.DataFrame, batch_size: int, only_newer: bool) -> int:
    from feast.infra.online_stores.helpers import _mmh3

    cfg = store.config.online_store
    client = _redis_client(store)
    keys = encode_entity_keys(frame, view, store.config.project, store.config.entity_key_serialization_version)
    micros = frame[view.timestamp_field].dt.epoch("us").to_numpy()
    ts_bytes = _timestamps(micros)
    ts_field = f"_ts:{view.name}".encode("utf-8")
    fields = [_mmh3(f"{view.name}:{f}") for f in view.features]
    columns = [encode_column(frame[f], t) for f, t in zip(view.features, view.feature_types)]
    new_nanos = micros.astype(np.int64) * 1000
    ttl = cfg.key_ttl_seconds
    written = 0
    cache: dict[bytes, int] = {}
    for start in range(0, frame.height, batch_size):
        rows: Any = range(start, min(start + batch_size, frame.height))
        if only_newer:
            stored = _pipelined(client, [(b"HGET", keys[i], ts_field) for i in rows])
            rows = [i for i, raw in zip(rows, stored) if new_nanos[i] > _ts_nanos(raw, cache)]
        commands: list[tuple] = []
        for i in rows:
            args: list[bytes] = [b"HSET", keys[i], ts_field, ts_bytes[i]]
            for field, column in zip(fields, columns):
                args += (field, column[i])
            commands.append(tuple(args))
            if ttl:
                commands.append((b"EXPIRE", keys[i], str(int(ttl)).encode()))
        _pipelined(client, commands)
        written += len(rows)
    return written


def _pipelined(client: Any, commands: list[tuple]) -> list[Any]:
    """Send ``commands`` in one round trip (no MULTI) and return the replies in order.

    For a standalone ``redis.Redis`` the commands are packed and sent on one pooled connection
    and the replies read back directly: redis-py's Pipeline object costs ~10 us of Python per
    command on top, which is most of the time of a bulk load. Cluster and other clients use
    their ordinary non-transactional pipeline.
    """
    import redis

    if not commands:
        return []
    if type(client) is not redis.Redis:
        with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        try:  # hiredis (installed with redis[hiredis]) packs a command in C
            from hiredis import pack_command

            packed: Any = [b"".join([pack_command(c) for c in commands])]  # one sendall
        except ImportError:
            packed = conn.pack_commands(commands)
        conn.send_packed_command(packed)
        replies = [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()  # a half-read reply stream must never be reused
        raise
    finally:
        pool.release(conn)
    errors = [r for r in replies if isinstance(r, redis.ResponseError)]
    if errors:
        raise FeatureStoreError(f"Redis refused {len(errors)} of {len(commands)} commands: {errors[0]}")
    return replies


def _write_via_feast(
    store: "FeatureStore", fv: "FeatureView", view: _View, frame: pl.DataFrame, batch_size: int, only_newer: bool
) -> int:
    """SQLite (and any other store): Feast's own write path, after the same newer-only filter."""
    written = 0
    provider = store._get_provider()
    for start in range(0, frame.height, batch_size):
        chunk = frame.slice(start, batch_size)
        if only_newer:
            stored = provider.online_read(
                config=store.config, table=fv, entity_keys=_entity_protos(chunk, view),
                requested_features=[view.features[0]],
            )
            old = [
                (ts.replace(tzinfo=ts.tzinfo or timezone.utc) - _EPOCH) // timedelta(microseconds=1) if ts else None
                for ts, _ in stored
            ]
            keep = pl.Series([o is None for o in old]) | (
                chunk[view.timestamp_field].dt.epoch("us") > pl.Series(old, dtype=pl.Int64).fill_null(-(2**62))
            )
            chunk = chunk.filter(keep)
        if chunk.height:
            store.write_to_online_store(fv.name, df=chunk.to_pandas(use_pyarrow_extension_array=False))
        written += chunk.height
    return written


__all__ = ["DEFAULT_BATCH_SIZE", "encode_column", "encode_entity_keys", "write_online"]
