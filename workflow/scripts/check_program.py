"""Rule check_program: the DUT agent loads the program under test and the observer through
the verifier (nothing attached) and says what it loaded."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xdplab import program, steps  # noqa: E402

steps.run_step(snakemake, lambda sm, log: program.check_on_dut(
    sm.input.obj, sm.input.build[0] if sm.input.build else None,
    {"program": sm.params.program, "program_name": sm.params.name,
     "program_globals": sm.params.globals, "port": sm.params.port},
    sm.input.connectivity, sm.output[0], log))
