"""Kafka sink, end to end: a kmsg dump replayed through the forwarder into a local broker.

Prints records/s and CPU seconds per million records for

1. ``raw producer``: aiokafka alone sending the same, already encoded messages with one
   ``send()`` each (same key, headers, acks, codec, linger and batch size as the sink):
   nothing to read, parse, encode, batch or checkpoint. The sink itself produces through
   aiokafka's cheaper batch API (``create_batch``/``send_batch``).
2. ``forwarder``: ``kmsg-forwarder run`` reading the dump file (capture process, parse,
   encode, batch, KafkaSink, checkpoints), one process tree, timed from start to exit.

Both go to the same Tansu broker (memory storage) in the same run; the broker's CPU
is shown apart. Message counts are checked from the topic's end offsets.

    .venv/bin/python bench/kafka_bench.py [--records 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from forwarder.encoding.reference import Identity, encode_record  # noqa: E402
from forwarder.sinks.kafka.config import best_compression  # noqa: E402
from forwarder.source.parser import Record, render_record  # noqa: E402
from tests.support.kafka_broker import KafkaBroker, consume_sync, tansu_binary  # noqa: E402
from tests.support.tcp_proxy import free_port  # noqa: E402

HOST = "bench-host"
BOOT_ID = "6d1f8a52-0c3e-4b7d-9f21-5a4c3b2e1d0f"
LINGER_MS = 5
MAX_BATCH_BYTES = 524_288


def make_records(count: int) -> list[Record]:
    """Kernel-like records: netfilter LOG lines, device messages, plain text."""
    records = []
    for seq in range(count):
        kind = seq % 4
        ts = 1_000_000 + seq * 37
        if kind == 0:
            text = (
                f"[fw-drop] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC=10.0.{seq % 250}.{seq % 200} "
                f"DST=10.1.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID={seq % 65535} DF PROTO=TCP "
                f"SPT={1024 + seq % 60000} DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0"
            )
            records.append(Record(0, 4, seq, ts, "-", text))
        elif kind == 1:
            text = f"e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex (event {seq})"
            records.append(
                Record(0, 6, seq, ts, "-", text, subsystem="pci", device="+pci:0000:00:19.0")
            )
        elif kind == 2:
            text = f'audit: type=1400 audit({seq}.123:{seq}): apparmor="DENIED" operation="open" profile="snap"'
            records.append(Record(0, 5, seq, ts, "-", text))
        else:
            records.append(
                Record(1, 6, seq, ts, "-", f"systemd[1]: Started session {seq} of user root.")
            )
    return records


def write_dump(records: list[Record], path: Path) -> int:
    """Write the records as ``cat /dev/kmsg`` would; return the size in bytes."""
    with path.open("wb") as dump:
        for start in range(0, len(records), 10_000):
            dump.write(b"".join(render_record(r) for r in records[start : start + 10_000]))
    return path.stat().st_size


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_of_pid(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def raw_producer(
    bootstrap: str, topic: str, records: list[Record], compression: str
) -> tuple[float, float]:
    """Send the pre-encoded messages with aiokafka alone; return (wall s, cpu s)."""
    identity = Identity(HOST, BOOT_ID, 1_790_000_000_000_000_000)
    events = [encode_record(r, identity) for r in records]
    messages = [
        (
            e.json,
            [
                ("boot_id", BOOT_ID.encode()),
                ("seq", str(e.checkpoint_seq).encode()),
                ("content-type", b"application/json"),
            ],
        )
        for e in events
    ]
    key = HOST.encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        compression_type=compression,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=30_000,
    )
    await producer.start()
    cpu0, wall0 = cpu_self(), time.perf_counter()
    try:
        futures = [
            await producer.send(topic, value, key, headers=headers) for value, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        wall, cpu = time.perf_counter() - wall0, cpu_self() - cpu0
        await producer.stop()
    return wall, cpu


def run_forwarder(
    bootstrap: str, topic: str, dump: Path, workdir: Path, batch_records: int
) -> tuple[float, float]:
    """Replay the dump through ``kmsg-forwarder run``; return (wall s, cpu s of its process tree)."""
    state = workdir / f"state-{topic}"
    boot_id = workdir / "boot_id"
    boot_id.write_text(BOOT_ID + "\n")
    config = workdir / f"{topic}.toml"
    config.write_text(
        f'host = "{HOST}"\nstate_dir = "{state}"\n'
        f'[source]\npath = "{dump}"\nboot_id_path = "{boot_id}"\n'
        # Records only, the messages the aiokafka producer sends too (kernel events: the cost
        # bench of bench/kernel_events_cost_bench.py).
        "[kernel_events]\nenabled = false\n"
        f"[batch]\nmax_records = {batch_records}\nmax_bytes = 4194304\nlinger_ms = 50\n"
        f'[sinks.kafka]\ntype = "kafka"\nbootstrap_servers = ["{bootstrap}"]\ntopic = "{topic}"\n'
        f"enable_idempotence = false\nlinger_ms = {LINGER_MS}\nmax_batch_bytes = {MAX_BATCH_BYTES}\n"
    )
    command = [
        str(ROOT / ".venv/bin/kmsg-forwarder"),
        "run",
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]
    cpu0, wall0 = cpu_children(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False, timeout=1800)
    wall, cpu = time.perf_counter() - wall0, cpu_children() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"forwarder failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    checkpoint = orjson.loads((state / "checkpoints" / "kafka.json").read_bytes())
    print(f"  forwarder checkpoint: seq {checkpoint['seq']}", flush=True)
    return wall, cpu


def topic_seqs(bootstrap: str, topic: str, expected: int) -> tuple[int, int]:
    """Read the topic back: (messages, distinct seqs), from the ``seq`` header."""
    messages = consume_sync(bootstrap, topic, done=lambda m: len(m) >= expected, timeout_s=300)
    seqs = {dict(m.headers)["seq"] for m in messages}
    return len(messages), len(seqs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--batch-records", type=int, default=500, help="[batch] max_records of the forwarder"
    )
    args = parser.parse_args()
    compression = best_compression()

    with tempfile.TemporaryDirectory(prefix="kafka-bench-") as tmp:
        workdir = Path(tmp)
        records = make_records(args.records)
        dump = workdir / "kmsg.dump"
        size = write_dump(records, dump)
        port = free_port()
        broker = KafkaBroker(tansu_binary(), port, port, workdir / "tansu.log").start()
        try:
            raw_topic = broker.create_topic("bench-raw", partitions=1)
            fwd_topic = broker.create_topic("bench-forwarder", partitions=1)
            assert broker.process is not None
            broker_cpu0 = cpu_of_pid(broker.process.pid)
            raw_wall, raw_cpu = asyncio.run(
                raw_producer(broker.bootstrap, raw_topic, records, compression)
            )
            broker_cpu1 = cpu_of_pid(broker.process.pid)
            print(f"  raw producer: {raw_wall:.2f} s wall, {raw_cpu:.2f} s CPU", flush=True)
            del records
            fwd_wall, fwd_cpu = run_forwarder(
                broker.bootstrap, fwd_topic, dump, workdir, args.batch_records
            )
            broker_cpu2 = cpu_of_pid(broker.process.pid)
            print(f"  forwarder: {fwd_wall:.2f} s wall, {fwd_cpu:.2f} s CPU", flush=True)
            raw_count = topic_seqs(broker.bootstrap, raw_topic, args.records)
            fwd_count = topic_seqs(broker.bootstrap, fwd_topic, args.records)
        finally:
            broker.stop()

    n = args.records
    per_m = 1_000_000 / n
    print(
        f"\n{n:,} records, dump {size / 1e6:.1f} MB, codec {compression}, linger {LINGER_MS} ms, "
        f"{os.cpu_count()} CPUs, Tansu memory broker on loopback\n"
    )
    print(
        f"{'run':<16}{'messages':>10}{'seqs':>10}{'wall s':>9}{'records/s':>12}{'CPU s/M':>10}{'broker CPU s/M':>16}"
    )
    rows = [
        ("raw producer", raw_count, raw_wall, raw_cpu, broker_cpu1 - broker_cpu0),
        ("forwarder", fwd_count, fwd_wall, fwd_cpu, broker_cpu2 - broker_cpu1),
    ]
    for name, (count, seqs), wall, cpu, broker_cpu in rows:
        print(
            f"{name:<16}{count:>10,}{seqs:>10,}{wall:>9.2f}{n / wall:>12,.0f}{cpu * per_m:>10.2f}{broker_cpu * per_m:>16.2f}"
        )
    print(f"\nforwarder / raw producer throughput: {raw_wall / fwd_wall:.0%}")


if __name__ == "__main__":
    main()
