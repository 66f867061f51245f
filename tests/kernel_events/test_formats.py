"""Formats of the spec that the shared vectors do not cover, one report each.

Each case is real kernel text of a documented format (SPEC.md section 3); the expected
fields follow the vectors' field conventions.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel_events.support import kmsg, run

CASES: list[tuple[str, list[tuple[int, str]], list[tuple[str, int, int, bool, dict[str, Any]]]]] = [
    (
        "cper",
        [
            (4, "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0"),
            (4, "{1}[Hardware Error]: event severity: corrected"),
            (4, "{1}[Hardware Error]:  Error 0, type: corrected"),
            (4, "{1}[Hardware Error]:   section_type: memory error"),
            (4, "{1}[Hardware Error]:   physical_address: 0x0000006a47d1f540"),
        ],
        [
            (
                "hw_error",
                1,
                5,
                True,
                {
                    "kind": "cper",
                    "seqno": 1,
                    "source_id": 0,
                    "severity": "corrected",
                    "section_type": "memory error",
                    "physical_address": "0x6a47d1f540",
                },
            )
        ],
    ),
    (
        "xfs_corrupt",
        [
            (
                1,
                (
                    "XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0xa0/0x730 [xfs], inode "
                    "0x80 dinode"
                ),
            ),
            (1, "XFS (sdb1): Unmount and run xfs_repair"),
            (1, "XFS (sdb1): First 32 bytes of corrupted metadata buffer:"),
            (
                1,
                "XFS (sdb1): 00000000: 49 4e 41 ed 03 01 00 00 00 00 00 00 00 00 00 00  INA.............",
            ),
            (
                1,
                "XFS (sdb1): 00000010: 00 00 00 02 00 00 00 00 00 00 00 00 00 00 00 00  ................",
            ),
        ],
        [
            (
                "fs_error",
                1,
                5,
                True,
                {
                    "kind": "corruption",
                    "fs": "xfs",
                    "device": "sdb1",
                    "at_function": "xfs_dinode_verify",
                    "inode": 128,
                    "inode_verifier": "dinode",
                    "dump_bytes": 32,
                },
            )
        ],
    ),
    (
        "xfs_io",
        [
            (
                3,
                (
                    'XFS (dm-3): metadata I/O error in "xfs_trans_read_buf_map+0x1ac/0x2d0 [xfs]" at daddr '
                    "0x3a0 len 8 error 5"
                ),
            )
        ],
        [
            (
                "fs_error",
                1,
                1,
                True,
                {
                    "kind": "metadata_io_error",
                    "fs": "xfs",
                    "device": "dm-3",
                    "function": "xfs_trans_read_buf_map",
                    "daddr": "0x3a0",
                    "len": 8,
                    "error": 5,
                },
            )
        ],
    ),
    (
        "btrfs_csum",
        [
            (
                4,
                (
                    "BTRFS warning (device sda2): csum failed root 5 ino 257 off 0 csum 0x8941f998 expected "
                    "csum 0x00000000 mirror 1"
                ),
            )
        ],
        [
            (
                "fs_error",
                1,
                1,
                True,
                {
                    "kind": "csum_failed",
                    "fs": "btrfs",
                    "device": "sda2",
                    "root": 5,
                    "inode": 257,
                    "off": 0,
                    "csum": "0x8941f998",
                    "expected_csum": "0x00000000",
                    "mirror": 1,
                },
            )
        ],
    ),
    (
        "btrfs_stats",
        [
            (
                3,
                "BTRFS error (device sda2): bdev /dev/sda2 errs: wr 0, rd 0, flush 0, corrupt 1, gen 0",
            )
        ],
        [
            (
                "fs_error",
                1,
                1,
                True,
                {
                    "kind": "dev_stats",
                    "fs": "btrfs",
                    "device": "sda2",
                    "bdev": "/dev/sda2",
                    "wr": 0,
                    "rd": 0,
                    "flush": 0,
                    "corrupt": 1,
                    "gen": 0,
                },
            )
        ],
    ),
    (
        "ext4_warn",
        [
            (
                4,
                (
                    "EXT4-fs warning (device sda1): ext4_dx_add_entry:2461: Directory (ino: 2) index full, "
                    "reach max htree level :2"
                ),
            )
        ],
        [
            (
                "fs_error",
                1,
                1,
                True,
                {
                    "fs": "ext4",
                    "kind": "warning",
                    "device": "sda1",
                    "function": "ext4_dx_add_entry",
                    "line": 2461,
                    "message": "Directory (ino: 2) index full, reach max htree level :2",
                },
            )
        ],
    ),
    (
        "ext4_in",
        [(2, "EXT4-fs error (device sda1) in ext4_reserve_inode_write:5742: Journal has aborted")],
        [
            (
                "fs_error",
                1,
                1,
                True,
                {
                    "fs": "ext4",
                    "kind": "error",
                    "device": "sda1",
                    "function": "ext4_reserve_inode_write",
                    "line": 5742,
                    "message": "Journal has aborted",
                },
            )
        ],
    ),
    (
        "seccomp",
        [
            (
                5,
                (
                    "audit: type=1326 audit(1700000000.123:45): auid=1000 uid=1000 gid=1000 ses=2 "
                    'subj=unconfined pid=4242 comm="chrome" exe="/opt/chrome" sig=31 arch=c000003e syscall=165 '
                    "compat=0 ip=0x7f00 code=0x80000000"
                ),
            )
        ],
        [
            (
                "audit",
                1,
                1,
                True,
                {
                    "audit_type": 1326,
                    "audit_time": "1700000000.123",
                    "audit_serial": 45,
                    "lsm": "seccomp",
                    "outcome": "killed",
                    "fields": {
                        "auid": "1000",
                        "uid": "1000",
                        "gid": "1000",
                        "ses": "2",
                        "subj": "unconfined",
                        "pid": "4242",
                        "comm": "chrome",
                        "exe": "/opt/chrome",
                        "sig": "31",
                        "arch": "c000003e",
                        "syscall": "165",
                        "compat": "0",
                        "ip": "0x7f00",
                        "code": "0x80000000",
                    },
                },
            )
        ],
    ),
    (
        "selinux",
        [
            (
                5,
                (
                    "audit: type=1400 audit(1700000000.123:46): avc:  denied  { read } for  pid=123 "
                    'comm="httpd" name="index.html" dev="sda1" ino=5 scontext=system_u:system_r:httpd_t:s0 '
                    "tcontext=unconfined_u:object_r:user_home_t:s0 tclass=file permissive=0"
                ),
            )
        ],
        [
            (
                "audit",
                1,
                1,
                True,
                {
                    "audit_type": 1400,
                    "audit_time": "1700000000.123",
                    "audit_serial": 46,
                    "lsm": "selinux",
                    "outcome": "denied",
                    "fields": {
                        "pid": "123",
                        "comm": "httpd",
                        "name": "index.html",
                        "dev": "sda1",
                        "ino": "5",
                        "scontext": "system_u:system_r:httpd_t:s0",
                        "tcontext": "unconfined_u:object_r:user_home_t:s0",
                        "tclass": "file",
                        "permissive": "0",
                    },
                },
            )
        ],
    ),
    (
        "hard_6_18",
        [
            (0, "watchdog: CPU2: Watchdog detected hard LOCKUP on cpu 3"),
            (4, "Modules linked in: a"),
            (4, "CPU: 3 UID: 0 PID: 77 Comm: spin Not tainted 6.18.2 #1 PREEMPT(voluntary) "),
            (4, "Call Trace:"),
            (4, " <TASK>"),
            (4, " foo+0x1/0x2"),
            (4, " </TASK>"),
        ],
        [
            (
                "hard_lockup",
                1,
                7,
                True,
                {
                    "detector": "watchdog",
                    "detected_by_cpu": 2,
                    "cpu": 3,
                    "pid": 77,
                    "comm": "spin",
                    "uid": 0,
                    "taint_flags": "",
                    "kernel_release": "6.18.2",
                    "preempt_model": "voluntary",
                },
            )
        ],
    ),
    (
        "rcu_self",
        [
            (3, "rcu: INFO: rcu_preempt self-detected stall on CPU"),
            (
                3,
                "rcu: \t2-....: (5249 ticks this GP) idle=b4c/1/0x4000000000000000 softirq=1/1 fqs=2500",
            ),
            (3, "rcu: \t(t=5250 jiffies g=12345 q=678 ncpus=8)"),
        ],
        [
            (
                "rcu_stall",
                1,
                3,
                True,
                {
                    "flavor": "rcu_preempt",
                    "kind": "self_detected",
                    "cpus": [2],
                    "jiffies": 5250,
                    "gp": 12345,
                    "qlen": 678,
                    "ncpus": 8,
                },
            )
        ],
    ),
    (
        "rcu_exp",
        [
            (
                3,
                (
                    "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 3-.... 5-.... } 21003 "
                    "jiffies s: 1234 root: 0x28/."
                ),
            )
        ],
        [
            (
                "rcu_stall",
                1,
                1,
                True,
                {"flavor": "rcu_preempt", "kind": "expedited", "cpus": [3, 5], "jiffies": 21003},
            )
        ],
    ),
    (
        "blk_legacy",
        [
            (3, "blk_update_request: I/O error, dev sdb, sector 2048"),
            (3, "print_req_error: I/O error, dev sdc, sector 10 flags 80700"),
        ],
        [
            (
                "block_io_error",
                1,
                1,
                True,
                {
                    "source": "blk",
                    "caller": "blk_update_request",
                    "status": "I/O",
                    "device": "sdb",
                    "sector": 2048,
                },
            ),
            (
                "block_io_error",
                2,
                2,
                True,
                {
                    "source": "blk",
                    "caller": "print_req_error",
                    "status": "I/O",
                    "device": "sdc",
                    "sector": 10,
                    "flags": "80700",
                },
            ),
        ],
    ),
    (
        "nvme_5x",
        [
            (4, "nvme nvme1: I/O 12 QID 3 timeout, aborting"),
            (4, "nvme nvme1: I/O 13 QID 3 timeout, reset controller"),
        ],
        [
            (
                "storage_error",
                1,
                1,
                True,
                {
                    "transport": "nvme",
                    "kind": "timeout",
                    "device": "nvme1",
                    "tag": 12,
                    "qid": 3,
                    "action": "aborting",
                },
            ),
            (
                "storage_error",
                2,
                2,
                True,
                {
                    "transport": "nvme",
                    "kind": "timeout",
                    "device": "nvme1",
                    "tag": 13,
                    "qid": 3,
                    "action": "reset controller",
                },
            ),
        ],
    ),
    (
        "nvme_err",
        [
            (
                3,
                "nvme0n1: Read(0x2) @ LBA 123, 8 blocks, Unrecovered Read Error (sct 0x2 / sc 0x81) DNR ",
            )
        ],
        [
            (
                "storage_error",
                1,
                1,
                True,
                {
                    "transport": "nvme",
                    "device": "nvme0n1",
                    "opcode_name": "Read",
                    "opcode": "0x2",
                    "lba": 123,
                    "blocks": 8,
                    "status_text": "Unrecovered Read Error",
                    "sct": "0x2",
                    "sc": "0x81",
                    "dnr": True,
                    "kind": "media_error",
                },
            )
        ],
    ),
    (
        "link_ixgbe",
        [
            (6, "ixgbe 0000:03:00.0 eth2: NIC Link is Up 10 Gbps, Flow Control: RX/TX"),
            (6, "mlx5_core 0000:5e:00.0 ens1f0: Link up"),
            (
                6,
                (
                    "i40e 0000:3b:00.0 ens2f0: NIC Link is Up, 25 Gbps Full Duplex, Requested FEC: None, "
                    "Negotiated FEC: None, Autoneg: False, Flow Control: None"
                ),
            ),
        ],
        [
            (
                "link_state",
                1,
                1,
                True,
                {
                    "ifname": "eth2",
                    "driver": "ixgbe",
                    "bus_id": "0000:03:00.0",
                    "state": "up",
                    "flow_control": "RX/TX",
                    "speed_mbps": 10000,
                },
            ),
            (
                "link_state",
                2,
                2,
                True,
                {
                    "ifname": "ens1f0",
                    "driver": "mlx5_core",
                    "bus_id": "0000:5e:00.0",
                    "state": "up",
                },
            ),
            (
                "link_state",
                3,
                3,
                True,
                {
                    "ifname": "ens2f0",
                    "driver": "i40e",
                    "bus_id": "0000:3b:00.0",
                    "state": "up",
                    "flow_control": "None",
                    "speed_mbps": 25000,
                    "duplex": "full",
                },
            ),
        ],
    ),
    (
        "taint_p",
        [
            (4, "nvidia: module license 'NVIDIA' taints kernel."),
            (4, "livepatch_x: tainting kernel with TAINT_LIVEPATCH"),
        ],
        [
            (
                "kernel_taint",
                1,
                1,
                True,
                {
                    "module": "nvidia",
                    "license": "NVIDIA",
                    "flag": "P",
                    "reason": "proprietary_license",
                },
            ),
            (
                "kernel_taint",
                2,
                2,
                True,
                {"module": "livepatch_x", "flag": "K", "reason": "livepatch"},
            ),
        ],
    ),
    (
        "thermal_54",
        [
            (
                4,
                "mce: CPU0: Core temperature above threshold, cpu clock throttled (total events = 1)",
            ),
            (6, "mce: CPU0: Core temperature/speed normal"),
        ],
        [
            (
                "thermal_throttle",
                1,
                1,
                True,
                {"cpu": 0, "level": "core", "total_events": 1, "state": "throttled"},
            ),
            ("thermal_throttle", 2, 2, True, {"cpu": 0, "level": "core", "state": "normal"}),
        ],
    ),
    (
        "edac_ue",
        [
            (
                0,
                (
                    "EDAC MC0: 1 UE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 slot:0 "
                    "page:0x123 offset:0x0 grain:32 -  err_code:0101:0090)"
                ),
            )
        ],
        [
            (
                "hw_error",
                1,
                1,
                True,
                {
                    "mc": 0,
                    "count": 1,
                    "error_type": "memory read error",
                    "label": "CPU_SrcID#0_MC#0_Chan#0_DIMM#0",
                    "page": "0x123",
                    "offset": "0x0",
                    "grain": 32,
                    "detail": "err_code:0101:0090",
                    "severity": "uncorrected",
                    "kind": "edac",
                },
            )
        ],
    ),
    (
        "gpf",
        [
            (
                4,
                (
                    "traps: python3[1234] general protection fault ip:7f1e sp:7ffd error:0 in "
                    "libc.so.6[7f00+1000]"
                ),
            )
        ],
        [
            (
                "user_fault",
                1,
                1,
                True,
                {
                    "kind": "general_protection",
                    "comm": "python3",
                    "pid": 1234,
                    "ip": "0x7f1e",
                    "sp": "0x7ffd",
                    "error": 0,
                    "vma_file": "libc.so.6",
                    "vma_start": "0x7f00",
                    "vma_size": "0x1000",
                },
            )
        ],
    ),
    (
        "conntrack_ns",
        [
            (4, "nf_conntrack: nf_conntrack: table full in netns 4026531840, dropping packet"),
            (4, "nf_conntrack: expectation table full"),
        ],
        [
            ("conntrack_full", 1, 1, True, {"kind": "table_full", "netns": 4026531840}),
            ("conntrack_full", 2, 2, True, {"kind": "expectation_table_full"}),
        ],
    ),
    (
        "icmp",
        [
            (
                4,
                (
                    "[ICMP] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:ab:cd:ef:08:00 SRC=10.0.0.1 "
                    "DST=10.0.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=ICMP TYPE=8 CODE=0 ID=42 "
                    "SEQ=1 "
                ),
            )
        ],
        [
            (
                "netfilter_log",
                1,
                1,
                True,
                {
                    "prefix": "[ICMP] ",
                    "in": "eth0",
                    "out": "",
                    "mac": "52:54:00:12:34:56:52:54:00:ab:cd:ef:08:00",
                    "mac_dst": "52:54:00:12:34:56",
                    "mac_src": "52:54:00:ab:cd:ef",
                    "ethertype": "0x0800",
                    "ip_version": 4,
                    "src": "10.0.0.1",
                    "dst": "10.0.0.2",
                    "len": 84,
                    "tos": "0x00",
                    "prec": "0x00",
                    "ttl": 64,
                    "id": 1,
                    "ip_flags": ["DF"],
                    "proto": "ICMP",
                    "icmp_type": 8,
                    "icmp_code": 0,
                    "icmp_id": 42,
                    "icmp_seq": 1,
                },
            )
        ],
    ),
    (
        "icmp_err",
        [
            (
                4,
                (
                    "LOG IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=56 TOS=0x00 PREC=0xC0 TTL=64 ID=5 "
                    "PROTO=ICMP TYPE=3 CODE=3 [SRC=10.0.0.2 DST=10.0.0.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=9 "
                    "PROTO=UDP SPT=5000 DPT=53 LEN=8 ] "
                ),
            )
        ],
        [
            (
                "netfilter_log",
                1,
                1,
                True,
                {
                    "prefix": "LOG ",
                    "in": "eth0",
                    "out": "",
                    "ip_version": 4,
                    "src": "10.0.0.1",
                    "dst": "10.0.0.2",
                    "len": 56,
                    "tos": "0x00",
                    "prec": "0xC0",
                    "ttl": 64,
                    "id": 5,
                    "proto": "ICMP",
                    "icmp_type": 3,
                    "icmp_code": 3,
                    "icmp_inner": {
                        "ip_version": 4,
                        "src": "10.0.0.2",
                        "dst": "10.0.0.1",
                        "len": 28,
                        "tos": "0x00",
                        "prec": "0x00",
                        "ttl": 64,
                        "id": 9,
                        "proto": "UDP",
                        "spt": 5000,
                        "dpt": 53,
                        "udp_len": 8,
                    },
                },
            )
        ],
    ),
    (
        "warn_nofile",
        [
            (4, "WARNING: CPU: 2 PID: 0 at __warn_thunk+0x1/0x2"),
            (4, "---[ end trace 0000000000000000 ]---"),
        ],
        [
            (
                "kernel_warning",
                1,
                2,
                True,
                {
                    "cpu": 2,
                    "pid": 0,
                    "function": "__warn_thunk",
                    "end_trace_id": "0000000000000000",
                },
            )
        ],
    ),
    (
        "gp_oops",
        [
            (
                4,
                (
                    "general protection fault, probably for non-canonical address 0xdead000000000100: 0000 "
                    "[#1] PREEMPT SMP NOPTI"
                ),
            ),
            (4, "CPU: 1 PID: 5 Comm: k Tainted: G        W          6.1.0 #1"),
            (4, "---[ end trace 0000000000000000 ]---"),
        ],
        [
            (
                "kernel_oops",
                1,
                3,
                True,
                {
                    "header": "general protection fault, probably for non-canonical address "
                    "0xdead000000000100",
                    "gp_address": "0xdead000000000100",
                    "die_error": 0,
                    "die_counter": 1,
                    "die_flags": ["PREEMPT", "SMP", "NOPTI"],
                    "cause": "general_protection",
                    "cpu": 1,
                    "pid": 5,
                    "comm": "k",
                    "taint_flags": "W",
                    "kernel_release": "6.1.0",
                    "end_trace_id": "0000000000000000",
                },
            )
        ],
    ),
    (
        "sleeping",
        [
            (3, "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:283"),
            (3, "in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 42, name: kworker/1:0"),
            (3, "preempt_count: 1, expected: 0"),
            (4, "Call Trace:"),
            (4, " <TASK>"),
            (4, " dump_stack+0x1/0x2"),
            (4, " </TASK>"),
        ],
        [
            (
                "kernel_bug",
                1,
                7,
                True,
                {
                    "bug_type": "sleeping function called from invalid context",
                    "detail": "kernel/locking/mutex.c:283",
                    "file": "kernel/locking/mutex.c",
                    "line": 283,
                    "pid": 42,
                    "comm": "kworker/1:0",
                    "preempt_count": "0x1",
                },
            )
        ],
    ),
    (
        "hung_blocker",
        [
            (3, "INFO: task kworker/0:1:99 blocked for more than 122 seconds."),
            (3, "      Tainted: G           O       6.18.2 #1"),
            (
                6,
                (
                    "task:kworker/0:1     state:D stack:0     pid:99    tgid:99    ppid:2      "
                    "task_flags:0x4208060 flags:0x00004000"
                ),
            ),
            (6, "Call Trace:"),
            (6, " <TASK>"),
            (6, " schedule+0x1/0x2"),
            (6, " </TASK>"),
            (3, "INFO: task kworker/0:1:99 is blocked on a mutex likely owned by task insmod:100."),
            (3, "Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings"),
        ],
        [
            (
                "hung_task",
                1,
                9,
                True,
                {
                    "comm": "kworker/0:1",
                    "pid": 99,
                    "blocked_seconds": 122,
                    "taint_flags": "O",
                    "kernel_release": "6.18.2",
                    "state": "D",
                    "tgid": 99,
                    "ppid": 2,
                    "blocked_on": "mutex",
                    "owner_comm": "insmod",
                    "owner_pid": 100,
                    "further_reports_suppressed": True,
                },
            )
        ],
    ),
    (
        "usb3",
        [
            (6, "usb 2-1: new SuperSpeed USB device number 2 using xhci_hcd"),
            (6, "usb 2-1: New USB device found, idVendor=0781, idProduct=5581, bcdDevice= 1.00"),
            (6, "usb 2-1: New USB device strings: Mfr=1, Product=2, SerialNumber=0"),
            (6, "usb 2-1: Product: Ultra"),
            (6, "usb 2-1: Manufacturer: SanDisk"),
        ],
        [
            (
                "usb_device",
                1,
                5,
                True,
                {
                    "path": "2-1",
                    "action": "connect",
                    "devnum": 2,
                    "hcd": "xhci_hcd",
                    "speed": "SuperSpeed",
                    "vendor_id": "0781",
                    "product_id": "5581",
                    "bcd_device": "1.00",
                    "product": "Ultra",
                    "manufacturer": "SanDisk",
                },
            )
        ],
    ),
    (
        "oom_global",
        [
            (
                4,
                "a invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
            ),
            (4, "Mem-Info:\nactive_anon:1 inactive_anon:2\n free:3"),
            (4, "Node 0 DMA free:15360kB"),
            (4, "lowmem_reserve[]: 0 1 2"),
            (4, "1234 total pagecache pages"),
            (4, "Tasks state (memory values in pages):"),
            (
                6,
                "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,3,global_oom,task_memcg=/user.slice,task=b,pid=9,uid=1000",
            ),
            (
                3,
                (
                    "Out of memory: Killed process 9 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB, "
                    "shmem-rss:0kB, UID:1000 pgtables:1kB oom_score_adj:0"
                ),
            ),
            (6, "oom_reaper: reaped process 9 (b), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"),
        ],
        [
            (
                "oom_kill",
                1,
                9,
                True,
                {
                    "trigger_comm": "a",
                    "gfp_mask": "0x100cca",
                    "gfp_flags": ["GFP_HIGHUSER_MOVABLE"],
                    "order": 0,
                    "trigger_oom_score_adj": 0,
                    "constraint": "CONSTRAINT_NONE",
                    "nodemask": "(null)",
                    "cpuset": "/",
                    "mems_allowed": "0-1,3",
                    "task_memcg": "/user.slice",
                    "comm": "b",
                    "pid": 9,
                    "uid": 1000,
                    "kill_reason": "Out of memory",
                    "total_vm_kb": 1,
                    "anon_rss_kb": 1,
                    "file_rss_kb": 0,
                    "shmem_rss_kb": 0,
                    "pgtables_kb": 1,
                    "oom_score_adj": 0,
                    "reaped": True,
                    "scope": "global",
                },
            )
        ],
    ),
]


@pytest.mark.parametrize(("lines", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_format(lines: list[tuple[int, str]], expected: list[tuple[Any, ...]]) -> None:
    """The report gives exactly the expected events with the expected fields."""
    events = run([kmsg(seq, text, level=level) for seq, (level, text) in enumerate(lines, 1)])
    got = [(e["class"], e["first_seq"], e["last_seq"], e["complete"], e["fields"]) for e in events]
    assert got == expected
