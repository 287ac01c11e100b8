"""sahayak-rpc: a gRPC server for the whole life of a binary-outcome model."""
