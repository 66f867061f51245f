"""The otlp sink: config (light, no client library), mapping, encoders and sink."""
