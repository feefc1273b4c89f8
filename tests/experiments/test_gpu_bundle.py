"""The GPU machine's Flower bundle and job: what is carried, and what is refused without CUDA.
(The download, the offline install and a deployment run were rehearsed on the CPU in an
environment holding only the GPU image's packages: docs/gpu.md.)"""

import pytest
import torch

from experiments import gpu_bundle, gpu_flower


def test_wheels_carried_and_left_out_by_project_name():
    wheels = ["flwr-1.41.0-py3-none-any.whl", "numpy-2.5.5-cp312-cp312-manylinux_2_28.whl",
              "uv-0.12.24-py3-none-manylinux_2_17_x86_64.whl",
              "grpcio_health_checking-1.81.1-py3-none-any.whl"]
    kept, dropped = gpu_bundle.select(wheels)
    assert kept == ["flwr-1.41.0-py3-none-any.whl",
                    "grpcio_health_checking-1.81.1-py3-none-any.whl"]
    assert [gpu_bundle.project_name(w) for w in dropped] == ["numpy", "uv"]
    assert gpu_bundle.project_name("PyYAML-6.0.4-cp312.whl") == "pyyaml"


def test_two_versions_of_one_project_are_an_error():
    with pytest.raises(ValueError, match="more than one wheel of \\['rich'\\]"):
        gpu_bundle.select(["rich-14.3.4-py3-none-any.whl", "rich-14.0.0-py3-none-any.whl"])


def test_install_without_wheels_says_where_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match="run `download` where pip works"):
        gpu_bundle.install(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_the_gpu_job_measures_nothing(tmp_path, capsys):
    assert gpu_flower.main(["--server-devices", "cuda", "cpu", "--out", str(tmp_path)]) == 2
    assert "no measurement taken" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_rounds_after_the_first_are_summarised_per_server_device():
    rows = [{"server_device": device, "round": r, "time_round_s": t, "time_train_s": t / 2}
            for device, times in (("cuda", [50.0, 10.0, 12.0]), ("cpu", [90.0, 30.0, 36.0]))
            for r, t in enumerate(times, start=1)]
    cuda, cpu = gpu_flower.summarise(rows)
    assert (cuda["median_round_s"], cuda["rounds"], cuda["round_ratio_to_first"]) == (11.0, 2, 1)
    assert (cpu["median_round_s"], cpu["median_train_s"]) == (33.0, 16.5)
    assert cpu["round_ratio_to_first"] == 3.0
