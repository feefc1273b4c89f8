"""The GPU benchmark never reports a number it did not measure on the device it names."""

import csv

import pytest
import torch

from experiments import bench_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_measures_nothing(tmp_path, capsys):
    assert bench_gpu.main(["--out", str(tmp_path)]) == 2
    assert "no measurement taken" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # --quick runs on one thread: give the others theirs back
    yield
    torch.set_num_threads(threads)


def test_cpu_smoke_run_is_labelled_and_split_equals_unsplit(tmp_path, keep_threads):
    assert bench_gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "bench_gpu.csv").exists()  # that name is for GPU measurements
    with (tmp_path / "bench_gpu_cpu_smoke.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["batch"], r["variant"]) for r in rows} == {
        (b, v) for b in ("1", "4") for v in ("unsplit", "split")}
    for row in rows:
        assert row["device"].startswith("cpu (smoke run")
        assert row["dtype"] == "bfloat16" and float(row["tokens_per_s"]) > 0
        assert float(row["adapter_gap"]) == 0.0  # same bfloat16 base on both paths
