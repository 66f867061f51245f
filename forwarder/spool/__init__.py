"""The durable disk spool: one shared log of raw kmsg records in front of every sink.

``spool.Spool`` writes and bounds it, ``reader.SpoolReader`` reads it at a sink's
checkpoint, ``check.check_spool`` verifies it (``kmsg-forwarder spool check``); the bytes on
disk are described in ``format``. README "Spool" has the guarantees per crash point.
"""
