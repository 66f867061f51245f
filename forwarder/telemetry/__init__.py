"""Telemetry: metrics, structured logs and the status HTTP server."""
