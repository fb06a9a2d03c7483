"""Cycle estimates of a bundle's hottest code under qemu: the blocks that executed the most
guest instructions (edgec's plugin, `hot=`), each run through llvm-mca for the board's core.

A block is the straight-line code qemu translated at once (it ends at a branch: a loop body,
or part of one). Its machine code is disassembled by the cross binutils' objdump and handed
to llvm-mca (Debian's llvm-19) with -mcpu of each core, which simulates it in a loop and says
how many cycles one pass takes (Total Cycles / iterations, steady state, every load an L1
hit). The cores: cortex-a72 (rpi4; LLVM schedules it with its Cortex-A57 model) and
neoverse-n1, the Cortex-A76's server sibling (the same core design): LLVM has no model of the
A76 itself (-mcpu=cortex-a76 gets the A57's too), and LLVM 19 is Debian's first with the N1's.
A block's executions per inference come from two runs, as the counts do (start-up cancels);
its cycles per inference = those executions x its cycles per pass; the blocks listed cover
`coverage` of all instructions executed. A model of the core, not a measurement: no cache misses, no
branch mispredictions, no memory bandwidth.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from edgec.errors import EdgecError

CORES = ("cortex-a72", "neoverse-n1")  # rpi4's core; the A76-class model (rpi5)
MCA = "llvm-mca-19"
MCA_ITERATIONS = 100
TOP = 24  # blocks listed


@dataclass
class HotBlock:
    address: int
    runs: float  # executions: in its run, then (per_inference) per inference
    insns: int
    asm: list[str]
    cycles: dict[str, float] = field(default_factory=dict)  # per pass, per core


def parse(text: str) -> list[HotBlock]:
    """The plugin's hot= file: ADDRESS RUNS INSNS HEXBYTES per line."""
    blocks = []
    for line in text.splitlines():
        address, runs, insns, code = line.split()
        blocks.append(HotBlock(int(address, 16), int(runs), int(insns), disassemble(code)))
    return blocks


def disassemble(hex_code: str) -> list[str]:
    """aarch64 instructions of the machine code `hex_code`, as llvm-mca reads them."""
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        raise EdgecError("aarch64-linux-gnu-objdump not found (./dev setup installs binutils "
                         "for aarch64 with the cross compiler)")
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(bytes.fromhex(hex_code))
        f.flush()
        out = subprocess.run([objdump, "-D", "-b", "binary", "-m", "aarch64", f.name],
                             capture_output=True, text=True, check=True).stdout
    lines = [ln.split("\t", 2)[2] for ln in out.splitlines()
             if re.match(r"^\s+[0-9a-f]+:\t", ln) and ln.count("\t") >= 2]
    return [re.sub(r"\s*//.*$", "", ln).strip() for ln in lines]


def mca_cycles(asm: list[str], core: str) -> float:
    """llvm-mca's cycles per pass of `asm` on `core` (steady state)."""
    mca = shutil.which(MCA)
    if mca is None:
        raise EdgecError(f"{MCA} not found: install Debian's llvm-19 for cycle estimates "
                         "(./dev setup does)")
    done = subprocess.run([mca, "-mtriple=aarch64", f"-mcpu={core}",
                           f"-iterations={MCA_ITERATIONS}"], input="\n".join(asm) + "\n",
                          capture_output=True, text=True)
    found = re.search(r"Total Cycles:\s+(\d+)", done.stdout)
    if done.returncode != 0 or not found:
        raise EdgecError(f"llvm-mca failed on a hot block: "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[0]}")
    return int(found.group(1)) / MCA_ITERATIONS


def per_inference(one: list[HotBlock], more: list[HotBlock], calls: int,
                  top: int = TOP) -> list[HotBlock]:
    """The `top` blocks by instructions per inference: each block's executions in the run with
    `calls` more inferences less those in the run without them (start-up cancels), over
    `calls`."""
    before = {b.address: b.runs for b in one}
    for b in more:
        b.runs = (b.runs - before.get(b.address, 0)) / calls
    ranked = sorted((b for b in more if b.runs > 0), key=lambda b: -b.runs * b.insns)
    return ranked[:top]


def estimate(blocks: list[HotBlock], total: float) -> dict:
    """Per block (executions per inference: per_inference) and in all: llvm-mca cycles per
    inference, per core. `total`: all instructions executed per inference (the blocks' share
    of it is reported)."""
    rows, sums = [], dict.fromkeys(CORES, 0.0)
    for b in blocks:
        b.cycles = {core: mca_cycles(b.asm, core) for core in CORES}
        per = b.runs
        row = {"address": hex(b.address), "instructions": b.insns,
               "runs_per_inference": per, "share": per * b.insns / total,
               "cycles_per_pass": b.cycles}
        rows.append(row)
        for core in CORES:
            sums[core] += per * b.cycles[core]
    covered = sum(r["share"] for r in rows)
    return {"blocks": rows, "coverage": covered,
            "cycles_per_inference": sums,
            "label": "llvm-mca's cycles of the hottest blocks (a model of the core: no cache "
                     "misses or mispredictions), covering "
                     f"{covered:.0%} of the instructions"}

