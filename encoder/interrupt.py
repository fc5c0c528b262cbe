"""Stopping a long C computation on a signal. While libtilepass computes (an encode pass, a prefill), the main
thread is inside C and Python's own signal handlers cannot run until the call returns: minutes for a large
pass. The library asks an abort callback between graph nodes (tp_vision_params / tp_text_params
``abort_callback``). ``signal.set_wakeup_fd`` makes Python's C-level signal handler write to a pipe the moment
a signal arrives, and the library's own ``tp_abort_when_readable`` polls that pipe from C (no Python runs in the
callback: Python would run its pending signal handlers there, where their exceptions cannot go anywhere). The
computation returns TP_ERR_ABORTED within a node, and the Python handler (the CLI's: exit status 128 + the
signal) runs as soon as the call is back in Python."""

from __future__ import annotations

import os
import signal
from typing import Any, Callable


class Interrupt:
    """A pipe that any signal with a Python handler writes to (``fd`` its read end, ``poll`` whether it was)."""

    def __init__(self) -> None:
        self.tripped = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        try:
            self._old = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: nothing can wake it
            self._old = None
            os.close(self._w)
            self._w = -1

    @property
    def fd(self) -> int:
        return self._r

    def poll(self) -> bool:
        if not self.tripped and self._r >= 0:
            try:
                self.tripped = bool(os.read(self._r, 64))
            except BlockingIOError:
                pass
        return self.tripped

    def close(self) -> None:
        if self._w >= 0:
            try:
                signal.set_wakeup_fd(-1 if self._old is None else self._old)
            except ValueError:
                pass
            os.close(self._w)
            self._w = -1
        if self._r >= 0:
            os.close(self._r)
            self._r = -1

    def __enter__(self) -> "Interrupt":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CancelPipe(Interrupt):
    """An Interrupt that no signal writes to: ``trip()`` stops the computation of the models it was given to (polled
    in C as Interrupt's pipe, so any thread may trip it and no Python runs between graph nodes), ``reset()`` drains
    it for the next one. tilepass-server cancels one request's computation with it."""

    def __init__(self) -> None:  # no set_wakeup_fd: only trip() writes
        self.tripped = False
        self._old = None
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def trip(self) -> None:
        if self._w >= 0:
            try:
                os.write(self._w, b"x")
            except BlockingIOError:  # already full: already tripped
                pass

    def reset(self) -> None:
        self.tripped = False
        while self._r >= 0:
            try:
                if not os.read(self._r, 4096):
                    break
            except BlockingIOError:
                break

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = -1


class AbortHook:
    """tp_*_params.abort_callback and its data: NULL for none; for an Interrupt, the library's C poll of its pipe;
    for a Python function, a cffi callback (an exception in it cannot cross into C: it is kept, the computation
    told to stop, and ``reraise`` raises it once the call is back). Keep the hook alive as long as the model."""

    def __init__(self, poll: "Callable[[], bool] | Interrupt | None") -> None:
        from .native import ffi, lib

        self.pending: BaseException | None = None
        self.data: Any = ffi.NULL
        if poll is None:
            self.callback: Any = ffi.NULL
            return
        if isinstance(poll, Interrupt):  # polled in C: the library's tp_abort_when_readable on its pipe
            self.data = ffi.new("int *", poll.fd)
            self.callback = lib.tp_abort_when_readable
            return

        @ffi.callback("bool(void *)")
        def _cb(_data: Any) -> bool:
            try:
                return bool(poll())
            except BaseException as e:  # a signal handler's exception, or a bug: stop and raise it later
                self.pending = e
                return True

        self.callback = _cb

    def reraise(self) -> None:
        e, self.pending = self.pending, None
        if e is not None:
            raise e
