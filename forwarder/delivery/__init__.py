"""Delivery stage: batch per sink, send with retry, checkpoint in order, dead-letter refusals."""
