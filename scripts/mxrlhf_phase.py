"""mxrlhf_phase: phase marks for `mxrlhf monitor`, from Python (PyTorch) programs.

    from mxrlhf_phase import phase

    with phase("rollout"):          # syncs CUDA, then writes the begin line
        generate(...)
    # syncs CUDA again, then writes the end line

Each mark is one line `MXRLHF_PHASE begin|end NAME t=<CLOCK_MONOTONIC seconds>` written to
the file descriptor named in $MXRLHF_PHASE_FD when `mxrlhf monitor` set it, else to
stdout (flushed). The timestamp is taken after the device has finished the work queued
before the mark, so pipe buffering does not move the window. Outside `mxrlhf monitor`
the marks are harmless lines on stdout.

No dependency: torch is used only if the program has already imported it and CUDA is
initialised. Names: 1 to 63 characters of A-Z a-z 0-9 _ . - (what mxrlhf accepts).
"""
import contextlib
import os
import re
import sys
import time

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


def sync():
    """Waits for the CUDA device, if this program uses one."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _emit(kind, name):
    if not _NAME.match(name):
        raise ValueError(f"phase name {name!r}: expected 1 to 63 of A-Z a-z 0-9 _ . -")
    t = time.clock_gettime(time.CLOCK_MONOTONIC)
    line = f"MXRLHF_PHASE {kind} {name} t={t:.9f}\n"
    fd = os.environ.get("MXRLHF_PHASE_FD")
    if fd:
        os.write(int(fd), line.encode())  # one write(2) of < PIPE_BUF bytes: atomic
    else:
        sys.stdout.write(line)
        sys.stdout.flush()


def begin(name, synchronize=True):
    if synchronize:
        sync()
    _emit("begin", name)


def end(name, synchronize=True):
    if synchronize:
        sync()
    _emit("end", name)


@contextlib.contextmanager
def phase(name, synchronize=True):
    """A phase window around the body: synchronised begin and end marks."""
    begin(name, synchronize)
    try:
        yield
    finally:
        end(name, synchronize)


if __name__ == "__main__":
    # `python3 mxrlhf_phase.py NAME SECONDS...`: marks NAME around a sleep of each
    # SECONDS, for trying the monitor without a model.
    if len(sys.argv) < 3:
        sys.exit("usage: mxrlhf_phase.py NAME SECONDS [SECONDS...]")
    for s in sys.argv[2:]:
        with phase(sys.argv[1]):
            time.sleep(float(s))
