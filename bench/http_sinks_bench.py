"""Loki, Elasticsearch, OTLP and HTTP sinks: 1,000,000 kmsg records into a receiver that answers at once.

    .venv/bin/python bench/http_sinks_bench.py [--records N] [--batch N] [--dump PATH]
        [--forwarder] [--only PREFIX]   (e.g. --only otlp: just the otlp rows)

Writes a kmsg dump (records rendered with forwarder.source.parser.render_record, one per line
group, like /dev/kmsg reads), reads it back through the real parser and encoder in
batches, and sends every batch with the real sink to a loopback receiver running in
another process (so its CPU is not counted). Per sink configuration it prints
records/s (wall time inside send), client CPU seconds per million records (process
time inside send, including the event loop's HTTP work), request count and bytes on
the wire (request bodies as sent). Parse+encode cost is printed once, apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, web

from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.options import parse_table
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.elasticsearch.sink import ElasticsearchSink, ElasticsearchSinkConfig
from forwarder.sinks.http.sink import HttpSink, HttpSinkConfig
from forwarder.sinks.loki.sink import LokiSink, LokiSinkConfig
from forwarder.sinks.otlp.config import OtlpSinkConfig
from forwarder.sinks.otlp.sink import OtlpSink
from forwarder.sinks.outcome import Outcome
from forwarder.source.parser import Record, parse_record, render_record

MESSAGES = [
    (
        "[fw-drop] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=10.0.{a}.{b} "
        "DST=10.0.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID={n} DF PROTO=TCP SPT={p} DPT=22 WINDOW=64240 SYN"
    ),
    "usb 1-{a}: new high-speed USB device number {b} using xhci_hcd",
    "EXT4-fs (sda{a}): mounted filesystem {n:08x}-0000-4000-8000-000000000000 r/w with ordered data mode",
    'audit: type=1400 audit({n}.{p}:{b}): apparmor="DENIED" operation="open" profile="snap" name="/proc/{p}/mounts"',
    "e1000e 0000:00:1f.{a} eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
    "Out of memory: Killed process {p} (worker) total-vm:{n}kB, anon-rss:{b}kB, file-rss:0kB",
]


def write_dump(path: Path, count: int) -> None:
    """A dump of ``count`` records as the kernel formats them."""
    with path.open("wb") as dump:
        for seq in range(count):
            message = MESSAGES[seq % len(MESSAGES)].format(
                a=seq % 7, b=seq % 251, n=seq * 7919, p=1024 + seq % 30000
            )
            subsystem = "net" if seq % len(MESSAGES) in {0, 4} else None
            record = Record(
                facility_code=0,
                level_code=(4, 6, 6, 5, 6, 3)[seq % len(MESSAGES)],
                seq=seq,
                ts_usec=5_000_000 + seq * 50,
                flags="-",
                message=message,
                subsystem=subsystem,
                device="n2" if subsystem else None,
            )
            dump.write(render_record(record))


def read_batches(path: Path, size: int, who: Identity) -> Iterator[list[Event]]:
    """Parse and encode the dump, ``size`` events at a time."""
    batch: list[Event] = []
    pending: list[bytes] = []
    with path.open("rb") as dump:
        for line in dump:
            if not line.startswith(b" ") and pending:  # dictionary lines start with a space
                batch.append(encode_record(parse_record(b"".join(pending)), who))
                pending = []
                if len(batch) == size:
                    yield batch
                    batch = []
            pending.append(line)
    if pending:
        batch.append(encode_record(parse_record(b"".join(pending)), who))
    if batch:
        yield batch


def receiver(port: int, ready: Any) -> None:
    """Answer every request at once, counting requests and bytes on the wire."""
    stats = {"requests": 0, "wire_bytes": 0}

    async def ingest(request: web.Request) -> web.Response:
        wire = await request.read()
        stats["requests"] += 1
        stats["wire_bytes"] += len(wire)
        if request.path.endswith("/_bulk"):
            body = gzip.decompress(wire) if request.headers.get("Content-Encoding") else wire
            items = [{"create": {"status": 201}}] * (body.count(b"\n") // 2)
            return web.Response(body=orjson.dumps({"errors": False, "items": items}))
        return web.Response(status=204 if "loki" in request.path else 200)

    async def read_stats(_: web.Request) -> web.Response:
        answer = web.json_response(dict(stats))
        stats.update(requests=0, wire_bytes=0)
        return answer

    async def serve() -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/stats", read_stats)
        app.router.add_route("*", "/{tail:.*}", ingest)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


async def forwarder_table(dump: Path, url: str, count: int, only: str) -> None:
    """Whole forwarder, dump to receiver, one row per sink configuration."""
    tables = {
        "loki protobuf+snappy": {"type": "loki", "endpoint": url, "max_age_s": 0},
        "loki json+gzip": {
            "type": "loki", "endpoint": url, "max_age_s": 0, "encoding": "json", "compression": "gzip",
        },
        "elasticsearch": {"type": "elasticsearch", "endpoint": url},
        "elasticsearch gzip": {"type": "elasticsearch", "endpoint": url, "compression": "gzip"},
        "http ndjson": {"type": "http", "endpoint": url + "/ingest"},
        "http ndjson+gzip": {"type": "http", "endpoint": url + "/ingest", "compression": "gzip"},
        "otlp protobuf+gzip": {"type": "otlp", "endpoint": url},
        "otlp protobuf": {"type": "otlp", "endpoint": url, "compression": "none"},
        "otlp json+gzip": {"type": "otlp", "endpoint": url, "encoding": "json"},
        "otlp json": {"type": "otlp", "endpoint": url, "encoding": "json", "compression": "none"},
    }  # fmt: skip
    tables = {name: table for name, table in tables.items() if name.startswith(only)}
    print(
        f"whole forwarder (kmsg-forwarder run, [source] path = dump, default batching), {count:,} records"
    )
    print(f"{'sink':<22} {'records/s':>10} {'CPU s/M':>8} {'requests':>9} {'wire MB':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, table) in enumerate(tables.items()):
            row = await asyncio.to_thread(run_forwarder, dump, table, Path(scratch) / str(index))
            async with ClientSession() as session, session.get(url + "/stats") as response:
                stats = await response.json()
            if row["seq"] != count - 1:
                raise SystemExit(f"{name}: checkpoint at {row['seq']}, not {count - 1}")
            print(f"{name:<22} {count / row['wall']:>10,.0f} {row['cpu'] / count * 1e6:>8.2f} "
                  f"{stats['requests']:>9,} {stats['wire_bytes'] / 1e6:>8.1f}")  # fmt: skip
    print()


def sinks(url: str) -> list[tuple[str, Sink]]:
    """The configurations measured."""
    loki = {"type": "loki", "endpoint": url, "max_age_s": 0, "max_future_s": 0}
    es = {"type": "elasticsearch", "endpoint": url}
    http = {"type": "http", "endpoint": url + "/ingest"}
    otlp = {"type": "otlp", "endpoint": url}
    return [
        ("loki protobuf+snappy", LokiSink("b", parse_table(loki, LokiSinkConfig))),
        ("loki json", LokiSink("b", parse_table(loki | {"encoding": "json"}, LokiSinkConfig))),
        (
            "loki json+gzip",
            LokiSink(
                "b",
                parse_table(loki | {"encoding": "json", "compression": "gzip"}, LokiSinkConfig),
            ),
        ),
        ("elasticsearch", ElasticsearchSink("b", parse_table(es, ElasticsearchSinkConfig))),
        (
            "elasticsearch gzip",
            ElasticsearchSink(
                "b", parse_table(es | {"compression": "gzip"}, ElasticsearchSinkConfig)
            ),
        ),
        ("http ndjson", HttpSink("b", parse_table(http, HttpSinkConfig))),
        (
            "http ndjson+gzip",
            HttpSink("b", parse_table(http | {"compression": "gzip"}, HttpSinkConfig)),
        ),
        ("otlp protobuf+gzip", OtlpSink("b", parse_table(otlp, OtlpSinkConfig), host="b")),
        (
            "otlp protobuf",
            OtlpSink("b", parse_table(otlp | {"compression": "none"}, OtlpSinkConfig), host="b"),
        ),
        (
            "otlp json+gzip",
            OtlpSink("b", parse_table(otlp | {"encoding": "json"}, OtlpSinkConfig), host="b"),
        ),
        (
            "otlp json",
            OtlpSink(
                "b",
                parse_table(otlp | {"encoding": "json", "compression": "none"}, OtlpSinkConfig),
                host="b",
            ),
        ),
    ]


async def measure(
    sink: Sink, dump: Path, batch_size: int, who: Identity, url: str
) -> dict[str, float]:
    """Send the whole dump through one sink; time only the sends."""
    await sink.start()
    wall = cpu = 0.0
    records = 0
    for events in read_batches(dump, batch_size, who):
        batch = Batch(events)
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        result = await sink.send(batch)
        cpu += time.process_time() - cpu_start
        wall += time.perf_counter() - wall_start
        if result != Outcome.delivered():
            raise SystemExit(f"the receiver refused records: {result}")
        records += len(events)
    await sink.close()
    async with ClientSession() as session, session.get(url + "/stats") as response:
        stats = await response.json()
    return {"records": records, "wall": wall, "cpu": cpu, **stats}


def run_forwarder(dump: Path, sink: dict[str, Any], workdir: Path) -> dict[str, float]:
    """Replay the dump through ``kmsg-forwarder run`` ([source] path = dump) to the receiver.

    Returns wall and CPU seconds (forwarder and its capture process, from start to exit)
    and the checkpoint's final seq, which proves every record was acknowledged.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "forwarder.toml"
    table = "\n".join(f"{key} = {orjson.dumps(value).decode()}" for key, value in sink.items())
    # Records only, like the in-process sinks it is compared with: this dump yields one kernel
    # event per two records, whose cost bench/kernel_events_cost_bench.py measures.
    config.write_text(
        f'host = "bench-node"\nstate_dir = "{workdir / "state"}"\n'
        f'[source]\npath = "{dump}"\n[kernel_events]\nenabled = false\n[sinks.bench]\n{table}\n'
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with (workdir / "stderr").open("wb") as log:
        code = subprocess.run(  # noqa: PLW1510 - the code is checked just below
            [sys.executable, "-m", "forwarder", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        ).returncode
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"forwarder exited {code}: see {workdir / 'stderr'}")
    checkpoint = orjson.loads((workdir / "state" / "checkpoints" / "bench.json").read_bytes())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "seq": checkpoint["seq"]}


async def main() -> None:
    """Build the dump, start the receiver, measure every configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dump", type=Path, default=None)
    parser.add_argument(
        "--forwarder", action="store_true", help="replay the dump through kmsg-forwarder run too"
    )
    parser.add_argument("--only", default="", help="measure only the rows whose name starts so")
    args = parser.parse_args()
    dump = args.dump or Path(tempfile.gettempdir()) / f"kmsg-dump-{args.records}.bin"
    if not dump.exists():
        write_dump(dump, args.records)
    who = Identity(
        host="bench-node", boot_id="0" * 8 + "-bench", clock_offset_ns=time.time_ns() - 10**10
    )

    started = time.process_time()
    parsed = sum(len(batch) for batch in read_batches(dump, args.batch, who))
    encode_cpu = time.process_time() - started

    port = 20000 + os.getpid() % 20000
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=receiver, args=(port, ready), daemon=True)
    server.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{port}"
    print(
        f"{parsed:,} records from {dump} ({dump.stat().st_size / 1e6:.0f} MB), batches of {args.batch}, "
        f"{os.cpu_count()} CPUs; parse+encode (not counted below): {encode_cpu / parsed * 1e6:.2f} CPU s per million"
    )
    try:
        if args.forwarder:
            await forwarder_table(dump, url, args.records, args.only)
        print("sinks alone: send() only, one batch in flight")
        print(
            f"{'sink':<22} {'records/s':>10} {'CPU s/M':>8} {'requests':>9} {'wire MB':>8} {'B/record':>9}"
        )
        for name, sink in sinks(url):
            if not name.startswith(args.only):
                continue
            row = await measure(sink, dump, args.batch, who, url)
            per_million = row["cpu"] / row["records"] * 1e6
            print(
                f"{name:<22} {row['records'] / row['wall']:>10,.0f} {per_million:>8.2f} "
                f"{row['requests']:>9,} {row['wire_bytes'] / 1e6:>8.1f} {row['wire_bytes'] / row['records']:>9.1f}"
            )
    finally:
        server.kill()
        server.join()


if __name__ == "__main__":
    asyncio.run(main())
