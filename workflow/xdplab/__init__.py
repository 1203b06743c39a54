"""xdplab: measure an XDP program under real traffic between a source host and a device under test.

Modules: config (validation), testbed (namespace labs and the embedded testbed),
agentclient and source (reaching the DUT agent and the source hosts), steps
(what each Snakemake rule does), pcapcheck and accounting (closing the books on
a trial), breakdown, stats and report (tables), progress (what a sweep shows),
experiment (a finished experiment's tables and features for a notebook), preflight
and clocks (what is checked of every host before the first trial), provenance (the
code that made a trial).
The packages agent/ (built into dist/xdplab-agent.pyz) and sourcehost/ (built into
dist/xdplab-source.pyz) are standalone programs for the DUT and the source host;
see PROTOCOL.md.
"""
