"""Source stage: capture /dev/kmsg in its own process, parse records, set bad input aside."""
