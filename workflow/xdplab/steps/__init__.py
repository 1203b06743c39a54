"""What each Snakemake rule of xdplab does; the scripts in workflow/scripts/ call these.

  machinery     how every step runs: its log, its cleanups (released in reverse order),
                stop signals, the record of a failure, step records written atomically
  connectivity  check_connectivity: the testbed up, every host checked
  arm           build_collector; arm_collector, the disk estimate; continue_session
  traffic       launch_generator: the generators on the source hosts, the agent watched
  results       verify_capture, gather_results
  inprocess     Sequence: trials run one after the other in one job (searches, pools)
  pooled        TakenTestbed: a job's testbed of a pool, checked, its program ready, calibrated

A trial is four rules that must run in order without another trial's steps
in between: arm_collector, launch_generator, verify_capture, gather_results.
The rules share the testbed resource (limit 1) and rising priorities, so
Snakemake runs a trial's steps back to back; on top of that every step
checks with the agent that the session it continues is the one its trial
armed, so a stale record from an earlier invocation is detected and never
trusted.

The names below stay importable from xdplab.steps (`steps.run_step`, `from .steps
import Log`); each is loaded from its module when first asked for, so a script that
imports one module does not load the others.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "machinery": ("StepError", "OutputError", "Interrupted", "Log", "CleanupStack", "StopSignals",
                  "on_failure", "run_step", "record_failure", "previous_failures", "writing",
                  "write_json", "read_json", "trial_id", "TRIAL_STEPS", "FAILED_FILE"),
    "connectivity": ("describe_embedded", "bring_up", "check_connectivity", "record_environment",
                     "record_environment_once", "ENVIRONMENT_FILE"),
    "arm": ("agent_for", "place_in_run", "build_collector", "source_shares", "disk_estimate",
            "check_disk", "arm_collector", "continue_session", "SNAPLEN_BYTES", "DEADLINE_MARGIN_S",
            "CLEANUP_AGENT_TIMEOUT_S"),
    "traffic": ("generator_jobs", "launch_generator", "WATCH_INTERVAL_S", "WATCH_MISSES"),
    "results": ("verify_capture", "gather_results", "capture_name", "TIMESERIES_FILE", "FEATURES_FILE"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
