"""The durable disk spool: one shared log of raw kmsg records in front of every sink.

``spool.Spool`` writes and bounds it (``writer``, ``recovery``, ``eviction``, ``memory``),
``appender`` is the reader's way in, ``reader.SpoolReader`` reads it at a sink's checkpoint,
``feeds`` feeds the sinks through it (``start_plan``, ``live_queue``, ``fanout``; a lagging
sink: ``catch_up``, ``lagging_events``, ``catch_up_loop``), ``check.inspect_spool`` verifies it
(``kmsg-forwarder spool check``); the bytes on disk are described in ``format``. README
"Spool" has the guarantees per crash point.
"""
