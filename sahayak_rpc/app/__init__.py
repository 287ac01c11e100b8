"""Use cases: what the server does, in terms of domain objects and the store.

The gRPC adapters (``sahayak_rpc.api``) call these; they hold no protobuf
and no SQL of their own.
"""

from .context import AppContext

__all__ = ["AppContext"]
