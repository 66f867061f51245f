"""Encoding stage: records and gaps into event JSON (a reference path and a fast chunk path)."""
