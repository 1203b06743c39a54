"""xdplab.experiment, the notebook's entry point to results: a real sweep of two short trials
on the embedded testbed, loaded back (tables, the features dataset and its trial columns),
and what it says when pointed at something that is not a finished run's results."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
from xdplab import experiment  # noqa: E402

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, XDP, sshd")
def test_a_finished_sweep_loads_whole(testbed_up_copy):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    workdir = testbed_up_copy
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(workdir / "workflow")}
    run = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--config", "target_pps=[2000,3000]",
                          "duration_s=1", "warmup_s=0", "keep_features=true", "keep_testbed=true",
                          "experiment=nb"], cwd=workdir, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    e = experiment.load(workdir / "results/nb")
    assert e.name == "nb" and e.config["keep_features"] is True
    assert len(e.summary) == 2 and sorted(e.summary["target_pps"]) == [2000, 3000]
    assert len(e.points) == 2          # one point per rate, one repeat each
    assert len(e.sources) == 2 and len(e.ifaces) == 2   # one source, one DUT interface
    # Units in the names, as in the files: a rate per second, a mean of it per point.
    assert e.summary["achieved_pps"].dtype.kind == "f"
    assert sorted(e.points["achieved_pps_mean"].round(-2)) == [2000, 3000]
    sent = dict(zip(e.summary["target_pps"], e.summary["sent"]))
    assert sent == {2000: 2000, 3000: 3000}, sent
    assert e.summary["features_received"].dtype.kind == "i"

    f = e.features
    received = dict(zip(e.summary["target_pps"], e.summary["features_received"]))
    assert f.count_rows() == sum(received.values()) > 0
    for col in ("point", "repeat", "target_pps", "packet_size", "latency_ns", "arrival_ns"):
        assert col in f.schema.names, f.schema
    # A filter on the trial's identity reads that trial's file only.
    assert f.count_rows(filter=ds.field("target_pps") == 3000) == received[3000]
    assert len(list(f.get_fragments(filter=ds.field("target_pps") == 3000))) == 1
    t = f.to_table(columns=["target_pps", "latency_ns"], filter=ds.field("target_pps") == 2000)
    assert t.num_rows == received[2000] and pc.all(pc.equal(t["target_pps"], 2000)).as_py()
    # The point and repeat lead back to the trial and its summary row.
    row = e.summary.iloc[0]
    assert (e.trial_dir(row["point"], row["repeat"]) / "trial.json").is_file()
    by_point = f.to_table(columns=["point", "repeat"]).group_by(["point", "repeat"]).aggregate(
        [([], "count_all")]).to_pandas()
    got = {(p, r): n for p, r, n in by_point[["point", "repeat", "count_all"]].itertuples(index=False)}
    assert got == {(p, r): n for p, r, n in e.summary[["point", "repeat", "features_received"]]
                   .itertuples(index=False)}


def test_not_a_finished_run_is_said(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        experiment.load(tmp_path / "nowhere")
    (tmp_path / "results/a").mkdir(parents=True)
    (tmp_path / "results/b").mkdir()
    (tmp_path / "results/a/summary.csv").write_text("experiment,target_pps\na,1000\n")
    (tmp_path / "results/b/summary.csv").write_text("experiment,target_pps\nb,1000\n")
    with pytest.raises(FileNotFoundError, match=r"holds the experiments a, b: load .*results/<experiment>"):
        experiment.load(tmp_path / "results")
    e = experiment.load(tmp_path / "results/a")
    assert list(e.summary["target_pps"]) == [1000]
    with pytest.raises(FileNotFoundError, match=r"sources.csv: missing; the aggregate step writes it"):
        e.sources
