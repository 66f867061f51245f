"""The elasticsearch sink: config (light, no client library), sink and protocol pieces."""
