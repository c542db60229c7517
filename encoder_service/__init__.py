"""proxal's encoder service: ingests pools of texts and embeds them as immutable versions.

`ingest` parses uploads, `encoders` turns texts into vectors (torch or ONNX Runtime),
`pipeline` runs a pool through an encoder into the store, and `servicer` exposes them over
gRPC (`python -m proxal.encoder_service`).
"""
