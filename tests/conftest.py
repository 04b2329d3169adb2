from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["harness.testing"]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "plugins"))  # test plugin modules


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


#: Modules and tests that take seconds each (worker processes, Ray, Chromium, suites through the
#: core, real MiniLM): marked ``slow`` here, in one list, so ``pytest -m "not slow"`` is the fast
#: lane. Measured with ``pytest --durations=80`` on 2 cores (every entry took >= 3 s there).
SLOW_MODULES = {"test_ray_executor.py", "test_report_browser.py", "test_history_browser.py",
                "test_example_plugin.py"}
SLOW_TESTS = {
    "test_classification.py::test_fit_and_evaluate_tiny_model_on_sst2_slice",
    "test_classification.py::test_runs_in_a_suite",
    "test_cache_poison.py::test_a_poisoned_cache_is_rebuilt_never_unpickled",
    "test_cache_poison.py::test_a_clean_cache_hit_rebuilds_each_transform_output_from_its_plugin",
    "test_compress_nncf.py::test_openvino_fp32_matches_torch_at_any_shape",
    "test_compress_nncf.py::test_token_classification_logits",
    "test_compress_ort.py::test_ort_int8_quantizes_matmuls_smaller_and_cached",
    "test_compress_ort.py::test_static_int8_calibrates_on_calibration_batches",
    "test_compress_ort.py::test_suite_ner_and_classification",
    "test_compress_torch.py::test_suite_runs_and_skips",
    "test_distill.py::test_sequence_students_share_one_teacher_pass",
    "test_distill.py::test_the_four_methods_run_as_suite_cells",
    "test_distill.py::test_token_classification",
    "test_faults.py::test_fixed_latency_length_works_for_every_builtin_compression",
    "test_faults.py::test_kill_9_of_the_driver_leaves_no_worker",
    "test_faults.py::test_resume_after_a_torn_line_leaves_one_set_of_rows",
    "test_faults.py::test_sigterm_keeps_rows_and_stops_workers",
    "test_faults.py::test_worker_death_does_not_lose_another_workers_result",
    "test_faults_round3.py::test_two_runs_into_one_folder_lose_no_rows",
    "test_faults_round3.py::test_a_full_disk_is_one_line_and_the_finished_cells_are_kept",
    "test_faults_round3.py::test_a_kill_while_rows_are_recorded_leaves_whole_cells",
    "test_faults_round3.py::test_rows_without_a_required_key_and_duplicates_are_dropped_with_a_warning",
    "test_faults_round3.py::test_compare_refuses_a_recorded_change_its_predictions_do_not_show",
    "test_finetune.py::test_micro_batches_give_the_whole_batch_gradient",
    "test_finetune.py::test_schedule_warmup_decay_and_accumulation",
    "test_metrics.py::test_iob1_files_and_their_iob2_conversion_score_identically",
    "test_ner.py::test_reads_iob1_and_iob2_and_wnut_layouts_alike",
    "test_ner.py::test_trained_checkpoint_is_used_as_is_and_mismatch_is_an_error",
    "test_prune.py::test_recovery_with_the_builtin_classification_task",
    "test_report.py::test_cli_report",
    "test_runner.py::test_cache_hit_on_rerun_and_force",
    "test_runner.py::test_kill_9_then_resume",
    "test_runner.py::test_one_worker_per_device_pinned_with_cuda_visible_devices",
    "test_share_layers.py::test_recovery_keeps_the_layers_tied",
}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip cleanly (with the reason) where CUDA is not available; the
    tests listed above are marked ``slow``."""
    for item in items:
        module = item.path.name
        if module in SLOW_MODULES or f"{module}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture
def ctx(tmp_path: Path):
    """A CPU CellContext, seed 0, cache under ``tmp_path/cache``, no progress bars."""
    from harness.api import CellContext

    return CellContext(device="cpu", seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path,
                       show_progress=False)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
