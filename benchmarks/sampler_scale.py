"""How the sampler side of VersaTune scales with the number of train rows, against what a user would otherwise use:
label reading at train start, draws per CPU-second, memory per row, resuming at a draw position, checkpoint size
after many `odm` rounds, and `odm`'s per-step row-to-domain lookup. Every arm runs in this one invocation.

    python benchmarks/sampler_scale.py --output benchmarks/results/sampler_scale.md

Times are CPU seconds of this process (`time.process_time`), the best of `--repeats` alternating repeats (the
machine is shared; the best is the least disturbed). Memory is the peak resident set (Linux `VmHWM`, reset just
before) of a fresh subprocess that builds the sampler and draws one epoch, minus its resident set at that moment, so
numpy's, torch's and Arrow's allocations all count (glibc is told to map every allocation over 64 KiB on its own, so
memory freed earlier is not reused unseen); the labels it starts from (one byte per row) are not counted.
Labels: six domains with skewed sizes (40/25/15/10/7/3 %).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import datasets
import numpy as np
import pyarrow as pa
import torch
import transformers
import trl
from report import publish
from torch.utils.data import RandomSampler

from versatune_hf.integrations.labels import column_labels
from versatune_hf.mixing import BanditState, UpdateParams, apply_guards, odm_update
from versatune_hf.sampling import WeightedDomainSampler
from versatune_hf.sampling.domain_codes import DomainCodes

DOMAINS = ["code", "finance", "law", "medicine", "other", "science"]
SHARES = [0.40, 0.10, 0.07, 0.03, 0.25, 0.15]
ROW_BY_ROW_LIMIT = 1_000_000
"""Above this, the row-by-row label read (versatune-hf 0.1.0's path) would take minutes per size; it is not run."""
TORCHDATA_LIMIT = 10_000_000
LABEL_READ = "label read of a shuffled Dataset (`column_labels`, incl. its 1-byte result)"
"""Above this, torchdata's per-domain source nodes (Python lists of row indices, ~40 bytes per row) are not built."""


def skewed_codes(rows: int) -> np.ndarray:
    return np.random.default_rng(0).choice(len(DOMAINS), rows, p=SHARES).astype(np.int8)


def labelled_dataset(rows: int) -> datasets.Dataset:
    names = pa.array(DOMAINS)
    column = pa.DictionaryArray.from_arrays(pa.array(skewed_codes(rows).astype(np.int32)), names).cast(pa.string())
    return datasets.Dataset(pa.table({"domain": column}))


def best_cpu_seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def drain(iterable, count: int) -> None:
    for _ in itertools.islice(iterable, count):
        pass


# ---------------------------------------------------------------------------------------------------- label reading


def label_reading(rows: int, repeats: int) -> dict[str, float | None]:
    """µs per row to get every row's domain at train start, for a plain and a shuffled dataset."""
    plain = labelled_dataset(rows)
    shuffled = plain.shuffle(seed=0)

    def row_by_row(dataset):  # what versatune-hf 0.1.0 did: a Python string per row, then a dict lookup per row
        labels = [str(value) for value in dataset["domain"]]
        code_of = {name: code for code, name in enumerate(sorted(set(labels)))}
        np.fromiter((code_of[label] for label in labels), dtype=np.int32, count=len(labels))

    result: dict[str, float | None] = {}
    for name, dataset in (("plain", plain), ("shuffled", shuffled)):
        arrow = best_cpu_seconds(lambda dataset=dataset: column_labels(dataset, "domain"), repeats)
        result[f"arrow {name}"] = arrow / rows * 1e6
        if rows <= ROW_BY_ROW_LIMIT:
            result[f"rows {name}"] = best_cpu_seconds(lambda dataset=dataset: row_by_row(dataset), 1) / rows * 1e6
        else:
            result[f"rows {name}"] = None
    result["arrow encode alone"] = (
        best_cpu_seconds(lambda: plain.data.column("domain").dictionary_encode(), repeats) / rows * 1e6
    )
    return result


# ---------------------------------------------------------------------------------------------------- draws


def versatune_sampler(rows: int) -> WeightedDomainSampler:
    sampler = WeightedDomainSampler(DomainCodes(skewed_codes(rows), DOMAINS), seed=0)
    sampler.set_weights(dict(zip(DOMAINS, [0.3, 0.2, 0.2, 0.1, 0.1, 0.1])), rows // 2)  # one switch mid-epoch
    return sampler


def has_torchdata() -> bool:
    try:
        import torchdata.nodes  # noqa: F401
    except ImportError:
        return False
    return True


def torchdata_sampler(rows: int):
    from torchdata.nodes import IterableWrapper, MultiNodeWeightedSampler

    codes = skewed_codes(rows)
    nodes = {name: IterableWrapper(np.flatnonzero(codes == code).tolist()) for code, name in enumerate(DOMAINS)}
    return MultiNodeWeightedSampler(nodes, dict(zip(DOMAINS, SHARES)), seed=0)


def numpy_floor(rows: int):
    """Python ints handed out from numpy blocks: the cost floor of any sampler that yields one index at a time."""
    rng = np.random.default_rng(0)
    return itertools.chain.from_iterable(rng.integers(0, rows, 8192).tolist() for _ in range(-(-rows // 8192)))


def draw_rates(rows: int, repeats: int) -> dict[str, float | None]:
    """Draws per CPU-second over one epoch (construction not included)."""
    makers = {
        "versatune": versatune_sampler,
        "torch RandomSampler": lambda n: RandomSampler(range(n), generator=torch.Generator().manual_seed(0)),
        "torchdata MultiNodeWeightedSampler": torchdata_sampler,
        "numpy floor": numpy_floor,
    }
    rates: dict[str, float | None] = {}
    for name, make in makers.items():
        if name.startswith("torchdata") and (not has_torchdata() or rows > TORCHDATA_LIMIT):
            rates[name] = None
            continue
        best = float("inf")
        for _ in range(repeats):
            sampler = make(rows)
            start = time.process_time()
            drain(iter(sampler), rows)
            best = min(best, time.process_time() - start)
        rates[name] = rows / best
    return rates


def memory_subprocess(arm: str, rows: int) -> float:
    """Peak resident bytes per row of a fresh process that builds `arm` and draws one epoch."""
    # Large allocations go straight to the OS and back, so freed memory is not silently reused by later ones.
    malloc = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    output = subprocess.run(
        [sys.executable, __file__, "--memory-probe", arm, str(rows)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **malloc},
    )
    return float(output.stdout.strip().splitlines()[-1])


def memory_probe(arm: str, rows: int) -> None:
    codes = skewed_codes(rows)
    shuffled = labelled_dataset(rows).shuffle(seed=0) if arm == LABEL_READ else None
    if arm.startswith("torchdata") and not has_torchdata():
        print("nan")
        return
    gc.collect()
    pa.default_memory_pool().release_unused()  # what setting up left behind must not be released during the measure
    with open("/proc/self/clear_refs", "w") as clear:  # reset the peak (VmHWM) to the current resident set
        clear.write("5")
    before = _status_bytes("VmRSS")
    if arm == LABEL_READ:
        column_labels(shuffled, "domain")
        sampler = ()
    elif arm == "versatune":
        sampler = WeightedDomainSampler(DomainCodes(codes, DOMAINS), seed=0)
        del codes
    elif arm == "torch RandomSampler":
        sampler = RandomSampler(range(rows), generator=torch.Generator().manual_seed(0))
    else:
        sampler = torchdata_sampler(rows)
    drain(iter(sampler), rows)
    print(max(_status_bytes("VmHWM") - before, 0) / rows)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


# ---------------------------------------------------------------------------------------------------- resume


def resume_seconds(rows: int, repeats: int) -> dict[str, float]:
    """CPU seconds from a checkpoint's state to the first trained draw, resuming half-way through epoch 1: the
    Trainer iterates the sampler over the trained draws of the epoch and drops them (`skip_first_batches`)."""
    full = versatune_sampler(rows)
    full.replayed_head = 64
    full.set_epoch(1)
    drain(iter(full), rows // 2)
    position = rows + rows // 2
    states = {
        "compact state (seek)": full.state_dict(epoch=1, position=position),
        "replay from the epoch start": full.state_dict(epoch=1),
    }
    result = {}
    for name, state in states.items():

        def restore_and_skip(state=state):
            sampler = WeightedDomainSampler(DomainCodes(skewed_codes(rows), DOMAINS), seed=0)
            build = time.process_time()
            sampler.load_state_dict(state)
            drain(iter(sampler), rows // 2)
            return time.process_time() - build

        result[name] = min(restore_and_skip() for _ in range(repeats))
    torch_sampler = RandomSampler(range(rows), generator=torch.Generator().manual_seed(0))
    result["torch RandomSampler skip"] = best_cpu_seconds(lambda: drain(iter(torch_sampler), rows // 2), repeats)
    sought = versatune_sampler(rows)
    result["seek 3 epochs ahead (set_epoch, no state)"] = best_cpu_seconds(lambda: sought.set_epoch(3), 1)
    return result


# ---------------------------------------------------------------------------------------------------- odm


def odm_checkpoint_sizes(rounds_list: list[int], rows: int) -> dict[int, tuple[int, int]]:
    """Saved sampler state (JSON bytes) after that many `odm` rounds of 8 draws, with the compact state and with
    every schedule entry kept (versatune-hf 0.1.0)."""
    sampler = WeightedDomainSampler(DomainCodes(skewed_codes(rows), DOMAINS), seed=0)
    sampler.replayed_head = 8
    rng = np.random.default_rng(0)
    bandit, weights = BanditState.start(DOMAINS), sampler.current_weights
    iterator = iter(sampler)
    sizes = {}
    for round_ in range(1, max(rounds_list) + 1):
        drain(iterator, 8)
        result = odm_update(weights, dict(zip(DOMAINS, rng.random(6).tolist())), bandit, 0.9)
        bandit, weights = result.state, apply_guards(weights, result.weights, UpdateParams(min_weight=0.01))
        sampler.set_weights(weights, 8 * round_ + 16)
        if round_ in rounds_list:
            compact = sampler.state_dict(epoch=0, position=8 * round_)
            whole = {**sampler.state_dict(epoch=0), "schedule": [[p, list(w.values())] for p, w in sampler.schedule]}
            sizes[round_] = (len(json.dumps(compact)), len(json.dumps(whole)))
    return sizes


def odm_lookup_microseconds(rows: int, batch: int, repeats: int) -> dict[str, float]:
    """The domain of each row of a 4,096-row micro-batch, as `odm` reads it every micro-batch, against a slice of a
    code array (the floor). Each is timed over 100 calls."""
    sampler = versatune_sampler(rows)
    drain(iter(sampler), min(rows, 4 * batch))
    positions = np.arange(batch, 2 * batch)
    log = np.asarray(sampler.drawn_codes(np.arange(4 * batch)))

    def hundred(function):
        return best_cpu_seconds(lambda: [function() for _ in range(100)], repeats) / 100 * 1e6

    return {
        "`drawn_codes` (odm's lookup)": hundred(lambda: sampler.drawn_codes(positions).tolist()),
        "slice of a code array (floor)": hundred(lambda: log[batch : 2 * batch].tolist()),
    }


# ---------------------------------------------------------------------------------------------------- report


def fmt(value: float | None, pattern: str) -> str:
    return "not run" if value is None or value != value else format(value, pattern)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e5,1e6,1e7,1e8", help="Train rows, comma-separated.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--odm_rounds", default="100,1000,10000,100000")
    parser.add_argument("--output", default=None)
    parser.add_argument("--memory-probe", nargs=2, metavar=("ARM", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe[0], int(args.memory_probe[1]))
        return

    began = time.time()
    sizes = [int(float(size)) for size in args.sizes.split(",")]
    labels, draws, memory, resume = {}, {}, {}, {}
    for rows in sizes:
        print(f"{rows:,} rows: labels", flush=True)
        labels[rows] = label_reading(rows, args.repeats)
        print(f"{rows:,} rows: draws", flush=True)
        draws[rows] = draw_rates(rows, args.repeats if rows < 10**8 else 1)
        print(f"{rows:,} rows: memory", flush=True)
        memory[rows] = {
            arm: memory_subprocess(arm, rows) if draws[rows][arm] is not None else None
            for arm in draws[rows]
            if arm != "numpy floor"
        }
        memory[rows][LABEL_READ] = memory_subprocess(LABEL_READ, rows)
        print(f"{rows:,} rows: resume", flush=True)
        resume[rows] = resume_seconds(rows, args.repeats if rows < 10**8 else 1)
    rounds = [int(r) for r in args.odm_rounds.split(",")]
    print("odm checkpoints", flush=True)
    checkpoint_sizes = odm_checkpoint_sizes(rounds, 1_000_000)
    lookup = odm_lookup_microseconds(1_000_000, 4096, args.repeats)

    header = "| measure | " + " | ".join(f"{rows:.0e} rows" for rows in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)

    def row(name, values, pattern):
        return f"| {name} | " + " | ".join(fmt(value, pattern) for value in values) + " |"

    lines = [
        "# Sampler scale",
        "",
        f"Command: `python benchmarks/sampler_scale.py --sizes {args.sizes} --repeats {args.repeats} "
        f"--odm_rounds {args.odm_rounds}`; {platform.machine()}, 2 cores shared; python "
        f"{platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, torch {torch.__version__}, "
        f"datasets {datasets.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
        f"whole run {time.time() - began:.0f} s.",
        "",
        "Six domains, skewed 40/25/15/10/7/3 %. Times are the best of the repeats in CPU time of this process.",
        "",
        "## Reading the domain labels at train start (µs per row)",
        "",
        header,
        rule,
        row("Arrow, plain Dataset (`column_labels`)", [labels[r]["arrow plain"] for r in sizes], ".4f"),
        row("Arrow, shuffled Dataset (indices mapping)", [labels[r]["arrow shuffled"] for r in sizes], ".4f"),
        row("row by row, plain (versatune-hf 0.1.0)", [labels[r]["rows plain"] for r in sizes], ".3f"),
        row("row by row, shuffled (versatune-hf 0.1.0)", [labels[r]["rows shuffled"] for r in sizes], ".3f"),
        row("Arrow `dictionary_encode` alone (floor)", [labels[r]["arrow encode alone"] for r in sizes], ".4f"),
        "",
        "## Draws per CPU-second (millions, one epoch)",
        "",
        header,
        rule,
        *[row(arm, [draws[r][arm] / 1e6 if draws[r][arm] else None for r in sizes], ".2f") for arm in draws[sizes[0]]],
        "",
        "## Peak memory while building the sampler and drawing one epoch, or reading the labels (bytes per row)",
        "",
        header,
        rule,
        *[row(arm, [memory[r][arm] for r in sizes], ".1f") for arm in memory[sizes[0]]],
        "",
        "## Resuming half-way through epoch 1 (CPU seconds to the first trained draw)",
        "",
        header,
        rule,
        *[row(name, [resume[r][name] for r in sizes], ".3f") for name in resume[sizes[0]]],
        "",
        "## Saved sampler state after `odm` rounds (bytes of JSON; 1e6 rows, a round every 8 draws)",
        "",
        "| rounds | compact state (this version) | every entry kept (0.1.0) |",
        "|---|---|---|",
        *[f"| {r:,} | {checkpoint_sizes[r][0]:,} | {checkpoint_sizes[r][1]:,} |" for r in rounds],
        "",
        "## `odm`'s row-to-domain lookup for a 4,096-row micro-batch (µs)",
        "",
        "| lookup | µs |",
        "|---|---|",
        *[f"| {name} | {value:.1f} |" for name, value in lookup.items()],
    ]
    publish(lines, args.output)


if __name__ == "__main__":
    main()
