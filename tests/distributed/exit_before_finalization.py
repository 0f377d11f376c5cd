"""Run a training script unchanged, then end the process without Python's interpreter finalization.

    accelerate launch [launcher flags] tests/distributed/exit_before_finalization.py SCRIPT [script arguments]

Why: on CPU, a rank of a 2-process DeepSpeed ZeRO-3 run sometimes aborts *after* all of its work is done and saved,
with "terminate called without an active exception" and `<no Python frame>` in the faulthandler dump; the launcher
then reports the whole run as failed. It happens with TRL's own `sft.py` as much as with our recipe: in several CI
runs of the suite, and in 1 of 6 direct runs of TRL's script with three at once on 2 cores (none in 21 runs two at a
time). The core dump of that run shows PyTorch's known shutdown race (pytorch/pytorch#38228, #117762, #190489):
a Gloo worker thread (`ProcessGroupGloo::runLoop`) releases a finished `AsyncAllgatherWork` whose tensor has a
Python object, while the main thread is already in `Py_FinalizeEx`; taking the GIL then ends the worker with
`pthread_exit`, whose unwinding through a C++ destructor calls `std::terminate`. The worker lost the race only
because the loaded machine descheduled it between finishing the collective and releasing it. Nothing of the
script's is skipped here: it runs to its end, its exceptions and exit code are kept; only the interpreter teardown,
where the race lives, is replaced by `os._exit` after the output streams are flushed.
"""

import os
import runpy
import sys
import traceback


def main() -> None:
    script = sys.argv.pop(1)
    sys.argv[0] = script
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` would have it
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit_request:  # `sys.exit(...)`, as the interpreter would treat it
        code = exit_request.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
