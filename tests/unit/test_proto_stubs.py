"""The committed gRPC stubs are exactly what the pinned grpcio-tools generates from proto/."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from recsys.serving.protogen import PROJECT_ROOT, generate

STUBS = PROJECT_ROOT / "recsys" / "serving" / "v1"


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    fresh = {p.name: p.read_text() for p in generate(tmp_path / "v1")}
    committed = {p.name: p.read_text() for p in STUBS.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}
    assert set(committed) == set(fresh), "stub files differ: run scripts/gen_proto.sh"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale stubs {stale}: run scripts/gen_proto.sh and commit the result"


def test_the_generator_is_the_pinned_version():
    pinned = next(line.split("==")[1].strip() for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
                  if line.lower().startswith("grpcio-tools=="))
    assert importlib.metadata.version("grpcio-tools") == pinned


def test_stubs_import_under_the_serving_package():
    from recsys.serving.v1 import recommender_pb2, recommender_pb2_grpc

    assert recommender_pb2.DESCRIPTOR.package == "recsys.v1"
    assert hasattr(recommender_pb2_grpc, "RecommenderStub")
    assert Path(recommender_pb2.__file__).parent == STUBS
