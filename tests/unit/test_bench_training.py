"""The pure helpers of bench/training.py and the CPU units it adds to the bench; torch is not needed."""

from __future__ import annotations

import pytest

from bench import training, workloads
from bench.harness import CPU_MS, BenchError, GiB, MiB, cpu_per_op


def test_state_dict_tensors_add_up_to_the_checkpoint_size() -> None:
    assert training.tensor_sizes(2 * GiB) == [16 * MiB] * 32  # 64 MiB of float32 each
    sizes = training.tensor_sizes(100 * MiB + 8)
    assert sizes == [16 * MiB, (36 * MiB + 8) // 4]
    assert sum(sizes) * 4 == 100 * MiB + 8


@pytest.mark.parametrize("total", [0, -4, 6])
def test_state_dict_size_must_be_whole_float32s(total: int) -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        training.tensor_sizes(total)


def test_epoch_figures() -> None:
    figures = training.epoch_figures(1000, 1000 * 128 * 1024, 2.0)
    assert figures["samples_per_s"] == 500
    assert figures["gib_per_s"] == pytest.approx(1000 * 128 * 1024 / GiB / 2)
    with pytest.raises(ValueError):
        training.epoch_figures(1, 1, 0.0)


def test_a_missing_package_is_a_skip_reason_that_says_how_to_install() -> None:
    assert training.module_missing("json") is None
    reason = training.module_missing("no_such_module_mountfs_bench")
    assert reason is not None and "no_such_module_mountfs_bench is not installed" in reason
    assert "make bench" in reason


def test_skip_reason_names_torch_first(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = {"torch", "s3fs"}
    monkeypatch.setattr(training, "module_missing",
                        lambda module: f"{module} is not installed" if module in missing else None)
    assert training.skip_reason("mountfs") == "torch is not installed"
    assert training.skip_reason("fsspec") == "torch is not installed"
    missing.discard("torch")
    assert training.skip_reason("mountfs") is None
    assert training.skip_reason("fsspec") == "s3fs is not installed"
    assert training.skip_reason("s3torchconnector") is None


def test_wait_until_polls_then_gives_up() -> None:
    now = [0.0]
    answers = iter([False, False, True])
    training.wait_until(lambda: next(answers), 10, "x", clock=lambda: now[0],
                        sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert now[0] == pytest.approx(0.1)
    with pytest.raises(BenchError, match="object: not done after 1 s"):
        training.wait_until(lambda: False, 1, "object", interval=0.5, clock=lambda: now[0],
                            sleep=lambda s: now.__setitem__(0, now[0] + s))


def test_cpu_per_sample_and_per_gib() -> None:
    sample = {"value": 500.0, "seconds": 2.0, "counters": {CPU_MS: 1500}}
    assert cpu_per_op("samples/s", sample) == (1.5, "ms/sample")
    checkpoint = {"value": 0.5, "seconds": 4.0, "counters": {CPU_MS: 3000}}
    assert cpu_per_op("GiB/s", checkpoint) == (1.5, "s/GiB")


def test_the_training_workloads_are_registered_with_their_peers() -> None:
    specs = workloads.metric_specs(workloads.QUICK)
    for name in (*training.DATALOADER_METRICS, *training.CHECKPOINT_METRICS):
        assert specs[name][0] in workloads.WORKLOADS
    assert "s3torchconnector" in specs["dataloader-cold"][4] and "fsspec" in specs["dataloader-warm"][4]
    assert "s3torchconnector" in specs["checkpoint-load"][4]
    assert "1,000 x 128 KiB" in specs["dataloader-cold"][1]
    assert "2 GiB" in workloads.metric_specs(workloads.FULL)["checkpoint-save"][1]
    assert training.sample_key(7) == "train/s00007.bin"
