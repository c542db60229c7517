"""Labelling sessions: the label log, leases, request ids, label and pool files."""
