"""Incremental detokenization: bytes per token in, text out, stop sequences held back."""

import codecs


class TextAssembler:
    """Turns per-token bytes into text without re-decoding what came before.

    Incomplete UTF-8 sequences wait for their next bytes; text that could be the start of a
    stop sequence is held back until it is known not to be one.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Text now safe to emit; after a stop sequence, always ''."""
        if self.stopped:
            return ""
        text = self._decoder.decode(data)
        if not self._stop:
            return text
        window = self._pending + text
        cut = min((i for s in self._stop if (i := window.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return window[:cut]
        keep = min(self._hold, len(window))
        emit_to = len(window) - keep
        self._pending = window[emit_to:]
        return window[:emit_to]

    def finish(self) -> str:
        """Whatever is still held back once generation has ended without a stop sequence."""
        if self.stopped:
            return ""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return rest
