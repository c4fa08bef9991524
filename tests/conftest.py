import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def pytest_addoption(parser):
    parser.addoption("--ci-recipe-output", default=None,
                     help="folder of a finished `train_default --recipe ci` run to check (tests/synthetic/"
                          "test_ci_recipe.py); without it those tests run the recipe themselves")
