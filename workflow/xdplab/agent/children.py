"""The agent's own modules run as child processes: `sys.executable -m xdplab.agent.<module>`,
with the import path set to where this package was loaded from (the repository's
workflow/, or dist/xdplab-agent.pyz itself), so that a child runs the same code.

What runs in a child does so for memory: BCC and LLVM (compilechild, factschild) and
a capture check's bitmap (checkchild) never land in the long-lived agent.
"""

import os
import sys

# zipimport names a module inside an archive <archive>/xdplab/agent/..., and its loader
# knows the archive; unzipped, the package sits in <root>/xdplab/agent/.  Taken absolute
# at import, so that nothing the agent does later moves it.
IMPORT_ROOT = os.path.abspath(getattr(__loader__, "archive", None) or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def argv(module, *args):
    """The command line running xdplab.agent.<module> with args.  -P (Python 3.11 on):
    the working directory does not go on the child's import path (it runs as root)."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable] + safe_path + ["-m", "xdplab.agent." + module] + list(args)


def env():
    """The agent's environment with IMPORT_ROOT first on PYTHONPATH."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([IMPORT_ROOT] + [p for p in [out.get("PYTHONPATH")] if p])
    return out
