"""The http sink: config (light, no client library), sink and protocol pieces."""
