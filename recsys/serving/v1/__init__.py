"""Generated gRPC stubs of proto/recsys/v1 (scripts/gen_proto.sh); do not edit."""
