"""The gRPC boundary of the orchestrator: clients of the encoder and proxy services,
the OrchestratorService servicer, sharded fan-out, service processes and the notebook
Client. The only layer that imports grpc or the generated protos: it turns RpcError
into the proxal error hierarchy, and hands the layers below dataclasses, never protos."""
