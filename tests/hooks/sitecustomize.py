"""Test-only fault injection, kept out of bpfree's own modules: a subprocess started with this
folder on PYTHONPATH and ``BPFREE_TEST_KILL_AT_EPOCH`` set SIGKILLs itself

- ``N``: right after the checkpoint of epoch N is written,
- ``write:N``: half-way through writing that checkpoint (a partial temporary file is left),
- ``mid:N``: half-way through the N-th pass over the training data (mid-epoch),

so that tests/test_resume.py can check that a killed run resumes exactly. With
``BPFREE_TEST_PAUSE_AT=N`` and ``BPFREE_TEST_PAUSE_FILE=PATH`` it instead writes PATH half-way
through the N-th pass and waits there (at most 60 s) for a stop signal from outside, so that a
test can send SIGTERM mid-epoch."""

import os
import signal

KILL_HOOK = "BPFREE_TEST_KILL_AT_EPOCH"
_hook = os.environ.get(KILL_HOOK, "")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm() -> None:
    from bpfree.engine.checkpoint import Checkpoint
    from bpfree.engine.loop import TimedBatches as Batches  # the fit's own passes, not the FLOP count's

    save = Checkpoint.save

    def killing_save(self, state, epoch):
        if _hook == f"write:{epoch}":  # die half-way through the temporary file
            data = self.encode(state)
            self.path.with_name(f".{self.path.name}.partial.tmp").write_bytes(data[: len(data) // 2])
            _die()
        save(self, state, epoch)
        if _hook == str(epoch):
            _die()

    Checkpoint.save = killing_save
    if _hook.startswith("mid:"):
        target, passes, epoch = int(_hook[4:]), [0], Batches.epoch

        def killing_epoch(self, batch_size, **kwargs):
            passes[0] += 1
            half = -(-len(self) // batch_size) // 2
            for i, item in enumerate(epoch(self, batch_size, **kwargs)):
                if passes[0] == target and i == half:
                    _die()
                yield item

        Batches.epoch = killing_epoch


def _arm_pause(target: int, path: str) -> None:
    import time

    from bpfree.engine import loop as training

    passes, epoch = [0], training.TimedBatches.epoch

    def pausing_epoch(self, batch_size, **kwargs):
        passes[0] += 1
        half = -(-len(self) // batch_size) // 2
        for i, item in enumerate(epoch(self, batch_size, **kwargs)):
            if passes[0] == target and i == half:
                open(path, "w").close()
                deadline = time.monotonic() + 60
                while training.STOP.signal is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            yield item

    training.TimedBatches.epoch = pausing_epoch


if _hook:
    _arm()
if os.environ.get("BPFREE_TEST_PAUSE_AT"):
    _arm_pause(int(os.environ["BPFREE_TEST_PAUSE_AT"]), os.environ["BPFREE_TEST_PAUSE_FILE"])
