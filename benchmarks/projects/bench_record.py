"""What the latency probe job does, the same in every system.

The probe reads ``time.time()`` first thing and then appends one line,
``job_no enqueued started``, to the file named by BENCH_LATENCY_FILE. The
append (a single O_APPEND write, atomic for a line this short even with
several writer processes) comes after the timestamp, so recording never counts
towards latency, and no system gets a cheaper or dearer way to record.
"""

import os
import time

LATENCY_FILE = os.environ.get("BENCH_LATENCY_FILE", "/tmp/pgjobs-bench-latency.txt")


def record_start(job_no, enqueued):
    started = time.time()
    line = f"{int(job_no)} {float(enqueued):.6f} {started:.6f}\n".encode()
    fd = os.open(LATENCY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_records(path=LATENCY_FILE):
    """Return {job_no: (enqueued, started)} from the latency file."""
    records = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    records[int(parts[0])] = (float(parts[1]), float(parts[2]))
    except FileNotFoundError:
        pass
    return records
