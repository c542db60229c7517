"""Label Studio's ML-backend contract over a proxal labelling session (docs/label_studio.md):
label-config parsing, task to pool-id mapping, webhook events to label operations and
the score map. No HTTP and no gRPC here: `rpc/ls_http.py` serves it, `rpc/ls_client.py`
talks to the orchestrator."""
