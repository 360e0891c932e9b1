"""Which tests go to a pytest-xdist worker together ("units"), and in which order, as tests/conftest.py
schedules them.

The projects that many tests share are built once per run, whichever worker asks first
(binsight/testing/shared.py), so tests need not share a worker to share one. A module is a unit: its
module-scoped fixtures (a started server, say) are set up once. Each test of the modules in
`SPLIT_BY_TEST` is a unit of its own: independent tests of half a minute to two minutes each, which
balance the workers better one by one.

The longest units go first (`LONGEST_FIRST`, as measured on 2 cores), so that no worker starts a long
one while the others are about to finish. The first two need different shared projects, so that on
two workers neither waits for the other's build. The list only orders: a unit missing from it runs
after those in it, in the order pytest collected it.
"""
SPLIT_BY_TEST = ("tests/test_tune.py", "tests/test_featurize.py", "tests/test_train.py", "tests/test_losses.py")

LONGEST_FIRST = (
    "tests/test_tune.py::test_two_workers_then_a_second_machine_share_one_study_and_the_best_is_applied",  # frozen
    "tests/test_predict_cli.py",  # trained
    "tests/test_queue.py",
    "tests/test_fetch_pipeline.py",
    "tests/test_tune.py::test_the_pruner_stops_a_trial_whose_lr_makes_it_diverge",
    "tests/test_pipeline.py",
    "tests/test_tune.py::test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_the_rest_complete",
    "tests/test_remote.py",
    "tests/test_report.py",
    "tests/test_train.py::test_a_killed_and_resumed_run_ends_where_an_uninterrupted_one_does",
    "tests/test_explore.py",
    "tests/test_distributed.py",
    "tests/test_featurize.py::test_head_only_checkpoint_every_n_epochs_resumes_to_the_uninterrupted_result",
    "tests/test_serve.py",
    "tests/test_local_fetch.py",
    "tests/test_featurize.py::test_head_on_cached_embeddings_matches_the_image_path",
    "tests/test_startup.py",
    "tests/test_tune.py::test_a_storage_that_cannot_be_opened_is_a_one_line_error",
    "tests/test_losses.py::test_each_loss_fits_generated_bins_better_than_chance",  # each of its four losses
    "tests/test_losses.py::test_metadata_targets_fit_generated_bins_better_than_chance",
    "tests/test_serve_security.py",
    "tests/test_inference.py",
    "tests/test_bench.py",
    "tests/test_progress.py",
    "tests/test_train.py::test_diverging_loss_stops_with_epoch_and_lr",
)


def unit_of(nodeid):
    """The unit of test `nodeid` ("tests/test_x.py::test_y[...]"): its module, or itself in the
    modules of `SPLIT_BY_TEST`."""
    module = nodeid.split("::", 1)[0]
    return nodeid if module in SPLIT_BY_TEST else module


def unit_rank(nodeid):
    """Sort key: the place of the test's unit in `LONGEST_FIRST` (an entry names a module, a test, or
    a test with every parameter), after all of them if it is not there."""
    for rank, entry in enumerate(LONGEST_FIRST):
        if nodeid == entry or nodeid.startswith((entry + "::", entry + "[")):
            return rank
    return len(LONGEST_FIRST)
