"""kmsg-forwarder: ship the Linux kernel log with checkpoints, gap reports and retry."""
