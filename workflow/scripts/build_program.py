"""Rule build_program: compile a user's C source into a BPF ELF object with clang."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import program, steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: program.build_source(
    sm.input.source, sm.output.obj, sm.output.manifest, log))
