"""xdplab: measure an XDP program under real traffic between a source host and a device under test.

Modules: config (validation), testbed (the embedded two-namespace testbed),
agentclient and source (reaching the DUT agent and the source host), steps
(what each Snakemake rule does), pcapcheck and accounting (closing the books on
a trial), report (summary tables).  agent.py and generator.py are standalone
programs for the DUT and the source host; see PROTOCOL.md.
"""
