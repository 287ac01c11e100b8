"""gRPC adapters: protobuf <-> domain objects, errors -> google.rpc.Status.

No SQL and no model maths here; each module adapts one service.
"""
