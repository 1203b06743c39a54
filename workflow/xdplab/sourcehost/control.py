"""How a run ends in order: signals, a controller that is gone, errors and exit statuses.

The generator must not outlive its controller.  Over SSH without a terminal a
broken session sends no SIGHUP: the only sign is that the pipes to sshd lose
their reader.  So a failed write of a progress line (EPIPE, EIO, a closed
stream), or stdout/stderr reporting an error or hang-up when polled (every
WATCH_S, which also covers ``--progress-s 0``), means "the controller is gone":
sending stops at once, and the exit status is EXIT_CONTROLLER_GONE.
"""

import os
import select
import signal
import sys

from .cli import PROG

EXIT_CONTROLLER_GONE = 3
WATCH_S = 0.05  # the main process checks signals, senders and its output streams this often


def die(message, status=2):
    sys.stderr.write("%s: error: %s\n" % (PROG, message))
    sys.exit(status)


def say_error(message):
    """One error line on stderr, after which the run still reports; False if stderr is gone."""
    return write(sys.stderr, "%s: error: %s\n" % (PROG, message))


def write(stream, text):
    """Write and flush; True when it worked.  A failure (EPIPE, EIO, a closed
    stream) means whoever reads us is gone; the caller decides what that means."""
    try:
        stream.write(text)
        stream.flush()
        return True
    except (OSError, ValueError):
        silence(stream)
        return False


def silence(stream):
    """Point a broken stream at /dev/null, so later writes and the interpreter's
    own flush at exit do not fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


class StreamWatch(object):
    """Tells whether stdout/stderr lost their reader, without writing to them.

    poll() with no requested events still reports POLLERR (a pipe without
    readers) and POLLHUP (a socket or terminal hung up); regular files and
    /dev/null report neither."""

    def __init__(self, streams):
        self.poll = None
        self.fds = {}
        if not hasattr(select, "poll"):
            return
        self.poll = select.poll()
        for name, stream in streams:
            try:
                fd = stream.fileno()
            except (OSError, ValueError, AttributeError):
                continue
            self.fds[fd] = name
            self.poll.register(fd, 0)

    def broken(self):
        """The name of a broken stream, or None."""
        if not self.poll:
            return None
        try:
            events = self.poll.poll(0)
        except OSError:
            return None
        for fd, ev in events:
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                return self.fds.get(fd, "fd %d" % fd)
        return None


def stop_on_signals():
    """(stop, caught): SIGTERM, SIGINT and SIGHUP set stop[0] and are noted in caught, so
    that the run ends in order (its report still printed)."""
    stop, caught = [False], []

    def on_signal(signum, frame):
        stop[0] = True
        caught.append(signum)

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    return stop, caught


def exit_status(caught, gone, failed):
    """128 + N stopped by signal N; EXIT_CONTROLLER_GONE (said on stderr, if it still
    takes it); 1 when a sender or trafgen failed; else 0."""
    if caught:
        return 128 + caught[0]
    if gone is not None:
        write(sys.stderr, "%s: error: stopped sending, the controller is gone (%s)\n" % (PROG, gone))
        return EXIT_CONTROLLER_GONE
    return 1 if failed else 0
